"""Preparing and reopening a large corpus: `mtkit prepare` against SentencePiece alone, restart
time, one epoch's batches, memory and disk, on a synthetic corpus of N pairs; and how full an
epoch's batches are (the share of --max-tokens each uses, target tokens per batch) at budgets
from 1,024 to 32,768 tokens, on Multi30k and on the small synthetic corpus.

The corpus is Multi30k's training sentences joined 1-3 at a time (the same sentences on both
sides), so sentence lengths are those of news text (about 24 words on average; WMT14 en-de: ~23)
-- synthetic, as there is no WMT data on the machines this runs on. Every step runs alone in a
child process, one after the other:

  floor       SentencePiece encoding both sides, nothing else: P processes, each streaming its
              share of the corpus (split beforehand, untimed) -- what any prepare step must pay
  prepare     `mtkit prepare` with the same number of processes; peak memory of its process tree
  batches     one epoch's batches from the prepared directory (BatchIterator.epoch_batches)
  start       `mtkit train --data` (tiny preset, one update): wall time and peak memory
  restart     the same command resuming to update 2 (what a restart costs)
  fill        per budget: batches in an epoch, against the greedy cut written as a Python step per
              pair; mean fill (sentences x longest padded side / budget); target tokens per batch

Usage: python recipes/benchmarks/bench_data.py [--pairs 20000000] [--small 100000] [--work DIR] [--fill-only]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import MULTI30K, corpus_lines


def make_corpus(directory: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """n pairs, each 1-3 Multi30k training pairs joined (at random)."""
    en, de = corpus_lines("train", "en"), corpus_lines("train", "de")
    rng = random.Random(seed)
    src, tgt = directory / f"c{n}.en", directory / f"c{n}.de"
    with open(src, "w", encoding="utf-8") as fs, open(tgt, "w", encoding="utf-8") as ft:
        for _ in range(n):
            picks = [rng.randrange(len(en)) for _ in range(rng.randint(1, 3))]
            fs.write(" ".join(en[k] for k in picks) + "\n")
            ft.write(" ".join(de[k] for k in picks) + "\n")
    return src, tgt


def _tree_memory_mb(pid: int) -> float:
    """Resident memory of a process and its descendants (RSS: anonymous plus file pages mapped)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            todo += [int(c) for c in open(f"/proc/{p}/task/{p}/children").read().split()]
        except OSError:
            pass
    return total


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run a command alone: wall seconds, peak resident memory of its process tree (MB, sampled
    every 50 ms), its stderr."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_memory_mb(proc.pid))

    threading.Thread(target=sample, daemon=True).start()
    err = proc.communicate()[1]
    seconds = time.perf_counter() - start
    done.set()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err}")
    return seconds, peak[0], err


def floor_child(tok: str, src: str, tgt: str) -> None:
    import itertools

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tok)
    with open(src, encoding="utf-8") as fs, open(tgt, encoding="utf-8") as ft:
        while lines := list(itertools.islice(fs, 16384)):
            sp.encode([s.rstrip("\n") for s in lines])
            sp.encode([t.rstrip("\n") for t in itertools.islice(ft, len(lines))])


def floor(work: Path, src: Path, tgt: Path, tok: Path, processes: int) -> float:
    """Seconds for `processes` processes to encode both sides with SentencePiece alone."""
    shards = [(work / f"shard{k}.en", work / f"shard{k}.de") for k in range(processes)]
    handles = [(open(a, "w", encoding="utf-8"), open(b, "w", encoding="utf-8")) for a, b in shards]
    with open(src, encoding="utf-8") as fs, open(tgt, encoding="utf-8") as ft:
        for i, (s, t) in enumerate(zip(fs, ft)):
            handles[i % processes][0].write(s)
            handles[i % processes][1].write(t)
    for a, b in handles:
        a.close()
        b.close()
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--floor-child", str(tok / "spm.model"), str(a), str(b)])
             for a, b in shards]
    if any(p.wait() for p in procs):
        raise SystemExit("the SentencePiece floor failed")
    seconds = time.perf_counter() - start
    for a, b in shards:
        a.unlink()
        b.unlink()
    return seconds


