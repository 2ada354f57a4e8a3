"""Translating one file with several processes (`torchrun ... mtkit translate -i F -o OUT`).

Rank r translates lines [r n / W, (r+1) n / W) of the input (on its own GPU, or the CPU) into a
temporary file beside the output; rank 0 then joins the shares, in input order, into the
output, which appears whole or not at all (a rank that dies leaves no output). A sentence's
translation does not depend on its batch, and sampling draws from the line numbers: the output
is a single process's, byte for byte.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from mtkit.config import DecodeConfig
from mtkit.data.textio import check_text, iter_lines
from mtkit.files import atomic_write, temp_name, write_error
from mtkit.inference.engine import Engine
from mtkit.inference.types import TranslateStats, Translation
from mtkit.runtime import Dist, barrier, gather_objects


def rank_device(device: str, d: Dist) -> str:
    """The device of this rank: `auto` is its own GPU (LOCAL_RANK), or the CPU without one."""
    if device != "auto":
        return device
    import torch

    return f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu"


def share(lines: int, d: Dist) -> tuple[int, int]:
    """The first line and the end of this rank's contiguous share of `lines` lines."""
    return d.rank * lines // d.world, (d.rank + 1) * lines // d.world


def translate_file(d: Dist, engine: Engine, cfg: DecodeConfig, input_file: Path, output_file: Path,
                   line_of: Callable[[Translation], str],
                   progress: Callable[[int, int], None] | None = None) -> TranslateStats | None:
    """This rank's share of the input translated (each translation written as line_of gives it),
    and on rank 0 the shares joined into output_file. Returns the statistics summed over every
    rank on rank 0, None on the others. progress(done, share) is called as lines are done."""
    first, last = share(check_text(input_file), d)
    stats, part = TranslateStats(), temp_name(output_file)
    try:
        try:
            with open(part, "w", encoding="utf-8") as out:
                lines = itertools.islice(iter_lines(input_file), first, last)
                for k, t in enumerate(engine.translate(lines, cfg, stats, 2000, first_line=first), start=1):
                    out.write(line_of(t))
                    if progress is not None:
                        progress(k, last - first)
        except OSError as e:
            raise write_error(part, e) from None
        parts = gather_objects((str(part), vars(stats)), d)
        if d.main:
            _join([Path(p) for p, _ in parts], output_file)
        barrier(d)
    finally:
        part.unlink(missing_ok=True)
    if not d.main:
        return None
    return TranslateStats(*(sum(p[1][k] for p in parts) for k in ("sentences", "truncated", "tgt_tokens")))


def _join(parts: list[Path], output_file: Path) -> None:
    """The ranks' shares, in rank order, as output_file (appearing whole)."""
    try:
        with atomic_write(output_file, "w", encoding="utf-8") as merged:
            for path in parts:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        merged.write(line)
    except OSError as e:
        raise write_error(output_file, e) from None
