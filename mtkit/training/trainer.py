"""The training loop: label-smoothed cross-entropy, AdamW, warmup + inverse square root, one
autocast code path for fp32/bf16/fp16, gradient accumulation and clipping (mtkit.training.update),
validation with loss and BLEU, atomic checkpoints, exact resume, DistributedDataParallel.

The loop asks the device for numbers only at its boundaries (logging, validation, checkpoints):
see mtkit.training.update for why, and `plan` for when.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mtkit import config as C
from mtkit import config_io
from mtkit.data.batching import Batch, BatchIterator
from mtkit.data.corpus import EncodedCorpus
from mtkit.data.tokenizer import PAD_ID, Tokenizer
from mtkit.errors import UserError
from mtkit.model import checkpoint as ckpt
from mtkit.model.loss import LabelSmoothedObjective
from mtkit.model.transformer import Transformer, count_parameters
from mtkit.runtime import (
    Dist,
    StopFlag,
    all_reduce,
    barrier,
    end_distributed,
    gather_objects,
    init_distributed,
    ranks_in_sync,
    resolve_device,
    resolve_precision,
    rng_state,
    set_rng_state,
    stop_on_signals,
)
from mtkit.training.advice import vocabulary_warning, warmup_warning
from mtkit.training.events import (
    Done,
    Info,
    OnEvent,
    Preparing,
    Start,
    TrainStats,
    Validation,
    ValidationResult,
    Warn,
)
from mtkit.training.inputs import check_data_unchanged, load_valid, training_data
from mtkit.training.metrics_log import MetricsLog
from mtkit.training.parent import COPY, initial_weights
from mtkit.training.rundir import (
    ModelDirClaim,
    TrainJob,
    check_inputs,
    fix_vocabulary,
    prepare_model_dir,
    write_manifest,
)
from mtkit.training.update import Updater, learning_rate
from mtkit.training.validation import validate

Valid = tuple[EncodedCorpus, list[str], list[str]]  # the encoded validation corpus, its sources and references


class TrainingDiverged(UserError):
    """Too many consecutive non-finite losses."""


@dataclass
class Counters:
    """Counters that a checkpoint carries (with the data position and every RNG)."""

    step: int = 0
    best_score: float = -1.0  # of train.best_metric
    bad_validations: int = 0
    skipped_steps: int = 0  # updates not applied: fp16 overflows and non-finite losses
    nonfinite_streak: int = 0  # consecutive non-finite losses
    elapsed: float = 0.0  # training seconds before this process
    lr: float = 0.0  # of the last update


# ----------------------------------------------------------------------------- state
@dataclass
class Trainer:
    job: TrainJob
    update: Updater
    batches: BatchIterator
    tokenizer: Tokenizer
    dist: Dist
    on_event: OnEvent
    log: MetricsLog
    stop: StopFlag
    valid: Valid | None = None
    progress: Counters = field(default_factory=Counters)
    on_saved: Callable[[], None] = lambda: None  # after each checkpoint (the claim drops a replaced run)

    @property
    def cfg(self) -> C.RunConfig:
        return self.job.cfg

    @property
    def model(self) -> Transformer:
        return self.update.model  # type: ignore[return-value]

    # ------------------------------------------------------------- checkpoints
    def weights(self) -> dict[str, Any]:
        """What every checkpoint holds: the weights, the config they were trained with, the step."""
        return {"config": config_io.to_dict(self.cfg), "step": self.progress.step, "model": self.model.state_dict()}

    def state_dict(self, rng: list[dict]) -> dict[str, Any]:
        """Everything a resume needs (last.pt): the weights, the optimiser and loss scale, every
        rank's RNG streams (`rng`, gathered by the caller), the data position and the counters."""
        return {**self.weights(), **self.update.state_dict(), "rng": rng, "data": self.batches.state(),
                "progress": vars(self.progress)}

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        for key in ("optimizer", "scaler", "rng", "data", "progress"):
            if key not in state:
                raise UserError(f"{path}: not a resumable checkpoint ({key} is missing)")
        ckpt.load_weights(self.model, state["model"], path)
        if not self.update.load_state_dict(state):
            self.on_event(Info("resumed in fp16 a run saved without a loss scale: starting a new one"))
        self.progress = Counters(**state["progress"])
        self._load_rng(state["rng"])
        self.batches.load_state(state["data"] if not self.job.reset_data else {"epoch": 1, "index": 0})

    def save(self) -> None:
        """last.pt (everything needed to resume) and step_N.pt (weights); written by rank 0, but
        every rank must call it (the RNG streams are gathered from all)."""
        rng = gather_objects(rng_state(), self.dist)
        if not self.dist.main:
            return
        d = self.job.run.checkpoints
        ckpt.save(d / "last.pt", self.state_dict(rng))
        ckpt.save(d / f"step_{self.progress.step:08d}.pt", self.weights())  # after last.pt
        ckpt.prune(self.job.model_dir, self.cfg.train.keep_last)
        self.on_saved()

    def resume(self) -> bool:
        path = self.job.run.checkpoints / "last.pt"
        if not path.is_file():
            return False
        self.load_state_dict(ckpt.load(path, map_location="cpu"), path)
        damaged = self.log.resume_at(self.progress.step)
        if damaged:
            self.on_event(Warn(f"{self.log.path}: {damaged} damaged line(s) dropped"))
        self.on_event(Info(f"resumed from {path} at step {self.progress.step}"
                           + (" (data from its first batch)" if self.job.reset_data else "")))
        return True

    def _load_rng(self, saved: dict | list) -> None:
        """Each rank continues its own RNG streams (dropout differs per rank); with another number
        of ranks, or from a checkpoint that kept one stream, rank r > 0 derives a new one."""
        streams = saved if isinstance(saved, list) else [saved]
        if len(streams) == self.dist.world or self.dist.rank == 0:
            set_rng_state(streams[self.dist.rank if len(streams) == self.dist.world else 0])
        else:
            torch.manual_seed(self.cfg.train.seed + 1_000_003 * self.dist.rank + self.progress.step)

    def validate(self, valid: Valid) -> ValidationResult:
        corpus, src_lines, refs = valid
        return validate(self.model, self.tokenizer, corpus, src_lines, refs, self.cfg, self.update.device,
                        self.update.precision, self.job.run.valid_output)


