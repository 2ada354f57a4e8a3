"""Every setting of mtkit in typed dataclasses, the model presets and their checks (reading and
writing them, and the command line's overrides: mtkit.config_io).

Defaults live here and nowhere else. Standard library only.
"""

from __future__ import annotations

import functools
import math
import re
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from mtkit.errors import UserError


class ConfigError(UserError):
    """An invalid setting. `key` is its config name (`train.lr`); the CLI shows the name the user
    typed instead (`--lr`, `--set train.lr`, the config file's line) with `relabel`."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}")
        self.key, self.problem = key, problem

    def relabel(self, labels: dict[str, str]) -> UserError:
        return UserError(f"{labels.get(self.key, self.key)} {self.problem}")

def setting(default: Any, help: str = "", flag: str | None = None) -> Any:
    """A config field: its default, and the one line of help that `--help` and docs/cli.md show
    for it; `flag` names a yes/no option's two forms when --NAME/--no-NAME would read badly."""
    return field(default=default, metadata={"help": help, "flag": flag})




@dataclass
class ModelConfig:
    """The Transformer. Sizes of "Attention Is All You Need" for base/big; see PRESETS."""

    src_vocab_size: int = setting(8000, "set from the tokenizer at training time")
    tgt_vocab_size: int = setting(8000, "set from the tokenizer at training time")
    d_model: int = setting(256, "width of every residual stream")
    n_heads: int = setting(4, "attention heads (d_model must divide evenly)")
    d_ff: int = setting(1024, "hidden width of the position-wise feed-forward")
    n_enc_layers: int = setting(3, "encoder layers")
    n_dec_layers: int = setting(3, "decoder layers")
    dropout: float = setting(0.1, "on embeddings, sub-layer outputs and in the feed-forward")
    attn_dropout: float = setting(0.0, "on attention probabilities")
    activation_dropout: float = setting(0.0, "inside the feed-forward, after the activation (fairseq's default)")
    activation: Literal["relu", "gelu"] = setting("relu", "of the feed-forward")
    norm: Literal["pre", "post"] = setting("pre", "pre-norm (stable) or post-norm (the original paper)")
    positions: Literal["sinusoidal", "learned"] = setting("sinusoidal", "position embeddings: fixed or trained")
    max_positions: int = setting(1024, "longest sequence the position table covers")
    share_embeddings: bool = setting(True, "one embedding for source and target (needs a joint vocabulary)")
    tie_output: bool = setting(True, "output projection shares the target embedding matrix")

    def approx_parameters(self) -> int:
        """The parameter count to within biases and norms (for a size check before any allocation)."""
        d, f = self.d_model, self.d_ff
        embeddings = d * self.src_vocab_size + (0 if self.share_embeddings else d * self.tgt_vocab_size)
        output = 0 if self.tie_output else d * self.tgt_vocab_size
        positions = 2 * d * self.max_positions if self.positions == "learned" else 0
        return (embeddings + output + positions + self.n_enc_layers * (4 * d * d + 2 * d * f)
                + self.n_dec_layers * (8 * d * d + 2 * d * f))

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "d_model", "n_heads", "d_ff", "n_enc_layers", "n_dec_layers", "src_vocab_size",
                        "tgt_vocab_size")
        if self.d_model % self.n_heads:
            raise ConfigError("model.d_model", f"({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError("model.share_embeddings", "needs one joint vocabulary (source and target sizes differ)")
        if self.max_positions < 2:
            raise ConfigError("model.max_positions", f"must be at least 2 (bos or eos and one token), got {self.max_positions}")
        _check_range(self, "dropout", 0.0, 1.0)
        _check_range(self, "attn_dropout", 0.0, 1.0)
        _check_range(self, "activation_dropout", 0.0, 1.0)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=32, n_heads=2, d_ff=64, n_enc_layers=1, n_dec_layers=1, dropout=0.0),
    "multi30k": dict(d_model=128, n_heads=4, d_ff=256, n_enc_layers=4, n_dec_layers=4, dropout=0.3),
    "small": dict(d_model=256, n_heads=4, d_ff=1024, n_enc_layers=3, n_dec_layers=3, dropout=0.1),
    "base": dict(d_model=512, n_heads=8, d_ff=2048, n_enc_layers=6, n_dec_layers=6, dropout=0.1),
    "big": dict(d_model=1024, n_heads=16, d_ff=4096, n_enc_layers=6, n_dec_layers=6, dropout=0.3),
    # students for fast CPU translation (recipes/distill.sh): the encoder runs once per sentence, the
    # decoder once per token, so layers move from the decoder to the encoder (Kasai et al., 2021);
    # chosen by measurement on Multi30k (docs/benchmarks.md, Students)
    "student": dict(d_model=128, n_heads=4, d_ff=256, n_enc_layers=6, n_dec_layers=2, dropout=0.1),
    "student-tiny": dict(d_model=64, n_heads=4, d_ff=256, n_enc_layers=6, n_dec_layers=1, dropout=0.1),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError("preset", f"{name!r} is unknown (choose from {', '.join(PRESETS)})")
    return ModelConfig(**{**PRESETS[name], **overrides})


