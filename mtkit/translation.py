"""What translating produces, shared by mtkit's own search (mtkit.decode) and CTranslate2's
(mtkit.ct2). No torch here, so that a CTranslate2 model translates without importing it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtkit.errors import UserError

# Batch budget (source tokens x beam) when DecodeConfig.max_tokens is 0: on a GPU a few large
# batches keep it busy (1,000 Multi30k sentences at beam 5 are two batches); on a CPU smaller
# batches waste less work on finished sentences.
AUTO_MAX_TOKENS = {"cpu": 8000, "cuda": 65536}


@dataclass
class Translation:
    text: str
    tokens: list[int]
    score: float
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first


@dataclass
class TranslateStats:
    sentences: int = 0
    truncated: int = 0  # source lines cut to the model's maximum length
    tgt_tokens: int = 0


def cpu_threads() -> int:
    """The threads a CPU engine uses by default: OMP_NUM_THREADS where set, else the cores this
    process may run on (torch's default too)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """The lines in lists of `size` (the last one shorter)."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def decode_nbests(decode: Callable[[list[list[int]]], list[str]], nbests: list[list[list[int]]]) -> list[list[str]]:
    """The texts of every hypothesis (token ids) of every sentence, from one call of the
    tokenizer's `decode`: sentencepiece starts a thread pool at each call, which cost 1 ms per
    call on a 16-core machine, more than decoding the sentence on a GPU."""
    flat = iter(decode([ids for nbest in nbests for ids in nbest]))
    return [[next(flat) for _ in nbest] for nbest in nbests]


@dataclass
class Engine:
    """A loaded model ready to translate: translate(lines, DecodeConfig, TranslateStats, chunk_size)."""

    translate: Callable[[Iterable[str], Any, TranslateStats, int], Iterator[Translation]]
    max_positions: int


def open_engine(model_dir: Path, checkpoint: str = "best", device: str = "auto", precision: str = "auto",
                workers: int = 0) -> Engine:
    """An mtkit model directory (mtkit's search on torch; precision auto, fp32, bf16, fp16, or int8
    on a CPU) or a model written by `mtkit convert` (CTranslate2, without torch). workers: batches
    decoded at once on a CPU, each by its own thread (0: one per thread the CPU engine uses)."""
    from mtkit import ct2

    if ct2.is_ct2_dir(model_dir):
        translator = ct2.Translator(model_dir, device, ct2.COMPUTE_TYPES[precision], workers=workers)
        return Engine(translator.translate, translator.info["max_positions"])
    import torch

    from mtkit.checkpoint import load_for_inference
    from mtkit.decode import quantize_int8, translate
    from mtkit.runtime import resolve_device, resolve_precision

    dev = resolve_device("cpu" if precision == "int8" and device == "auto" else device, 0)  # int8: CPU decoding
    if precision == "int8" and dev.type != "cpu":
        raise UserError("--precision int8 is mtkit's CPU decoding; on a GPU use bf16, or convert the model "
                        "(mtkit convert --quantization int8_float16)")
    dtype = None if precision == "int8" else resolve_precision(precision, dev).dtype
    model, tok, _ = load_for_inference(model_dir, checkpoint, dev)
    if precision == "int8":
        model = quantize_int8(model)
    elif dev.type == "cuda" and dtype != torch.float32:
        # weights cast once, not by autocast at every layer of every decoding step
        model, dtype = model.to(dtype), None

    def run(lines: Iterable[str], cfg: Any, stats: TranslateStats, chunk_size: int) -> Iterator[Translation]:
        return translate(model, tok, lines, cfg, stats, chunk_size, device=dev, autocast_dtype=dtype, workers=workers)

    return Engine(run, model.cfg.max_positions)
