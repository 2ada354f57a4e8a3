"""The training loop: label-smoothed cross-entropy, AdamW, warmup + inverse square root,
one autocast code path for fp32/bf16/fp16, gradient accumulation and clipping, validation
with loss and BLEU, atomic checkpoints, exact resume, DistributedDataParallel.

Every optimiser step sees `update_freq` batches per rank; the loss is normalised by the number
of target tokens of the whole step (all batches, all ranks), so K ranks give the gradient one
process would with the same global batch.
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mtkit import checkpoint as ckpt
from mtkit import config as C
from mtkit.batching import Batch, BatchIterator
from mtkit.data import EncodedCorpus, prepare_corpus, source_from_paths
from mtkit.errors import UserError
from mtkit.loss import LabelSmoothedObjective
from mtkit.metrics_log import MetricsLog
from mtkit.model import Transformer, count_parameters
from mtkit.rundir import TrainJob, check_inputs, prepare_model_dir, write_manifest
from mtkit.runtime import (
    Dist,
    Precision,
    all_reduce,
    autocast,
    barrier,
    init_distributed,
    ranks_in_sync,
    resolve_device,
    resolve_precision,
    rng_state,
    set_rng_state,
    stop_on_signals,
)
from mtkit.textio import read_lines
from mtkit.tokenizer import PAD_ID, Tokenizer
from mtkit.validation import validate

Events = Callable[[dict], None]


class TrainingDiverged(UserError):
    """Too many consecutive non-finite losses."""


def lr_at(step: int, peak: float, warmup: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then peak * sqrt(warmup / step)."""
    if step < warmup:
        return peak * step / warmup
    return peak * math.sqrt(max(warmup, 1) / max(step, 1))


@dataclass
class Progress:
    """Counters that a checkpoint carries (with the data position and every RNG)."""

    step: int = 0
    best_bleu: float = -1.0
    bad_validations: int = 0
    skipped_steps: int = 0  # updates not applied: fp16 overflows and non-finite losses
    nonfinite_streak: int = 0  # consecutive non-finite losses
    elapsed: float = 0.0  # training seconds before this process