# Decoding's batch budget (source tokens x beam) when DecodeConfig.max_tokens is 0: on a GPU a few
# large batches keep it busy (1,000 Multi30k sentences at beam 5 are two batches); on a CPU smaller
# batches waste less work on finished sentences.
AUTO_MAX_TOKENS = {"cpu": 8000, "cuda": 65536}


CORPUS_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_PROCESSES = 1024  # data.num_proc: more is a typo (it is capped at the usable CPUs anyway)
MAX_EPOCH_PAIRS = 1 << 31  # pairs an epoch may draw, weights included (ordering them takes ~40 bytes each)


RESERVED_PIECES = ("<pad>", "<unk>", "<s>", "</s>")  # SentencePiece's special pieces, mtkit's fixed ids


def check_tag(tag: str, where: str) -> None:
    """A corpus tag (a piece put before each source sentence, e.g. <BT>): printable, no spaces
    (SentencePiece never matches a symbol with a space in it), not a special piece, and marked as a
    tag (not a plain word or number, which would take the place of every occurrence in the text)."""
    if not tag or not tag.isprintable() or any(c.isspace() for c in tag):
        raise UserError(f"{where}: a tag is printable text without spaces, e.g. <BT>")
    if tag in RESERVED_PIECES or re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", tag):
        raise UserError(f"{where}: reserved (one of the tokenizer's special pieces); choose another, e.g. <BT>")
    if tag.isalnum():
        raise UserError(f"{where}: a plain word would replace every {tag!r} in the text; mark it as a tag, "
                        f"e.g. <{tag}> or __{tag}__")


@dataclass
class CorpusSpec:
    """One training corpus: a `[[data.corpora]]` table of a config file. Its text is two files
    (`src`, `tgt`), one TSV/JSONL file (`table`), or a `datasets` hub id (`hub`)."""

    name: str = setting("", "a short name (letters, digits, . _ -): reports and the prepared data use it")
    src: str = setting("", "source text file (with tgt)")
    tgt: str = setting("", "target text file (with src)")
    table: str = setting("", "a TSV (source<TAB>target) or JSONL file, instead of src/tgt")
    hub: str = setting("", "a `datasets` hub id, instead of files")
    hub_config: str = setting("", "the hub dataset's config, e.g. de-en")
    split: str = setting("train", "the hub dataset's split")
    src_key: str = setting("", "field of the source text (JSONL: default src; hub: e.g. translation.en)")
    tgt_key: str = setting("", "field of the target text (JSONL: default tgt; hub: e.g. translation.de)")
    weight: float = setting(1.0, "times its pairs are drawn per epoch; a fraction draws that share of them")
    tag: str = setting("", "a token put before every source sentence (e.g. <BT>); one piece of the tokenizer")

    def validate(self, where: str) -> None:
        if not CORPUS_NAME_RE.fullmatch(self.name):
            raise UserError(f"{where} name: {self.name!r} is not a name (1-64 letters, digits, . _ -, "
                            "starting with a letter or digit)")
        kinds = [k for k, given in (("src/tgt", self.src or self.tgt), ("table", self.table), ("hub", self.hub)) if given]
        if len(kinds) != 1:
            raise UserError(f"{where}: give exactly one of src + tgt, table, or hub (got {' + '.join(kinds) or 'none'})")
        if kinds == ["src/tgt"] and not (self.src and self.tgt):
            raise UserError(f"{where} {'tgt' if self.src else 'src'}: missing (src and tgt go together)")
        if kinds == ["hub"] and not (self.src_key and self.tgt_key):
            raise UserError(f"{where}: a hub corpus needs src_key and tgt_key (e.g. translation.en)")
        if not (math.isfinite(self.weight) and 0 < self.weight <= MAX_EPOCH_PAIRS):
            raise UserError(f"{where} weight: must be a positive number, at most {MAX_EPOCH_PAIRS:,} (the pairs "
                            f"an epoch may draw), got {self.weight:g}")
        if self.tag:
            check_tag(self.tag, f"{where} tag {self.tag!r}")