# ----------------------------------------------------------------------------- the loop's policy
@dataclass(frozen=True)
class Plan:
    """What the loop does after an update besides training."""

    log: bool
    validate: bool
    save: bool

    @property
    def reads(self) -> bool:  # any of them needs the device's statistics
        return self.log or self.validate or self.save


def plan(step: int, t: C.TrainConfig, stopping: str | None) -> Plan:
    """After update `step`: log every log_every steps; validate every valid_every steps and once
    more when stopping (not on a signal, which asks to stop quickly); save every save_every steps,
    after each validation, and when stopping."""
    validate = bool(t.valid_every and step % t.valid_every == 0) or stopping not in (None, "signal")
    save = validate or stopping is not None or bool(t.save_every and step % t.save_every == 0)
    return Plan(log=step % t.log_every == 0, validate=validate, save=save)


def stop_reason(t: C.TrainConfig, p: Counters, epoch: int, signal: int = 0) -> str | None:
    if signal:
        return "signal"
    if t.max_steps and p.step >= t.max_steps:
        return "max_steps"
    if t.max_epochs and epoch > t.max_epochs:
        return "max_epochs"
    if t.max_time and p.elapsed >= t.max_time:
        return "max_time"
    if t.patience and p.bad_validations >= t.patience:
        return "patience"
    return None


# ----------------------------------------------------------------------------- advice
def _budget_warnings(tr: Trainer) -> list[str]:
    """What can be said before training: warmup against --max-steps/--max-epochs; the vocabulary."""
    t, found = tr.cfg.train, []
    if t.max_steps:
        found.append(warmup_warning(t, t.max_steps, f"--max-steps {t.max_steps}"))
    if t.max_epochs:
        per_epoch = len(tr.batches.epoch_batches(1)) / t.update_freq
        found.append(warmup_warning(t, per_epoch * t.max_epochs, f"--max-epochs {t.max_epochs}"))
    corpus = tr.batches.corpus
    given = tr.job.tokenizer_dir is not None or tr.job.data_dir is not None
    found.append(vocabulary_warning(int(corpus.src_lens.sum()) + int(corpus.tgt_lens.sum()), tr.cfg.model, given))
    return [w for w in found if w]


