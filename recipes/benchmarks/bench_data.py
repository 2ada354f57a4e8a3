"""Corpus encoding throughput and memory: 100k and 1M synthetic pairs built from Multi30k.

Pairs are Multi30k train sentences drawn at random (with a running number appended so that
pairs differ). Each size is encoded (datasets .map, SentencePiece 8k joint) and cleaned in a
fresh child process with a fresh cache; we report pairs/s, the peak anonymous memory (what the
job allocates: it should not grow with the corpus, as text is streamed into Arrow files and read
memory-mapped) and the peak RSS, which also counts touched pages of those memory-mapped files
(page cache the kernel reclaims under pressure, so it grows with the corpus without being a cost).
Usage: python recipes/benchmarks/bench_data.py [--sizes 100000 1000000] [--num-proc 2]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from common import MULTI30K, corpus_lines


def make_corpus(directory: Path, n: int) -> tuple[Path, Path]:
    en, de = corpus_lines("train", "en"), corpus_lines("train", "de")
    rng = random.Random(n)
    src, tgt = directory / f"c{n}.en", directory / f"c{n}.de"
    with open(src, "w", encoding="utf-8") as fs, open(tgt, "w", encoding="utf-8") as ft:
        for i in range(n):
            k = rng.randrange(len(en))
            fs.write(f"{en[k]} {i}\n")
            ft.write(f"{de[k]} {i}\n")
    return src, tgt


def _anon_mb(pid: int) -> float:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if f"PPid:\t{pid}\n" in open(f"/proc/{entry}/status").read():
                    kids.append(int(entry))
            except OSError:
                pass
    return kids


def child(src: str, tgt: str, tok: str, cache: str, num_proc: str) -> None:
    """Encode in this process; a thread samples the anonymous (non-file-backed) memory of this
    process plus its map workers every 50 ms."""
    import threading

    from mtkit.config import DataConfig
    from mtkit.data.corpus import TextPair, prepare_corpus
    from mtkit.data.tokenizer import Tokenizer

    peak, done = [0.0], threading.Event()

    def sample() -> None:
        me = os.getpid()
        while not done.wait(0.05):
            peak[0] = max(peak[0], _anon_mb(me) + sum(_anon_mb(k) for k in _children(me)))

    threading.Thread(target=sample, daemon=True).start()
    start = time.perf_counter()
    corpus = prepare_corpus(TextPair(Path(src), Path(tgt)), Tokenizer.load(tok), DataConfig(num_proc=int(num_proc)), cache)
    seconds = time.perf_counter() - start
    done.set()
    print(f"{corpus.report.read} {seconds} {peak[0]}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--num-proc", type=int, default=2)
    args = ap.parse_args()
    from mtkit.data.tokenizer import TokenizerOptions, train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_tokenizer([MULTI30K / "train.en.gz"], [MULTI30K / "train.de.gz"], work / "tok", TokenizerOptions(8000))
        print(f"encode + clean + cache, num_proc={args.num_proc}, SentencePiece 8k joint")
        for n in args.sizes:
            src, tgt = make_corpus(work, n)
            import subprocess

            proc = subprocess.Popen([sys.executable, __file__, "--child", str(src), str(tgt), str(work / "tok"),
                                     str(work / f"cache{n}"), str(args.num_proc)], stdout=subprocess.PIPE, text=True)
            output = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            if status != 0:
                raise SystemExit(f"child failed for {n} pairs")
            read, seconds, anon = output.split()
            print(f"{int(read):>9,} pairs: {int(read) / float(seconds):>9,.0f} pairs/s ({float(seconds):.1f} s); "
                  f"peak anonymous memory {float(anon):,.0f} MB (process + map workers); "
                  f"peak RSS {usage.ru_maxrss / 1024:,.0f} MB (includes resident pages of the memory-mapped Arrow files)")
            src.unlink()
            tgt.unlink()


if __name__ == "__main__":
    main()