@dataclass
class DataConfig:
    """Reading, cleaning and batching a parallel corpus."""

    max_tokens: int = setting(4096, "training's batch budget: sentences x the longest padded side (decoding's "
                                    "--max-tokens counts source tokens x beam instead)")
    max_len: int = setting(250, "drop pairs longer than this many tokens on either side")
    max_ratio: float = setting(3.0, "drop pairs whose token-length ratio exceeds this (0 disables)")
    dedup: bool = setting(False, "drop exact duplicate pairs")
    num_proc: int = setting(0, "processes that encode the corpus (0: every CPU this process may use)")
    seed: int = setting(1, "batch order is shuffled per epoch from this seed")
    corpora: list[CorpusSpec] = field(default_factory=list, metadata={"help": "the training corpora, as "
                                      "[[data.corpora]] tables of a config file"})

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "max_tokens", "max_len")
        _check_non_negative(self, "max_ratio", "num_proc")
        if self.num_proc > MAX_PROCESSES:
            raise ConfigError("data.num_proc", f"must be at most {MAX_PROCESSES:,} (0: one per CPU), got {self.num_proc:,}")


@dataclass
class TrainConfig:
    """The optimisation loop."""

    lr: float = setting(5e-4, "peak learning rate, reached after warmup")
    warmup: int = setting(4000, "linear warmup steps, then the schedule's decay")
    schedule: Literal["inverse_sqrt", "linear"] = setting("inverse_sqrt", "linear decays to 0 at the end of max_steps/max_time")
    betas: tuple[float, float] = setting((0.9, 0.98), "AdamW's beta1, beta2")
    weight_decay: float = setting(0.0, "AdamW's decoupled weight decay")
    label_smoothing: float = setting(0.1, "probability mass spread over the vocabulary in the target")
    clip_norm: float = setting(1.0, "largest gradient norm, larger ones are scaled down (0 disables)")
    update_freq: int = setting(1, "gradient accumulation: batches per optimiser step")
    max_steps: int = setting(0, "updates to train (0: no limit)")
    max_epochs: int = setting(0, "passes over the corpus (0: no limit)")
    max_time: float = setting(0.0, "seconds of wall time, 0: no limit")
    valid_every: int = setting(1000, "steps between validations (0: only at the end)")
    save_every: int = setting(1000, "steps between checkpoints (0: only at validations and the end)")
    keep_last: int = setting(10, "step checkpoints kept besides last/best")
    patience: int = setting(0, "validations without a better best_metric before stopping (0: never)")
    best_metric: Literal["bleu", "chrf"] = setting("bleu", "validation metric that picks best.pt and drives patience")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting("auto", "auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on CPUs")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    seed: int = setting(1, "random seed of initialisation and dropout (data.seed orders the batches)")
    compile: bool = setting(False, "torch.compile each layer (dynamic shapes): pays on a GPU with large batches")
    log_every: int = setting(50, "steps between progress events")
    valid_max_sentences: int = setting(0, "decode only the first N validation sentences (0: all)")
    max_nonfinite: int = setting(10, "consecutive non-finite losses before giving up")
    threads: int = setting(0, "torch CPU threads (0: torch's default)")

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "lr", "update_freq", "keep_last", "max_nonfinite", "log_every")
        _check_range(self, "label_smoothing", 0.0, 1.0)
        _check_non_negative(self, "warmup", "max_steps", "max_epochs", "max_time", "valid_every", "save_every",
                            "patience", "clip_norm", "weight_decay", "threads", "valid_max_sentences")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError("train.betas", f"must both be in [0, 1), got {self.betas}")
        if self.schedule == "linear" and not (self.max_steps or self.max_time):
            raise ConfigError("train.schedule", "linear decays to 0 at the end of a budget: give --max-steps or --max-time")
        if not DEVICE_RE.fullmatch(self.device):
            raise ConfigError("train.device", f"{self.device!r} is not a device (auto, cpu, cuda or cuda:N)")


