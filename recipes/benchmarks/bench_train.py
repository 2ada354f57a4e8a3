"""Training throughput on Multi30k: mtkit's trainer vs a plain torch.nn.Transformer loop, one run.

Both train on the same length-bucketed 4,096-token batches of Multi30k en-de (mtkit's data
pipeline, joint 8k SentencePiece), with AdamW, label smoothing 0.1 and the preset's sizes.
mtkit is measured through its real `train()` (data, AMP, clipping, optimiser, logging); its
rate is the median of its logged windows after the first. Model-FLOPs utilisation (MFU) counts
the matmul FLOPs of the real (unpadded) tokens, x3 for forward+backward, against this machine's
matmul peak measured here. Peak RSS is each loop's own (the process's peak is reset before it).
Usage: python recipes/benchmarks/bench_train.py [--presets small multi30k] [--precisions fp32 bf16] [--steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_model import TorchTransformer
from common import MULTI30K, peak_rss_since_reset_mb, reset_peak_rss

from mtkit import config as C
from mtkit import config_io
from mtkit.data.batching import BatchIterator
from mtkit.data.corpus import Cleaning
from mtkit.data.prepare import CorpusInput, prepare_cached
from mtkit.data.sources import TextPair
from mtkit.data.tokenizer import PAD_ID, Tokenizer, TokenizerOptions, train_tokenizer
from mtkit.training import events as ev
from mtkit.training.rundir import TrainJob
from mtkit.training.trainer import train


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_step(cfg: C.ModelConfig, src_tokens: int, tgt_tokens: int, src_len: float, tgt_len: float) -> float:
    """Forward+backward matmul FLOPs for the given real token counts and mean lengths."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.tgt_vocab_size
    enc = cfg.n_enc_layers * src_tokens * (2 * (4 * d * d + 2 * d * f) + 4 * src_len * d)
    dec = cfg.n_dec_layers * (tgt_tokens * (2 * (6 * d * d + 2 * d * f) + 4 * tgt_len * d + 4 * src_len * d)
                              + src_tokens * 2 * 2 * d * d)
    out = tgt_tokens * 2 * d * v
    return 3 * (enc + dec + out)


def bench_mtkit(tok_dir: Path, preset: str, precision: str, steps: int, work: Path) -> list[float]:
    cfg = C.RunConfig(preset=preset, model=C.preset(preset))
    for s in (f"train.max_steps={steps}", "train.log_every=5", "train.valid_every=0", "train.save_every=0",
              f"train.precision={precision}", "train.warmup=4000", "data.max_tokens=4096"):
        config_io.apply_override(cfg, s)
    job = TrainJob(work / f"{preset}-{precision}", cfg, MULTI30K / "train.en.gz", MULTI30K / "train.de.gz",
                   tokenizer_dir=tok_dir, cache_dir=work / "cache")
    events: list[ev.Event] = []
    train(job, events.append)
    return [e.tgt_tokens_per_s for e in events if isinstance(e, ev.TrainStats)][1:]


def bench_torch(corpus, cfg: C.ModelConfig, precision: str, steps: int) -> list[float]:
    torch.manual_seed(1)
    model = TorchTransformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
    dtype = torch.bfloat16 if precision == "bf16" else None
    it = iter(BatchIterator(corpus, 4096, seed=1))
    rates, tokens, since = [], 0, time.perf_counter()
    for step in range(1, steps + 1):
        b = next(it)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(b.src, b.tgt_in)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), b.tgt_out.view(-1),
                               ignore_index=PAD_ID, label_smoothing=0.1, reduction="sum") / b.n_tgt_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += b.n_tgt_tokens
        if step % 5 == 0:
            now = time.perf_counter()
            rates.append(tokens / (now - since))
            tokens, since = 0, now
    return rates[1:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["small", "multi30k"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    if not (MULTI30K / "train.en.gz").exists():
        sys.exit(f"needs the Multi30k corpus at {MULTI30K}")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"CPU threads {torch.get_num_threads()}; measured matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_tokenizer([MULTI30K / "train.en.gz"], [MULTI30K / "train.de.gz"], work / "tok", TokenizerOptions(8000))
        tok = Tokenizer.load(work / "tok")
        pair = TextPair(MULTI30K / "train.en.gz", MULTI30K / "train.de.gz")
        corpus, _ = prepare_cached([CorpusInput("train", pair)], tok, Cleaning(), work / "cache")
        src_tok, tgt_tok = corpus.src_lens.sum() + len(corpus), corpus.tgt_lens.sum() + len(corpus)
        src_len, tgt_len = src_tok / len(corpus), tgt_tok / len(corpus)
        print(f"{'preset':9s}{'precision':10s}{'mtkit tgt tok/s (min/med/max)':>32s}{'nn.Transformer':>28s}{'ratio':>7s}{'MFU':>7s}"
              f"{'peak RSS mtkit / nn.T':>22s}")
        for preset in args.presets:
            cfg = C.preset(preset, src_vocab_size=tok.src_vocab_size, tgt_vocab_size=tok.tgt_vocab_size)
            for precision in args.precisions:
                reset_peak_rss()
                ours = bench_mtkit(work / "tok", preset, precision, args.steps, work)
                ours_rss = peak_rss_since_reset_mb()
                reset_peak_rss()
                theirs = bench_torch(corpus, cfg, precision, args.steps)
                theirs_rss = peak_rss_since_reset_mb()
                med = statistics.median(ours)
                flops = flops_per_step(cfg, src_tok, tgt_tok, src_len, tgt_len) / tgt_tok * med
                print(f"{preset:9s}{precision:10s}{min(ours):10.0f} /{med:7.0f} /{max(ours):7.0f}"
                      f"{min(theirs):10.0f} /{statistics.median(theirs):7.0f} /{max(theirs):7.0f}"
                      f"{med / statistics.median(theirs):7.2f}{flops / peaks[precision]:7.1%}"
                      f"{ours_rss:8.0f} MB{theirs_rss:8.0f} MB", flush=True)


if __name__ == "__main__":
    main()
