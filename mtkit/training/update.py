"""One optimiser update, written so that the host never waits for the device.

On a GPU the host queues work and runs ahead; anything that reads a device value back (`.item()`,
`float(tensor)`, `if tensor:`, `nonzero()`) makes it wait for everything queued, and the GPU then
idles while the host prepares the next step. So an update here reads nothing back: the loss,
token and skipped-update statistics are summed on the device (`Totals`) and read once every
`log_every` steps, at validation and at checkpoints; an update whose loss or gradients are not
finite is skipped on the device itself (fused AdamW's `found_inf`, the mechanism GradScaler uses,
for every precision); the gradient norm is clipped without being read.

Every update sees `update_freq` batches per rank; the loss is normalised by the number of target
tokens of the whole update (all batches, all ranks), so K ranks give the gradient one process
would with the same global batch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from mtkit.config import TrainConfig
from mtkit.data.batching import Batch
from mtkit.errors import UserError
from mtkit.runtime import Dist, Precision, autocast


def lr_at(step: int, peak: float, warmup: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then peak * sqrt(warmup / step)."""
    if step < warmup:
        return peak * step / warmup
    return peak * math.sqrt(max(warmup, 1) / max(step, 1))


def learning_rate(t: TrainConfig, step: int, elapsed: float) -> float:
    """The learning rate of update `step` (1-based) after `elapsed` seconds of training.

    inverse_sqrt: lr_at (the Transformer paper's and fairseq's schedule; it does not depend on
    the budget). linear: warmup, then a straight line from the peak to 0 at the end of the budget,
    max_steps (counted after warmup) or max_time (counted from the start), whichever ends first: in
    a short, fixed budget the last updates anneal instead of stopping at a high rate."""
    if t.schedule == "inverse_sqrt":
        return lr_at(step, t.lr, t.warmup)
    if step < t.warmup:
        return t.lr * step / t.warmup
    by_steps = (step - t.warmup) / max(t.max_steps - t.warmup, 1) if t.max_steps else 0.0
    by_time = elapsed / t.max_time if t.max_time else 0.0
    return t.lr * max(0.0, 1.0 - max(by_steps, by_time))


@dataclass
class Totals:
    """Sums over the updates since the last read, kept on the device."""

    sums: Tensor  # (4,) float64: loss and nll of applied updates, their target tokens, skipped updates
    streak: Tensor  # () consecutive non-finite updates, across reads

    @classmethod
    def zeros(cls, device: torch.device) -> Totals:
        return cls(torch.zeros(4, dtype=torch.float64, device=device), torch.zeros((), dtype=torch.float64, device=device))

    def add(self, loss: Tensor, nll: Tensor, tokens: int | Tensor, nonfinite: Tensor) -> None:
        ok = (~nonfinite).double()
        # where() and not a product: a non-finite loss times 0 would still be NaN
        finite = torch.stack([torch.where(nonfinite, 0.0, loss.double()), torch.where(nonfinite, 0.0, nll.double())])
        self.sums += torch.cat([finite, (ok * tokens).reshape(1), (1 - ok).reshape(1)])
        self.streak.mul_(1 - ok).add_(1 - ok)

    def read(self, dist: Dist) -> dict[str, float]:
        """The sums (loss and nll over all ranks) and the streak; one wait for the device. Resets the sums."""
        sums = self.sums.clone()
        if dist.world > 1:
            import torch.distributed as tdist

            tdist.all_reduce(sums[:2])
        loss, nll, tokens, skipped = sums.tolist()
        self.sums.zero_()
        return {"loss": loss, "nll": nll, "tokens": tokens, "skipped": skipped, "streak": float(self.streak)}


class Updater:
    """Applies one optimiser update from a group of batches (see the module docstring)."""

    def __init__(self, model: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, precision: Precision, device: torch.device, dist: Dist,
                 cfg: TrainConfig):
        self.model = model  # the plain module, whose parameters are updated
        self.objective = objective  # the model's training loss as the steps run it (compiled and/or DDP-wrapped)
        self.optimizer, self.scaler, self.precision = optimizer, scaler, precision
        self.device, self.dist, self.cfg = device, dist, cfg
        self.totals = Totals.zeros(device)

    def __call__(self, group: list[Batch], lr: float) -> None:
        """One update from the batches of `group`, at learning rate `lr`."""
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        tokens = self._tokens(group)
        loss_sum = nll_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(group):
            with self._no_sync_unless(i == len(group) - 1):
                b = batch.to(self.device)
                with autocast(self.device.type, self.precision.dtype):
                    loss, nll = self.objective(b.src, b.tgt_in, b.tgt_out)
                self.scaler.scale(loss * (self.dist.world / tokens)).backward()
            loss_sum, nll_sum = loss_sum + loss.detach(), nll_sum + nll
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.clip_norm if self.cfg.clip_norm > 0 else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        nonfinite = ~(torch.isfinite(loss_sum) & torch.isfinite(grad_norm))
        if self.dist.world > 1:  # every rank skips together
            import torch.distributed as tdist

            flag = nonfinite.float()
            tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
            nonfinite = flag.bool()
        self._step(nonfinite)
        self.optimizer.zero_grad(set_to_none=True)
        self.totals.add(loss_sum, nll_sum, tokens, nonfinite)

    def read_totals(self) -> dict[str, float]:
        """The sums since the last read, over every rank (the loop's one wait for the device)."""
        return self.totals.read(self.dist)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's and the loss scaler's state, for a checkpoint."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Continue from state_dict()'s; returns False when fp16 resumes a run saved without a loss
        scale (bf16 or fp32), which then starts from a fresh scale."""
        self.optimizer.load_state_dict(state["optimizer"])
        if self.precision.scaled and not state["scaler"]:
            return False
        self.scaler.load_state_dict(state["scaler"])
        return True

    def _tokens(self, group: list[Batch]) -> int | Tensor:
        """Target tokens of the whole update: counted on the host (the batches are still there);
        with several ranks summed on the device, without waiting for the sum."""
        local = sum(b.n_tgt_tokens for b in group)
        if self.dist.world == 1:
            return local
        import torch.distributed as tdist

        total = torch.tensor([float(local)]).to(self.device, non_blocking=True)
        tdist.all_reduce(total)
        return total

    def _no_sync_unless(self, last: bool):
        """With DDP, gradients are all-reduced only after the last batch of the group."""
        if last or self.dist.world == 1:
            return contextlib.nullcontext()
        return cast(Any, self.objective).no_sync()

    def _step(self, nonfinite: Tensor) -> None:
        """The optimiser step, skipped on the device when nonfinite is True (fp16: when the scaler
        finds inf/NaN gradients, which it then also answers by lowering its scale)."""
        if self.precision.scaled:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        opt = cast(Any, self.optimizer)
        opt.found_inf = nonfinite.float()
        try:
            self.optimizer.step()
        finally:
            del opt.found_inf

    def out_of_memory(self, group: list[Batch], max_tokens: int) -> UserError:
        biggest = max(group, key=lambda b: b.src.numel() + b.tgt_in.numel())
        return UserError(
            f"out of memory on a batch of {biggest.src.size(0)} sentences (source length {biggest.src.size(1)}, "
            f"target length {biggest.tgt_in.size(1)}); lower --max-tokens (now {max_tokens}) "
            "and raise --update-freq to keep the batch size")
