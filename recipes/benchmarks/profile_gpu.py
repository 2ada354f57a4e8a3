"""Where a GPU step's time goes: torch.profiler over mtkit's training update or its decoding.

  train    the Updater step of `mtkit train` on synthetic WMT-length batches (as bench_train_gpu.py),
           a few steps after a warm-up: wall time per step, GPU busy time per step (the kernels'
           summed time), and the kernels that take it
  decode   translate() of Multi30k test_2016_flickr with a trained model: the same figures per
           decoding step, and the host-side operators that take the wall time

Usage: python recipes/benchmarks/profile_gpu.py train --preset base --max-tokens 32768
       python recipes/benchmarks/profile_gpu.py decode MODEL_DIR [--beam 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


def report(prof: profile, steps: int, wall: float, rows: int) -> None:
    events = prof.key_averages()
    busy = sum(e.self_device_time_total for e in events) / 1e3  # ms
    print(f"wall {wall * 1e3 / steps:8.2f} ms per step; GPU busy {busy / steps:8.2f} ms per step "
          f"({busy / (wall * 1e3):.0%} of the wall time)")
    print(events.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows // 2, max_name_column_width=60))


def train(args: argparse.Namespace) -> None:
    from bench_train_gpu import WMT_VOCAB, mtkit_step, synthetic_corpus

    from mtkit import config as C
    from mtkit.data.batching import BatchIterator

    cfg = C.preset(args.preset, src_vocab_size=WMT_VOCAB, tgt_vocab_size=WMT_VOCAB)
    it = iter(BatchIterator(synthetic_corpus(100_000), args.max_tokens, seed=1, pad_multiple=args.pad_multiple))
    batches = [next(it) for _ in range(args.warmup + args.steps)]
    step = mtkit_step(cfg, compile=False)
    for i, b in enumerate(batches[:args.warmup]):
        step(b, i + 1)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for i, b in enumerate(batches[args.warmup:]):
            step(b, i + 1)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    tokens = sum(b.n_tgt_tokens for b in batches[args.warmup:])
    print(f"{args.preset}, {args.max_tokens} tokens per batch: {tokens / wall:,.0f} tgt tok/s under the profiler")
    report(prof, args.steps, wall, args.rows)


def decode(args: argparse.Namespace) -> None:
    from common import corpus_lines

    from mtkit.config import DecodeConfig
    from mtkit.inference.engine import open_engine
    from mtkit.inference.types import TranslateStats

    lines = corpus_lines("test_2016_flickr", "en")
    engine = open_engine(args.model, "averaged", "cuda", "auto")
    cfg = DecodeConfig(beam=args.beam)
    list(engine.translate(lines, cfg, TranslateStats(), 2000))
    torch.cuda.synchronize()
    start = time.perf_counter()
    list(engine.translate(lines, cfg, TranslateStats(), 2000))
    torch.cuda.synchronize()
    print(f"beam {args.beam}: {len(lines) / (time.perf_counter() - start):,.0f} sent/s without the profiler")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        list(engine.translate(lines, cfg, TranslateStats(), 2000))
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    steps = next((e.count for e in prof.key_averages() if e.key == "aten::log_softmax"), 1)
    print(f"{steps} decoding steps (log_softmax calls)")
    report(prof, steps, wall, args.rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("train")
    t.add_argument("--preset", default="base")
    t.add_argument("--max-tokens", type=int, default=32768)
    t.add_argument("--pad-multiple", type=int, default=1)
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--steps", type=int, default=5)
    d = sub.add_parser("decode")
    d.add_argument("model", type=Path)
    d.add_argument("--beam", type=int, default=5)
    for p in (t, d):
        p.add_argument("--rows", type=int, default=30)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("profile_gpu.py needs a CUDA device")
    train(args) if args.what == "train" else decode(args)


if __name__ == "__main__":
    main()