# ----------------------------------------------------------------------------- state
@dataclass
class Trainer:
    job: TrainJob
    model: Transformer  # the plain module: what checkpoints save
    step_model: nn.Module  # the model's training objective, as the steps run it (compiled and/or DDP-wrapped)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: BatchIterator
    tokenizer: Tokenizer
    device: torch.device
    precision: Precision
    dist: Dist
    on_event: Events
    valid: tuple[EncodedCorpus, list[str], list[str]] | None = None
    progress: Progress = field(default_factory=Progress)
    log: MetricsLog | None = None
    stop_signal: int = 0

    @property
    def cfg(self) -> C.RunConfig:
        return self.job.cfg

    # ------------------------------------------------------------- checkpoints
    def save(self) -> None:
        """last.pt (everything needed to resume) and step_N.pt (weights); rank 0 only."""
        if not self.dist.main:
            return
        weights = self.model.state_dict()
        base = {"config": C.to_dict(self.cfg), "step": self.progress.step}
        d = ckpt.checkpoint_dir(self.job.model_dir)
        ckpt.save(d / "last.pt", {
            **base, "model": weights, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "rng": rng_state(), "data": self.batches.state(), "progress": vars(self.progress),
        })
        ckpt.save(d / f"step_{self.progress.step:08d}.pt", {**base, "model": weights})  # after last.pt
        ckpt.prune(self.job.model_dir, self.cfg.train.keep_last)

    def resume(self) -> bool:
        path = ckpt.checkpoint_dir(self.job.model_dir) / "last.pt"
        if not path.is_file():
            return False
        state = ckpt.load(path, map_location="cpu")
        for key in ("optimizer", "scaler", "rng", "data", "progress"):
            if key not in state:
                raise UserError(f"{path}: not a resumable checkpoint ({key} is missing)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.batches.load_state(state["data"])
        self.progress = Progress(**state["progress"])
        self.on_event({"kind": "info", "message": f"resumed from {path} at step {self.progress.step}"})
        return True

    # ------------------------------------------------------------- one step
    def _forward_loss(self, batch: Batch, scale: float) -> tuple[float, float]:
        with autocast(self.device.type, self.precision.dtype):
            loss, nll = self.step_model(batch.src, batch.tgt_in, batch.tgt_out)
        self.scaler.scale(loss * scale).backward()
        return loss.item(), nll.item()

    def train_step(self, group: list[Batch]) -> dict:
        """One optimiser update over a group of batches; returns the step's statistics."""
        t = self.cfg.train
        tokens = all_reduce(sum(b.n_tgt_tokens for b in group), self.dist, self.device)
        lr = lr_at(self.progress.step + 1, t.lr, t.warmup)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss_sum = nll_sum = 0.0
        for i, batch in enumerate(group):
            sync = i == len(group) - 1 or self.dist.world == 1
            ctx = cast(Any, self.step_model).no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                loss, nll = self._forward_loss(batch.to(self.device), self.dist.world / tokens)
            loss_sum, nll_sum = loss_sum + loss, nll_sum + nll
        finite = all_reduce(0.0 if math.isfinite(loss_sum) else 1.0, self.dist, self.device, "max") == 0.0
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm if t.clip_norm > 0 else float("inf"))
        applied = self._apply(finite and math.isfinite(float(grad_norm)))
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = all_reduce(loss_sum, self.dist, self.device)
        nll_sum = all_reduce(nll_sum, self.dist, self.device)
        return {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "tokens": tokens, "lr": lr,
                "grad_norm": float(grad_norm), "applied": applied, "finite": finite}

    def _apply(self, finite: bool) -> bool:
        """Optimiser step unless the gradients are not finite; True if parameters changed."""
        if self.precision.scaled:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skips the update itself on inf/nan gradients
            self.scaler.update()
            return self.scaler.get_scale() >= scale and finite
        if finite:
            self.optimizer.step()
        return finite

    def validate(self) -> dict:
        corpus, src_lines, refs = self.valid  # type: ignore[misc]
        return validate(self.model, self.tokenizer, corpus, src_lines, refs, self.cfg, self.device,
                        self.precision, self.job.model_dir / "valid_output.txt")


# ----------------------------------------------------------------------------- the loop
def _stop_reason(tr: Trainer, elapsed: float) -> str | None:
    t, p = tr.cfg.train, tr.progress
    if t.max_steps and p.step >= t.max_steps:
        return "max_steps"
    if t.max_epochs and tr.batches.epoch > t.max_epochs:
        return "max_epochs"
    if t.max_time and elapsed >= t.max_time:
        return "max_time"
    if t.patience and p.bad_validations >= t.patience:
        return "patience"
    return None


def _validate_and_keep_best(tr: Trainer, elapsed: float) -> None:
    if tr.valid is None or not tr.dist.main:
        return
    result = tr.validate()
    p = tr.progress
    improved = result["bleu"] > p.best_bleu
    if improved:
        p.best_bleu, p.bad_validations = result["bleu"], 0
        ckpt.save(ckpt.checkpoint_dir(tr.job.model_dir) / "best.pt",
                  {"config": C.to_dict(tr.cfg), "step": p.step, "model": tr.model.state_dict(), "bleu": result["bleu"]})
    else:
        p.bad_validations += 1
    event = {"kind": "valid", "step": p.step, "epoch": tr.batches.epoch, "elapsed": elapsed,
             "best_bleu": p.best_bleu, "improved": improved, **result}
    tr.log.write(event)  # type: ignore[union-attr]
    tr.on_event(event)


def _sync_progress(tr: Trainer) -> None:
    """Rank 0 decides early stopping: share its counters with the other ranks."""
    if tr.dist.world > 1:
        import torch.distributed as dist

        box: list[Any] = [tr.progress.bad_validations, tr.progress.best_bleu]
        dist.broadcast_object_list(box, src=0)
        tr.progress.bad_validations, tr.progress.best_bleu = box


