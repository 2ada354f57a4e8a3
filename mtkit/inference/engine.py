"""What `mtkit translate` (and every other user of a trained model) opens: an Engine.

    open_engine(model_dir, ...)  an mtkit model directory -> TorchEngine (mtkit's own search);
                                 a directory written by `mtkit convert` -> ct2.Translator
    engine.translate(lines, cfg, stats, chunk_size, first_line)
                                 translations in input order, `chunk_size` lines read at a time
                                 (sampling draws from the input line numbers, from first_line on)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mtkit.config import DecodeConfig
from mtkit.errors import UserError
from mtkit.inference.types import TranslateStats, Translation
from mtkit.model.directory import ModelDir, ModelRef

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
                 autocast_dtype: torch.dtype | None, concurrent: int = 0):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.autocast_dtype, self.concurrent = autocast_dtype, concurrent

    @property
    def max_positions(self) -> int:
        return self.model.cfg.max_positions

    def translate(self, lines: Iterable[str], cfg: DecodeConfig, stats: TranslateStats,
                  chunk_size: int = 2000, first_line: int = 0) -> Iterator[Translation]:
        from mtkit.inference.translate import translate

        return translate(self.model, self.tokenizer, lines, cfg, stats, chunk_size, first_line, device=self.device,
                         autocast_dtype=self.autocast_dtype, concurrent=self.concurrent)


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


def open_engine(model: Path | Sequence[ModelRef], checkpoint: str = "best", device: str = "auto",
                precision: str = "auto", concurrent: int = 0) -> Engine:
    """An mtkit model directory (mtkit's search on torch; precision auto, fp32, bf16, fp16, or int8
    on a CPU), several of them decoding as one (an ensemble, mtkit.inference.ensemble: a list of
    ModelRef, each with its own checkpoint), or a model written by `mtkit convert` (CTranslate2,
    without torch). concurrent: batches decoded at once on a CPU, each by its own thread (0: one
    per thread the CPU engine uses)."""
    from mtkit.inference import ct2

    refs = [ModelRef(model, checkpoint)] if isinstance(model, Path | str) else list(model)
    converted = [r for r in refs if ModelDir(r.path).kind == "converted"]
    if converted and len(refs) > 1:
        raise UserError(f"{converted[0].path}: a converted CTranslate2 model translates alone; an ensemble is of "
                        "mtkit model directories")
    if converted:
        return ct2.Translator(Path(refs[0].path), device, ct2.COMPUTE_TYPES[precision], concurrent=concurrent)
    import torch

    from mtkit.inference.ensemble import Ensemble
    from mtkit.inference.translate import quantize_int8
    from mtkit.model.checkpoint import load_for_inference
    from mtkit.runtime import resolve_device, resolve_precision

    dev = resolve_device("cpu" if precision == "int8" and device == "auto" else device, 0)  # int8: CPU decoding
    if precision == "int8" and dev.type != "cpu":
        raise UserError("--precision int8 is mtkit's CPU decoding; on a GPU use bf16, or convert the model "
                        "(mtkit convert --quantization int8_float16)")
    dtype = None if precision == "int8" else resolve_precision(precision, dev).dtype
    members, tok = [], None
    for ref in refs:
        member, member_tok, _ = load_for_inference(ref.path, ref.checkpoint, dev)
        if tok is not None and member_tok.encoding_fingerprint() != tok.encoding_fingerprint():
            raise UserError(f"{ref.path}: its tokenizer is not {refs[0].path}'s; an ensemble's models share one "
                            "tokenizer")
        tok = tok or member_tok
        if precision == "int8":
            member = quantize_int8(member)
        elif dev.type == "cuda" and dtype != torch.float32:
            member = member.to(dtype)  # weights cast once, not by autocast at every layer of every decoding step
        members.append(member)
    if precision != "int8" and dev.type == "cuda" and dtype != torch.float32:
        dtype = None
    assert tok is not None
    searched: Any = members[0] if len(members) == 1 else Ensemble(members)
    return TorchEngine(searched, tok, dev, dtype, concurrent)