# ----------------------------------------------------------------------------- the loop
def run(tr: Trainer) -> Done:
    """Train until a stop condition; returns why and where it stopped."""
    t, p = tr.cfg.train, tr.progress
    started = time.monotonic() - p.elapsed
    it = iter(tr.batches)
    window = _Window(time.monotonic())
    if tr.dist.main and p.step == 0:
        for message in _budget_warnings(tr):
            tr.on_event(Warn(message))
    time_checked = not t.max_time
    first_step, first_elapsed = p.step, p.elapsed
    reason = stop_reason(t, p, tr.batches.epoch)
    while reason is None:
        group = [next(it) for _ in range(t.update_freq)]
        p.lr = learning_rate(t, p.step + 1, time.monotonic() - started)
        try:
            tr.update(group, p.lr)
        except torch.OutOfMemoryError:
            raise tr.update.out_of_memory(group, tr.cfg.data.max_tokens) from None
        p.step += 1
        p.elapsed = time.monotonic() - started
        window.add(group)
        signal = int(all_reduce(float(tr.stop.signal), tr.dist, tr.update.device, "max"))
        reason = stop_reason(t, p, tr.batches.epoch, signal)
        todo = plan(p.step, t, reason)
        if todo.reads:
            _read_statistics(tr, window, log=todo.log)
            if not time_checked and tr.dist.main and p.step >= 20:  # the speed is known now
                time_checked = True
                updates = (p.step - first_step) / max(p.elapsed - first_elapsed, 1e-9) * (t.max_time - first_elapsed)
                if (late := warmup_warning(t, first_step + updates, f"--max-time {t.max_time:g}")) is not None:
                    tr.on_event(Warn(late + " (estimated from the speed so far)"))
        if todo.validate:
            _validate_and_keep_best(tr)
            reason = reason or stop_reason(t, p, tr.batches.epoch)  # patience
        if todo.save or reason:
            tr.save()
    return Done(reason=reason, step=p.step, epoch=tr.batches.epoch, elapsed=p.elapsed, best_metric=t.best_metric,
                best_score=p.best_score if tr.valid else None, skipped_steps=p.skipped_steps,
                oversized_pairs=tr.batches.oversized)


@dataclass
class _Window:
    """Host-side counts since the last logged event."""

    since: float
    tokens: int = 0  # target tokens of this rank's batches
    updates: int = 0
    batches: int = 0  # of this rank
    cost: int = 0  # what the token budget counted of this rank's batches (Batch.cost)

    def add(self, group: list[Batch]) -> None:
        self.tokens += sum(b.n_tgt_tokens for b in group)
        self.cost += sum(b.cost for b in group)
        self.updates, self.batches = self.updates + 1, self.batches + len(group)

    def restart(self, now: float) -> None:
        self.since, self.tokens, self.updates, self.batches, self.cost = now, 0, 0, 0, 0


def _read_statistics(tr: Trainer, window: _Window, log: bool) -> None:
    """Read the device's sums (the loop's one wait for the device), check for divergence, log."""
    p, t = tr.progress, tr.cfg.train
    totals = tr.update.read_totals()
    p.skipped_steps += int(totals["skipped"])
    p.nonfinite_streak = int(totals["streak"])
    if p.nonfinite_streak >= t.max_nonfinite:
        last = tr.job.run.checkpoints / "last.pt"
        raise TrainingDiverged(
            f"stopping at step {p.step}: {p.nonfinite_streak} consecutive non-finite losses "
            f"(last good checkpoint: {last if last.exists() else 'none yet'}); "
            "lower --lr, raise --warmup or use --precision bf16/fp32")
    if not log or not tr.dist.main:
        return
    now, scored = time.monotonic(), max(totals["tokens"], 1.0)
    event = TrainStats(
        step=p.step, epoch=tr.batches.epoch, loss=totals["loss"] / scored, nll=totals["nll"] / scored,
        ppl=math.exp(min(totals["nll"] / scored, 50)), lr=p.lr,
        tgt_tokens_per_s=window.tokens * tr.dist.world / max(now - window.since, 1e-9),
        tgt_tokens_per_update=window.tokens * tr.dist.world / max(window.updates, 1),
        fill=window.cost / max(window.batches * tr.cfg.data.max_tokens, 1),
        elapsed=p.elapsed, max_steps=t.max_steps, max_time=t.max_time, skipped_steps=p.skipped_steps,
    )
    tr.log.write(event)
    tr.on_event(event)
    window.restart(now)


def _validate_and_keep_best(tr: Trainer) -> None:
    p = tr.progress
    if tr.valid is not None and tr.dist.main:
        result = tr.validate(tr.valid)
        metric = tr.cfg.train.best_metric
        score = getattr(result, metric)
        improved = score > p.best_score
        if improved:
            p.best_score, p.bad_validations = score, 0
            ckpt.save(tr.job.run.checkpoints / "best.pt", {**tr.weights(), "metric": metric, "score": score})
        else:
            p.bad_validations += 1
        event = Validation(step=p.step, epoch=tr.batches.epoch, elapsed=p.elapsed, best_metric=metric,
                           best_score=p.best_score, improved=improved, **vars(result))
        tr.log.write(event)
        tr.on_event(event)
    if tr.dist.world > 1:  # rank 0 decides early stopping: share its counters
        import torch.distributed as dist

        shared: list[Any] = [p.bad_validations, p.best_score]
        dist.broadcast_object_list(shared, src=0)
        p.bad_validations, p.best_score = shared


