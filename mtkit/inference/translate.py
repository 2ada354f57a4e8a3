"""From lines of text to translations: `translate(model, tokenizer, lines, cfg)`.

Lines are read a chunk at a time, encoded, sorted by length and cut into batches under the token
budget (sentences x source tokens x beam); each batch is searched (mtkit.inference.search), on a
CPU several at once, one per thread; the hypotheses are decoded to text, and the translations come
back in input order, one per line (an empty line gives an empty translation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from mtkit.config import AUTO_MAX_TOKENS, DecodeConfig
from mtkit.data.batching import pad_sequences
from mtkit.data.tokenizer import EOS_ID, Tokenizer
from mtkit.errors import UserError
from mtkit.inference.sampling import sample
from mtkit.inference.search import Hypothesis, search
from mtkit.inference.types import TranslateStats, Translation, chunks, decode_nbests
from mtkit.model.transformer import Transformer
from mtkit.runtime import autocast


def translate(
    model: Transformer, tokenizer: Tokenizer, lines: Iterable[str], cfg: DecodeConfig,
    stats: TranslateStats | None = None, chunk_size: int = 10000, first_line: int = 0, **kw,
) -> Iterator[Translation]:
    """Stream translations in input order, reading `chunk_size` lines at a time; the first line
    is input line `first_line` (counted from 0; sampling draws from the line numbers)."""
    stats = stats if stats is not None else TranslateStats()
    for chunk in chunks(lines, chunk_size):
        yield from translate_chunk(model, tokenizer, chunk, cfg, stats, first_line=first_line, **kw)
        first_line += len(chunk)


def translate_chunk(
    model: Transformer, tokenizer: Tokenizer, lines: list[str], cfg: DecodeConfig, stats: TranslateStats,
    device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None, concurrent: int = 0,
    first_line: int = 0,
) -> list[Translation]:
    """Translations of lines, in input order; empty lines give empty translations. concurrent: batches
    decoded at once on a CPU (0: one per torch thread; see _decode_batches); first_line: the
    input line number of lines[0] (sampling draws from the line numbers)."""
    max_src = model.cfg.max_positions - 1  # room for eos
    ids = tokenizer.encode_src(lines)
    cut = {i for i, seq in enumerate(ids) if len(seq) > max_src}
    for i in cut:
        ids[i] = ids[i][:max_src]
    stats.truncated += len(cut)
    results: list[Translation | None] = [Translation("", [], 0.0) if not seq else None for seq in ids]
    todo = [i for i, seq in enumerate(ids) if seq]
    device_type = torch.device(device).type
    budget = cfg.max_tokens or AUTO_MAX_TOKENS.get(device_type, AUTO_MAX_TOKENS["cpu"])
    batches = [[todo[j] for j in batch] for batch in _batches([len(ids[i]) for i in todo], budget,
                                                              cfg.rows_per_sentence)]

    def decode(rows: list[int]) -> list[list[Hypothesis]]:
        src = pad_sequences([ids[i] for i in rows], suffix=EOS_ID).to(device)
        with autocast(device_type, autocast_dtype), _out_of_memory_explained(src, cfg):
            if cfg.sampling:  # draws from the line numbers, not from the batch
                return sample(model, src, cfg, [first_line + i for i in rows])
            return search(model, src, cfg)

    for rows, hyps in zip(batches, _decode_batches(decode, batches, device_type, concurrent)):
        all_texts = decode_nbests(tokenizer.decode_tgt, [[h.tokens for h in nbest] for nbest in hyps])
        for i, nbest, texts in zip(rows, hyps, all_texts):
            results[i] = Translation(texts[0], nbest[0].tokens, nbest[0].score,
                                     [(txt, h.score) for txt, h in zip(texts, nbest)], truncated=i in cut)
            stats.tgt_tokens += len(nbest[0].tokens) + 1
    stats.sentences += len(lines)
    return results  # type: ignore[return-value]


def _batches(lengths: list[int], max_tokens: int, rows_per_sentence: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches of at most max_tokens (source tokens x the
    decoder rows a sentence takes: its beam, or its samples)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * (lengths[i] + 1) * rows_per_sentence > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _decode_batches(decode: Callable[[list[int]], list[list[Hypothesis]]], batches: list[list[int]],
                    device_type: str, concurrent: int = 0) -> list[list[list[Hypothesis]]]:
    """decode(batch) for every batch, results in the order of batches. On a CPU with several torch
    threads and several batches, each thread decodes batches of its own, with one intra-op thread
    (as Marian's CPU workers and CTranslate2's inter_threads do): a decoding step's matrices are
    too small for two threads to share them well (measured: docs/benchmarks.md, Decoding on a CPU);
    each batch in flight holds its own memory. The batches are the same either way, so is the
    output. The longest batches start first, so that no long one runs alone at the end."""
    threads = torch.get_num_threads()
    concurrent = min(concurrent or threads, threads, len(batches)) if device_type == "cpu" else 1
    if concurrent <= 1:
        return [decode(batch) for batch in batches]
    pool = ThreadPoolExecutor(concurrent, initializer=torch.set_num_threads, initargs=(threads // concurrent,))
    try:
        futures = {i: pool.submit(decode, batches[i]) for i in reversed(range(len(batches)))}  # _batches: shortest first
        return [futures[i].result() for i in range(len(batches))]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)  # the pool's setting is process-wide for some backends (MKL)


@contextlib.contextmanager
def _out_of_memory_explained(src: Tensor, cfg: DecodeConfig):
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not isinstance(e, torch.OutOfMemoryError) and "allocate" not in str(e):
            raise
        rows = f"{cfg.nbest} samples each" if cfg.sampling else f"beam {cfg.beam}"
        smaller = "--nbest" if cfg.sampling else "--beam"
        raise UserError(f"out of memory translating {src.size(0)} sentences of up to {src.size(1)} tokens with "
                        f"{rows}: lower --max-tokens (now {cfg.max_tokens}) or {smaller}") from None


def quantize_int8(model: Transformer) -> Transformer:
    """A copy of the model with int8 linear layers (weights quantized once, activations at each
    call: torch's dynamic quantization), for decoding on a CPU."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
