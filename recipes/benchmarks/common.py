"""Helpers shared by the benchmark scripts: timing with repeats, peak RSS, the shared corpus."""

from __future__ import annotations

import gzip
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

MULTI30K = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "multi30k"


def corpus_lines(split: str, lang: str) -> list[str]:
    path = MULTI30K / f"{split}.{lang}.gz"
    if not path.exists():
        raise SystemExit(f"benchmark needs the Multi30k corpus at {MULTI30K}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def repeat(fn: Callable[[], object], repeats: int = 5) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(values: list[float]) -> str:
    return f"min {min(values):.4g} / median {statistics.median(values):.4g} / max {max(values):.4g}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start a new peak for `peak_rss_since_reset_mb` (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_since_reset_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