def batches_child(data: str) -> None:
    from mtkit.data.batching import BatchIterator
    from mtkit.data.prepared import load_prepared

    start = time.perf_counter()
    corpus, _ = load_prepared(data)
    opened = time.perf_counter() - start
    it = BatchIterator(corpus, 4096, seed=1)
    times = []
    for epoch in (1, 2, 3):
        start = time.perf_counter()
        n = len(it.epoch_batches(epoch))
        times.append(time.perf_counter() - start)
    print(f"{opened} {min(times)} {n}")


BUDGETS = (1024, 2048, 4096, 8192, 16384, 25_000, 32_768)


def greedy_batches(src_lens, tgt_lens, max_tokens: int, seed: int = 1, epoch: int = 1) -> int:
    """Batches of the greedy cut written plainly, a Python step per pair, over make_batches' order:
    a batch takes the next pair while sentences x the largest cost stays within the budget."""
    from mtkit.data.batching import make_batches, padded_len

    order_batches, _ = make_batches(src_lens, tgt_lens, max_tokens, seed, epoch)
    cost = np.maximum(padded_len(src_lens.astype(np.int64)), padded_len(tgt_lens.astype(np.int64)))
    ordered = cost[order_batches.pairs(slice(0, int(order_batches.bounds[-1])))]
    n, size, largest = 0, 0, 0
    for c in ordered.tolist():
        if size and (size + 1) * max(largest, c) > max_tokens:
            n, size, largest = n + 1, 0, 0
        size, largest = size + 1, max(largest, c)
    return n + (size > 0)


def fill_rows(data: Path) -> list[dict]:
    """Per budget: an epoch's batches (and the greedy reference's), mean fill (all batches; all but
    the last of the cost order; the last), target tokens per batch."""
    from mtkit.data.batching import make_batches, padded_len
    from mtkit.data.prepared import load_prepared

    corpus, _ = load_prepared(data)
    src = padded_len(corpus.src_lens.astype(np.int64))
    tgt = padded_len(corpus.tgt_lens.astype(np.int64))
    rows = []
    for budget in BUDGETS:
        batches, _ = make_batches(corpus.src_lens, corpus.tgt_lens, budget, seed=1, epoch=1)
        in_order = [batches.pairs(slice(a, b)) for a, b in zip(batches.bounds[:-1], batches.bounds[1:])]
        fills = np.array([len(b) * max(src[b].max(), tgt[b].max()) / budget for b in in_order])
        rows.append({"budget": budget, "batches": len(batches), "greedy": greedy_batches(
            corpus.src_lens, corpus.tgt_lens, budget), "fill": fills.mean(), "but_last": fills[:-1].mean(),
            "last": fills[-1], "tokens": np.mean([tgt[b].sum() for b in in_order])})
    return rows


def print_fill(name: str, rows: list[dict]) -> None:
    print(f"\nbatches of one epoch, {name} (seed 1, epoch 1; the last of the cost order is the one that may be "
          "partial; greedy: the cut written as a Python step per pair):")
    print(f"{'--max-tokens':>12} {'batches':>8} {'greedy':>7} {'ratio':>6} {'mean fill':>9} {'all but last':>12} "
          f"{'last':>5} {'tgt tokens/batch':>16}")
    for r in rows:
        print(f"{r['budget']:>12,} {r['batches']:>8,} {r['greedy']:>7,} {r['batches'] / r['greedy']:>6.3f} "
              f"{r['fill']:>9.3f} {r['but_last']:>12.3f} {r['last']:>5.3f} {r['tokens']:>16,.0f}")


def prepare_quietly(text: tuple[Path, Path], data: Path, tok: Path, processes: int) -> None:
    subprocess.run([sys.executable, "-m", "mtkit", "prepare", "-o", str(data), "--tokenizer", str(tok), "--src",
                    str(text[0]), "--tgt", str(text[1]), "--num-proc", str(processes)], check=True,
                   capture_output=True)


