"""What `mtkit translate` (and every other user of a trained model) opens: an Engine.

    open_engine(model_dir, ...)  an mtkit model directory -> TorchEngine (mtkit's own search);
                                 a directory written by `mtkit convert` -> ct2.Translator
    engine.translate(lines, cfg, stats, chunk_size, first_line)
                                 translations in input order, `chunk_size` lines read at a time
                                 (sampling draws from the input line numbers, from first_line on)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mtkit.config import DecodeConfig
from mtkit.errors import UserError
from mtkit.inference.types import TranslateStats, Translation

if TYPE_CHECKING:
    import torch

    from mtkit.data.tokenizer import Tokenizer
    from mtkit.model.transformer import Transformer


class Engine(Protocol):
    """A loaded model, ready to translate."""

    @property
    def max_positions(self) -> int: ...  # longest sequence the model takes, eos included

    def translate(self, lines: Iterable[str], cfg: DecodeConfig, stats: TranslateStats,
                  chunk_size: int = 2000, first_line: int = 0) -> Iterator[Translation]: ...


class TorchEngine:
    """mtkit's own search on a loaded Transformer (mtkit.inference.translate)."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, device: torch.device,
                 autocast_dtype: torch.dtype | None, workers: int = 0):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.autocast_dtype, self.workers = autocast_dtype, workers

    @property
    def max_positions(self) -> int:
        return self.model.cfg.max_positions

    def translate(self, lines: Iterable[str], cfg: DecodeConfig, stats: TranslateStats,
                  chunk_size: int = 2000, first_line: int = 0) -> Iterator[Translation]:
        from mtkit.inference.translate import translate

        return translate(self.model, self.tokenizer, lines, cfg, stats, chunk_size, first_line, device=self.device,
                         autocast_dtype=self.autocast_dtype, workers=self.workers)


class BySentences:
    """An engine that cuts each line into sentences (mtkit.data.sentences), translates them all
    with `engine` in the same batches, and puts each line back together with its own whitespace:
    one translation per line, as the engine gives. (Sampling draws from line numbers, which the
    sentences of a line do not have: it is refused with it.)"""

    def __init__(self, engine: Engine, language: str | None):
        self.engine, self.language = engine, language

    @property
    def max_positions(self) -> int:
        return self.engine.max_positions

    def translate(self, lines: Iterable[str], cfg: DecodeConfig, stats: TranslateStats,
                  chunk_size: int = 2000, first_line: int = 0) -> Iterator[Translation]:
        from mtkit.data.sentences import split
        from mtkit.inference.types import chunks, joined

        if cfg.sampling:
            raise UserError("--split-sentences cannot be used with --sampling (samples are drawn by line number): "
                            "put one sentence per line instead")
        for chunk in chunks(lines, chunk_size):
            segmented = [split(line, self.language) for line in chunk]
            sentences = [s for segments in segmented for s in segments.sentences]
            inner = TranslateStats()
            done = iter(list(self.engine.translate(sentences, cfg, inner, max(len(sentences), 1))))
            for segments in segmented:
                yield joined(segments, [next(done) for _ in segments.sentences], cfg.nbest)
            stats.sentences += len(chunk)
            stats.truncated += inner.truncated
            stats.tgt_tokens += inner.tgt_tokens


def open_engine(model_dir: Path, checkpoint: str = "best", device: str = "auto", precision: str = "auto",
                workers: int = 0) -> Engine:
    """An mtkit model directory (mtkit's search on torch; precision auto, fp32, bf16, fp16, or int8
    on a CPU) or a model written by `mtkit convert` (CTranslate2, without torch). workers: batches
    decoded at once on a CPU, each by its own thread (0: one per thread the CPU engine uses)."""
    from mtkit.inference import ct2

    if ct2.is_ct2_dir(model_dir):
        return ct2.Translator(model_dir, device, ct2.COMPUTE_TYPES[precision], workers=workers)
    import torch

    from mtkit.inference.translate import quantize_int8
    from mtkit.model.checkpoint import load_for_inference
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
    return TorchEngine(model, tok, dev, dtype, workers)