# ----------------------------------------------------------------------------- setting up
def _setup_data(job: TrainJob, d: Dist, on_event: OnEvent) -> tuple[Tokenizer, EncodedCorpus, Valid | None]:
    """Rank 0 sets up the tokenizer and prepares the data first; the other ranks then map them."""
    if not d.main:
        barrier(d)
    parent = None
    if d.main:
        tok = prepare_model_dir(job, on_event)
        if job.parent is not None and not (job.run.checkpoints / COPY).is_file() and not job.run.has_checkpoint():
            parent = job.parent.copy_into(job.run)  # read once: the run restarts from its copy
            on_event(Info(f"starting from the weights of {job.parent.checkpoint}"))
    else:
        tok = job.run.tokenizer
        fix_vocabulary(job.cfg, tok)
    progress = (lambda name, n, share: on_event(Preparing(name, n, share))) if d.main else None
    data = training_data(job, tok, d.main, progress)
    valid = load_valid(job, tok)
    if d.main:
        check_data_unchanged(job, data)
        on_event(data.report())
        write_manifest(job, tok, data.identity(), parent)
        barrier(d)
    return tok, data.corpus, valid


def check_model_fits(cfg: C.ModelConfig, device: torch.device) -> None:
    """Refuse, before allocating anything, a model whose training state (fp32 weights, gradients
    and AdamW's two moments: 16 bytes a parameter) exceeds the memory of the device it trains on."""
    need = 16 * cfg.approx_parameters()
    if device.type == "cuda":
        have, where = torch.cuda.get_device_properties(device).total_memory, f"{device}"
    else:
        have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    if need > have:
        raise UserError(f"the model has about {cfg.approx_parameters():,} parameters, whose training state needs "
                        f"{need / 2**30:,.1f} GiB, more than {where} ({have / 2**30:,.1f} GiB): choose a smaller "
                        "--preset or smaller model.* settings")


def build(job: TrainJob, d: Dist, device: torch.device, on_event: OnEvent, stop: StopFlag) -> Trainer:
    t = job.cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tok, corpus, valid = _setup_data(job, d, on_event)
    check_model_fits(job.cfg.model, device)
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    model = Transformer(job.cfg.model)
    if (copy := job.run.checkpoints / COPY).is_file():  # a fine-tuning run: the parent's weights (last.pt wins)
        ckpt.load_weights(model, initial_weights(job.run), copy)
    model = model.to(device)
    torch.manual_seed(t.seed + d.rank)  # dropout differs per rank; weights are rank 0's (DDP broadcasts)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=t.betas, fused=True)
    precision = resolve_precision(t.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaled)
    objective: Any = LabelSmoothedObjective(model, t.label_smoothing, PAD_ID, compile=t.compile)
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        objective = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    update = Updater(model, objective, optimizer, scaler, precision, device, d, t)
    batches = BatchIterator(corpus, job.cfg.data.max_tokens, job.cfg.data.seed, rank=d.rank, world_size=d.world,
                            vocab=(tok.src_vocab_size, tok.tgt_vocab_size))
    batches.check()
    log = MetricsLog(job.run.metrics, enabled=d.main)
    tr = Trainer(job, update, batches, tok, d, on_event, log, stop, valid)
    tr.resume()
    model.train()
    on_event(Start(parameters=count_parameters(model), device=str(device), precision=precision.name,
                   world_size=d.world, step=tr.progress.step, pairs=len(corpus), model_dir=str(job.model_dir)))
    return tr


def train(job: TrainJob, on_event: OnEvent) -> Done:
    """`mtkit train`: check everything, set up (or resume) the model directory and train it."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")  # why: mtkit.cli.app.bound_onednn_cache
    d = init_distributed(job.cfg.train.device)
    try:
        job = dataclasses.replace(job, cfg=check_inputs(job, check_model_dir=d.main))
        device = resolve_device(job.cfg.train.device, d.local_rank)
        with stop_on_signals() as stop, ModelDirClaim(job, d.main) as claim:
            tr = build(job, d, device, on_event, stop)
            claim.commit()
            tr.on_saved = claim.drop_replaced
            stop.armed = True
            done = dataclasses.replace(run(tr), ranks_in_sync=ranks_in_sync(tr.model, tr.dist), signal=stop.signal)
            tr.log.write(done)
            on_event(done)
            return done
    finally:
        end_distributed(d)
