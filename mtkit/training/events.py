"""What training reports, as typed events: the trainer emits them (`on_event(event)`), the
command line renders them (mtkit.cli.render.TrainRenderer), and metrics.jsonl records some of
them (`record(event)`: {"kind": ..., **fields}, one JSON object per line).

    Info, Warn     a message (a warning is shown even with --quiet)
    DataReport     the corpus: pairs read and kept, and what each cleaning rule removed
    Start          the model, device, precision and processes of a run, and its first step
    TrainStats     every log_every updates: loss, perplexity, learning rate, speed     (logged)
    Validation     after each validation: loss, BLEU, chrF, the best score so far      (logged)
    Done           why and where training stopped: also what `train()` returns         (logged)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Info:
    kind: ClassVar[str] = "info"
    message: str


@dataclass(frozen=True)
class Warn:
    kind: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class DataReport:
    kind: ClassVar[str] = "data"
    read: int  # pairs read
    kept: int  # pairs that survived cleaning
    removed: dict[str, int]  # rule -> pairs it removed
    corpora: tuple[CorpusReport, ...] = ()  # each corpus, when there are several or any is weighted or tagged


@dataclass(frozen=True)
class Preparing:
    """Progress of preparing a corpus (encoding its text)."""

    kind: ClassVar[str] = "preparing"
    corpus: str
    pairs: int  # read so far
    fraction: float | None = None  # the share of its text read (None: unknown)


@dataclass(frozen=True)
class CorpusReport:
    name: str
    read: int
    kept: int
    removed: dict[str, int]
    weight: float
    tag: str
    per_epoch: int  # pairs an epoch draws from it


@dataclass(frozen=True)
class Start:
    kind: ClassVar[str] = "start"
    parameters: int
    device: str
    precision: str  # fp32, bf16 or fp16
    world_size: int  # processes
    step: int  # the first update's number minus one (0, or where a resumed run continues)
    pairs: int  # in the training corpus
    model_dir: str


@dataclass(frozen=True)
class TrainStats:
    kind: ClassVar[str] = "train"
    step: int
    epoch: int
    loss: float  # label-smoothed, per target token, since the last TrainStats
    nll: float  # negative log-likelihood per target token
    ppl: float  # exp(nll)
    lr: float
    tgt_tokens_per_s: float  # all processes together
    tgt_tokens_per_update: float  # all processes together, the mean since the last TrainStats (fairseq's wpb)
    fill: float  # the mean share of --max-tokens a batch used (sentences x longest padded side / budget)
    elapsed: float  # training seconds, over every resume
    max_steps: int
    max_time: float
    skipped_steps: int  # updates not applied so far (fp16 overflows, non-finite losses)


@dataclass(frozen=True)
class ValidationResult:
    """What one validation measured (mtkit.training.validation.validate)."""

    valid_loss: float  # label-smoothed, per target token
    valid_nll: float
    valid_ppl: float
    bleu: float
    bleu_signature: str
    chrf: float
    chrf_signature: str
    valid_sentences: int  # translated (train.valid_max_sentences)


@dataclass(frozen=True)
class Validation(ValidationResult):
    kind: ClassVar[str] = "valid"
    step: int
    epoch: int
    elapsed: float
    best_metric: str  # bleu or chrf
    best_score: float  # of best_metric, the best so far
    improved: bool  # this validation made best.pt


@dataclass(frozen=True)
class Done:
    kind: ClassVar[str] = "done"
    reason: str  # max_steps, max_epochs, max_time, patience or signal
    step: int
    epoch: int
    elapsed: float
    best_metric: str
    best_score: float | None  # None without a validation set
    skipped_steps: int
    oversized_pairs: int  # pairs longer than the batch budget, never trained on
    ranks_in_sync: bool = True  # every process ended with the same parameters
    signal: int = 0  # the signal that stopped it (reason "signal")


Event = Info | Warn | Preparing | DataReport | Start | TrainStats | Validation | Done
OnEvent = Callable[[Event], None]


def record(event: Event) -> dict[str, Any]:
    """The event as metrics.jsonl holds it."""
    return {"kind": event.kind, **asdict(event)}
