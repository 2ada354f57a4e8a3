"""Where training runs: device, precision, processes (torch.distributed) and RNG state."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from dataclasses import dataclass

import torch

from mtkit.errors import Interrupted, UserError


@dataclass(frozen=True)
class Precision:
    name: str  # fp32, bf16 or fp16
    dtype: torch.dtype | None  # autocast dtype; None for fp32

    @property
    def scaled(self) -> bool:
        return self.dtype is torch.float16


def autocast(device_type: str, dtype: torch.dtype | None):
    """The one mixed-precision context: autocast to dtype, or nothing for fp32 (dtype None)."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device, option: str = "--precision") -> Precision:
    """auto: bf16 on GPUs that support it, fp16 on older ones, fp32 on CPUs."""
    if name == "auto":
        if device.type != "cuda":
            name = "fp32"
        else:
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name not in PRECISIONS:
        raise UserError(f"{option}: expected auto, fp32, bf16 or fp16, got {name!r}")
    return Precision(name, PRECISIONS[name])


def resolve_device(name: str, local_rank: int, option: str = "--device") -> torch.device:
    """auto (this rank's GPU if there is one, else the CPU), cpu, cuda or cuda:N."""
    from mtkit.config import DEVICE_RE

    if not DEVICE_RE.fullmatch(name):
        raise UserError(f"{option}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"{option} {name}: CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise UserError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    return torch.device(name)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), world, local_rank)


def end_distributed(d: Dist) -> None:
    """Destroy the process group before the process exits: left to the interpreter's exit, gloo's
    threads could find the other rank already gone and abort (SIGABRT, seen once in a test)."""
    if d.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce(value: float, d: Dist, device: torch.device, op: str = "sum") -> float:
    if d.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return float(t.item())


def gather_objects(obj: object, d: Dist) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank ([obj] for one process)."""
    if d.world == 1:
        return [obj]
    import torch.distributed as dist

    everyone: list = [None] * d.world
    dist.all_gather_object(everyone, obj)
    return everyone


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def ranks_in_sync(model: torch.nn.Module, d: Dist) -> bool:
    """True: every rank holds bit-identical parameters (a SHA-256 of their bytes, compared across
    ranks); a RuntimeError naming the ranks that differ otherwise. Always True for one process."""
    if d.world == 1:
        return True
    import hashlib

    import torch.distributed as dist

    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    everyone: list = [None] * d.world
    dist.all_gather_object(everyone, digest.hexdigest())
    differing = [rank for rank, h in enumerate(everyone) if h != everyone[0]]
    if differing:
        raise RuntimeError(f"parameters differ across ranks after training: rank(s) {differing} against rank 0")
    return True


@dataclass
class StopFlag:
    """What SIGTERM/SIGINT ask of a training run. Before `armed` (during setup) a signal interrupts
    at once; once armed, the first sets `signal` (the loop saves a checkpoint after its current
    step and stops) and a second one interrupts at once, so a signal always stops the process."""

    armed: bool = False
    signal: int = 0


@contextlib.contextmanager
def stop_on_signals():
    flag = StopFlag()

    def handler(signum, frame):
        if not flag.armed or flag.signal:
            raise Interrupted(signum)
        flag.signal = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