@dataclass
class DecodeConfig:
    """Search settings for translate and validation."""

    beam: int = setting(5, "beam size (1: greedy search)")
    length_penalty: float = setting(1.0, "alpha: a hypothesis scores log p / length ** alpha (fairseq --lenpen, "
                                         "Marian --normalize); 0: the raw log-probability")
    max_len_a: float = setting(1.2, "longest output: a * source length + b tokens (this is a)")
    max_len_b: int = setting(10, "longest output: a * source length + b tokens (this is b)")
    nbest: int = setting(1, "hypotheses per sentence (jsonl output lists them)")
    max_tokens: int = setting(0, f"decoding's batch budget: source tokens x beam, or x samples (0: "
                                 f"{AUTO_MAX_TOKENS['cpu']:,} on a CPU, {AUTO_MAX_TOKENS['cuda']:,} on a GPU; "
                                 "training's --max-tokens counts sentences x longest side instead)")
    sampling: bool = setting(False, "sample each token instead of searching (back-translation); --nbest N gives N samples")
    topk: int = setting(0, "sampling: from the k most probable tokens only (0: all)")
    topp: float = setting(1.0, "sampling: from the most probable tokens whose probability reaches p (nucleus)")
    temperature: float = setting(1.0, "sampling: divides the log-probabilities (below 1: closer to greedy)")
    seed: int = setting(0, "sampling: with the sentence's line number, fixes its samples")

    @property
    def rows_per_sentence(self) -> int:
        """Decoder rows a sentence takes: its samples, or its beam (what the batch budget counts)."""
        return self.nbest if self.sampling else self.beam

    def validate(self) -> None:
        _check_finite(self)
        _check_positive(self, "beam", "nbest", "max_len_b", "temperature")
        _check_non_negative(self, "max_len_a", "max_tokens", "topk", "seed")
        if self.seed >= 1 << 64:
            raise ConfigError("decode.seed", f"must be below 2**64, got {self.seed}")
        if not 0.0 < self.topp <= 1.0:
            raise ConfigError("decode.topp", f"must be in (0, 1], got {self.topp}")
        if abs(self.length_penalty) > 10:
            raise ConfigError("decode.length_penalty", f"must be in [-10, 10] (useful values are 0 to 2), got {self.length_penalty}")
        if self.beam > MAX_BEAM:
            raise ConfigError("decode.beam", f"must be at most {MAX_BEAM} (larger beams do not translate better), got {self.beam}")
        if self.nbest > self.beam and not self.sampling:
            raise ConfigError("decode.nbest", f"({self.nbest}) cannot exceed the beam size ({self.beam})")
        if self.sampling and self.nbest > MAX_BEAM:
            raise ConfigError("decode.nbest", f"must be at most {MAX_BEAM} samples, got {self.nbest}")


@dataclass
class TokenizerOptions:
    """A SentencePiece model to train (`mtkit tokenizer train`, or `mtkit train` without --tokenizer)."""

    vocab_size: int = setting(8000, "pieces in the vocabulary (per side with --separate)")
    model_type: str = setting("unigram", "unigram or bpe")
    character_coverage: float = setting(1.0, "share of the characters that get pieces of their own")
    joint: bool = setting(True, "one model for both sides, or one per side", flag="--joint/--separate")
    input_sentence_size: int = setting(2_000_000, "sentences sampled per model (0: all)")
    seed: int = setting(1, "of the sample")
    tags: tuple[str, ...] = setting((), "tokens kept as one piece each (corpus tags such as <BT>)")

    @property
    def byte_fallback(self) -> bool:
        """Unseen characters become UTF-8 byte pieces, so decoding restores them exactly. It takes
        256 vocabulary entries, so it is used only when the vocabulary has room for them."""
        return self.vocab_size >= 1024

    def validate(self) -> None:
        if self.model_type not in ("unigram", "bpe"):
            raise UserError(f"--model-type: expected unigram or bpe, got {self.model_type!r}")
        if self.vocab_size < 8:
            raise UserError(f"--vocab-size must be at least 8, got {self.vocab_size}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise UserError(f"--character-coverage must be in (0, 1], got {self.character_coverage}")
        for tag in self.tags:
            check_tag(tag, f"--tag {tag!r}")


@dataclass
class RunConfig:
    """Everything a training run needs; what a model directory's config.toml holds."""

    preset: str = "small"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(beam=1))  # validation decoding

    def validate(self) -> None:
        for section in (self.model, self.data, self.train, self.decode):
            section.validate()
        if self.data.max_len + 1 > self.model.max_positions:
            raise ConfigError("data.max_len", f"({self.data.max_len}) + 1 for bos/eos exceeds model.max_positions "
                                              f"({self.model.max_positions})")


SECTIONS = ("model", "data", "train", "decode")
MAX_BEAM = 256
DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def validate_labelled(cfg: Any, labels: dict[str, str]) -> None:
    """cfg.validate(), naming each setting as the user wrote it (labels: config key -> name)."""
    try:
        cfg.validate()
    except ConfigError as e:
        raise e.relabel(labels) from None


def _check_positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section_of(obj)}.{name}", f"must be positive, got {getattr(obj, name)}")


def _check_non_negative(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{section_of(obj)}.{name}", f"must be >= 0, got {getattr(obj, name)}")


def _check_range(obj: Any, name: str, low: float, high: float) -> None:
    value = getattr(obj, name)
    if not low <= value < high:
        raise ConfigError(f"{section_of(obj)}.{name}", f"must be in [{low}, {high}), got {value}")


def _check_finite(obj: Any) -> None:
    for f in fields(obj):
        values = getattr(obj, f.name)
        for value in values if isinstance(values, tuple) else (values,):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section_of(obj)}.{f.name}", f"must be a finite number, got {value}")


def section_of(obj: Any) -> str:
    """A config section's name: TrainConfig() -> train."""
    return type(obj).__name__.removesuffix("Config").lower()


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config dataclass (cached)."""
    return typing.get_type_hints(cls)