def _check_finite(tr: Trainer, stats: dict) -> None:
    p = tr.progress
    if not stats["applied"]:
        p.skipped_steps += 1
    p.nonfinite_streak = 0 if stats["finite"] else p.nonfinite_streak + 1
    if p.nonfinite_streak >= tr.cfg.train.max_nonfinite:
        last = ckpt.checkpoint_dir(tr.job.model_dir) / "last.pt"
        raise TrainingDiverged(
            f"stopping at step {p.step}: {p.nonfinite_streak} consecutive non-finite losses "
            f"(last good checkpoint: {last if last.exists() else 'none yet'}); "
            "lower --lr, raise --warmup or use --precision bf16/fp32"
        )


def _next_group(tr: Trainer, it) -> list[Batch]:
    return [next(it) for _ in range(tr.cfg.train.update_freq)]


def _run_step(tr: Trainer, group: list[Batch]) -> dict:
    try:
        return tr.train_step(group)
    except torch.OutOfMemoryError:
        biggest = max(group, key=lambda b: b.src.numel() + b.tgt_in.numel())
        raise UserError(
            f"out of memory on a batch of {biggest.src.size(0)} sentences (source length {biggest.src.size(1)}, "
            f"target length {biggest.tgt_in.size(1)}); lower --max-tokens (now {tr.cfg.data.max_tokens}) "
            "and raise --update-freq to keep the batch size"
        ) from None


def run(tr: Trainer) -> dict:
    """Train until a stop condition; returns a summary."""
    t, p = tr.cfg.train, tr.progress
    started = time.monotonic() - p.elapsed
    it = iter(tr.batches)
    window = {"tokens": 0.0, "loss": 0.0, "nll": 0.0, "since": time.monotonic()}
    reason = _stop_reason(tr, p.elapsed)
    validated_at = -1
    while reason is None:
        stats = _run_step(tr, _next_group(tr, it))
        p.step += 1
        _check_finite(tr, stats)
        for key in ("loss", "nll"):
            window[key] += stats[key] * stats["tokens"] if math.isfinite(stats[key]) else 0.0
        window["tokens"] += stats["tokens"]
        p.elapsed = time.monotonic() - started
        if p.step % t.log_every == 0 and tr.dist.main:
            _log_train(tr, window, stats)
        if t.valid_every and p.step % t.valid_every == 0:
            _validate_and_keep_best(tr, p.elapsed)
            _sync_progress(tr)
            validated_at = p.step
        reason = _stop_reason(tr, p.elapsed)
        if all_reduce(float(tr.stop_signal), tr.dist, tr.device, "max"):
            reason = "signal"
        if reason or (t.save_every and p.step % t.save_every == 0) or validated_at == p.step:
            if reason and reason != "signal" and validated_at != p.step:
                _validate_and_keep_best(tr, p.elapsed)
            tr.save()
    return {"reason": reason, "step": p.step, "epoch": tr.batches.epoch, "elapsed": p.elapsed,
            "best_bleu": p.best_bleu if tr.valid else None, "skipped_steps": p.skipped_steps,
            "oversized_pairs": tr.batches.oversized}


def _log_train(tr: Trainer, window: dict, stats: dict) -> None:
    now = time.monotonic()
    tokens = max(window["tokens"], 1.0)
    t = tr.cfg.train
    event = {
        "kind": "train", "step": tr.progress.step, "epoch": tr.batches.epoch,
        "loss": window["loss"] / tokens, "nll": window["nll"] / tokens,
        "ppl": math.exp(min(window["nll"] / tokens, 50)), "lr": stats["lr"],
        "tgt_tokens_per_s": window["tokens"] / max(now - window["since"], 1e-9),
        "elapsed": tr.progress.elapsed, "max_steps": t.max_steps, "max_time": t.max_time,
        "skipped_steps": tr.progress.skipped_steps,
    }
    tr.log.write(event)  # type: ignore[union-attr]
    tr.on_event(event)
    window.update(tokens=0.0, loss=0.0, nll=0.0, since=now)