def fill(work: Path, tok: Path, processes: int, small: int) -> None:
    """The fill tables: Multi30k's training set, and `small` synthetic pairs."""
    prepare_quietly((MULTI30K / "train.en.gz", MULTI30K / "train.de.gz"), work / "m30k", tok, processes)
    print_fill("Multi30k train (29,000 pairs)", fill_rows(work / "m30k"))
    prepare_quietly(make_corpus(work, small), work / "synthetic", tok, processes)
    print_fill(f"synthetic, {small:,} pairs (Multi30k sentences joined 1-3 at a time)", fill_rows(work / "synthetic"))


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def measure(work: Path, n: int, tok: Path, processes: int, with_floor: bool) -> dict:
    mtkit = [sys.executable, "-m", "mtkit"]
    print(f"-- {n:,} pairs: generating", flush=True)
    src, tgt = make_corpus(work, n)
    row: dict = {"pairs": n, "text_mb": (src.stat().st_size + tgt.stat().st_size) / 2**20}
    if with_floor:
        row["floor"] = floor(work, src, tgt, tok, processes)
        print(f"   SentencePiece alone: {row['floor']:.1f} s", flush=True)
    data, model = work / f"data{n}", work / f"model{n}"
    row["prepare"], row["prepare_mb"], _ = timed([*mtkit, "prepare", "-o", str(data), "--tokenizer", str(tok),
                                                  "--src", str(src), "--tgt", str(tgt), "--num-proc", str(processes)])
    print(f"   prepare: {row['prepare']:.1f} s, {row['prepare_mb']:,.0f} MB", flush=True)
    row["disk_mb"] = du_mb(data)
    out = subprocess.run([sys.executable, __file__, "--batches-child", str(data)], capture_output=True, text=True,
                         check=True).stdout.split()
    row["open"], row["batches"], row["n_batches"] = float(out[0]), float(out[1]), int(out[2])
    train = [*mtkit, "train", "-o", str(model), "--data", str(data), "--preset", "tiny", "--valid-every", "0",
             "--max-tokens", "4096", "--quiet"]
    row["start"], row["start_mb"], _ = timed([*train, "--max-steps", "1"])
    row["restart"], row["restart_mb"], _ = timed([*train, "--max-steps", "2"])
    print(f"   start {row['start']:.1f} s ({row['start_mb']:,.0f} MB), restart {row['restart']:.1f} s", flush=True)
    for path in (src, tgt):
        path.unlink()
    shutil.rmtree(model)
    shutil.rmtree(data)
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--floor-child":
        return floor_child(*sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--batches-child":
        return batches_child(sys.argv[2])
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=20_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--work", type=Path, help="where the corpora go (default: a temporary directory)")
    ap.add_argument("--fill-only", action="store_true", help="only the tables of how full batches are")
    args = ap.parse_args()
    from mtkit.data.tokenizer import TokenizerOptions, train_tokenizer

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        train_tokenizer([MULTI30K / "train.en.gz"], [MULTI30K / "train.de.gz"], work / "tok", TokenizerOptions(8000))
        fill(work, work / "tok", args.processes, args.small)
        if args.fill_only:
            return
        small = measure(work, args.small, work / "tok", args.processes, with_floor=False)
        big = measure(work, args.pairs, work / "tok", args.processes, with_floor=True)
    flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in open("/proc/cpuinfo").read()]
    print(f"\nmachine: {os.cpu_count()} CPUs ({', '.join(flags)}), {args.processes} processes, SentencePiece 8k joint")
    print(f"corpus: {big['pairs']:,} pairs, {big['text_mb'] / 1024:.2f} GB of text")
    print(f"SentencePiece alone, both sides: {big['floor']:.1f} s ({big['pairs'] / big['floor']:,.0f} pairs/s)")
    print(f"mtkit prepare: {big['prepare']:.1f} s ({big['pairs'] / big['prepare']:,.0f} pairs/s) = "
          f"{big['prepare'] / big['floor']:.2f}x the floor; peak memory {big['prepare_mb']:,.0f} MB (process tree RSS)")
    print(f"disk: {big['disk_mb']:,.0f} MB = {big['disk_mb'] / big['pairs'] * 1e6:,.0f} MB per million pairs")
    print(f"one epoch's batches: {big['batches']:.2f} s ({big['n_batches']:,} batches; opening the directory "
          f"{big['open']:.2f} s)")
    print(f"training start (tiny, 1 update): {big['start']:.1f} s, peak memory {big['start_mb']:,.0f} MB")
    print(f"restart: {big['restart']:.1f} s at {big['pairs']:,} pairs, {small['restart']:.1f} s at "
          f"{small['pairs']:,} ({big['restart'] / small['restart']:.2f}x)")


if __name__ == "__main__":
    main()