# ----------------------------------------------------------------------------- setting up
def _load_valid(job: TrainJob, tok: Tokenizer, cache: Path) -> tuple[EncodedCorpus, list[str], list[str]] | None:
    if job.valid_src is None or job.valid_tgt is None:
        return None
    src_lines, refs = read_lines(job.valid_src), read_lines(job.valid_tgt)
    if len(src_lines) != len(refs):
        raise UserError(f"{job.valid_src} has {len(src_lines)} lines but {job.valid_tgt} has {len(refs)}")
    data_cfg = C.DataConfig(**{**vars(job.cfg.data), "max_ratio": 0.0, "dedup": False})
    corpus = prepare_corpus(source_from_paths(job.valid_src, job.valid_tgt), tok, data_cfg, cache)
    return corpus, src_lines, refs


def _setup_data(job: TrainJob, d: Dist, on_event: Events):
    """Rank 0 prepares tokenizer and caches first; the other ranks then reuse them."""
    if not d.main:
        barrier(d)
        job.overwrite = False
    tok = prepare_model_dir(job, on_event)
    cache = job.cache_dir or job.model_dir / "cache"
    source = source_from_paths(job.train_src, job.train_tgt)
    corpus = prepare_corpus(source, tok, job.cfg.data, cache)
    valid = _load_valid(job, tok, cache)
    if d.main:
        r = corpus.report
        on_event({"kind": "data", "read": r.read, "kept": r.kept, "removed": r.removed()})
        write_manifest(job, tok, source.identity(), None)
        barrier(d)
    return tok, corpus, valid, source


def build(job: TrainJob, d: Dist, device: torch.device, on_event: Events) -> Trainer:
    t = job.cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tok, corpus, valid, source = _setup_data(job, d, on_event)
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    model = Transformer(job.cfg.model).to(device)
    torch.manual_seed(t.seed + d.rank)  # dropout differs per rank; weights are rank 0's (DDP broadcasts)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=t.lr, betas=t.betas, fused=True)
    precision = resolve_precision(t.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaled)
    objective = LabelSmoothedObjective(model, t.label_smoothing, PAD_ID)
    step_model: Any = torch.compile(objective) if t.compile else objective
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    batches = BatchIterator(corpus, job.cfg.data.max_tokens, job.cfg.data.seed, rank=d.rank, world_size=d.world)
    tr = Trainer(job, model, step_model, optimizer, scaler, batches, tok, device, precision, d, on_event, valid)
    tr.log = MetricsLog(job.model_dir / "metrics.jsonl", enabled=d.main)
    tr.resume()
    model.train()
    on_event({"kind": "start", "parameters": count_parameters(model), "device": str(device),
              "precision": precision.name, "world_size": d.world, "step": tr.progress.step,
              "pairs": len(corpus), "model_dir": str(job.model_dir)})
    return tr


def train(job: TrainJob, on_event: Events) -> dict:
    """`mtkit train`: set up (or resume) the model directory and train it."""
    check_inputs(job)
    d = init_distributed(job.cfg.train.device)
    device = resolve_device(job.cfg.train.device, d.local_rank)
    created = not job.model_dir.exists()
    box: list[Trainer] = []
    try:
        with stop_on_signals(box):
            try:
                box.append(build(job, d, device, on_event))
            except BaseException:
                if created and d.main and not ckpt.checkpoint_dir(job.model_dir).exists():
                    shutil.rmtree(job.model_dir, ignore_errors=True)
                raise
            summary = run(box[0])
            summary["ranks_in_sync"] = ranks_in_sync(box[0].model, box[0].dist)
            if box[0].log is not None:
                box[0].log.write({"kind": "done", **summary})
            if summary["reason"] == "signal":
                summary["signal"] = box[0].stop_signal
            on_event({"kind": "done", **summary})
            return summary
    finally:
        if d.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
