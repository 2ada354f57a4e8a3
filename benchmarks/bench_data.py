"""Corpus encoding throughput and memory: 100k and 1M synthetic pairs built from Multi30k.

Pairs are Multi30k train sentences drawn at random (with a running number appended so that
pairs differ). Each size is encoded (datasets .map, SentencePiece 8k joint) and cleaned in a
fresh child process with a fresh cache; we report pairs/s and the child's peak RSS. Peak RSS
should not grow with the corpus: the text is streamed into Arrow files and read memory-mapped.
Usage: python benchmarks/bench_data.py [--sizes 100000 1000000] [--num-proc 2]
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


def child(src: str, tgt: str, tok: str, cache: str, num_proc: str) -> None:
    from mtkit.config import DataConfig
    from mtkit.data import TextPair, prepare_corpus
    from mtkit.tokenizer import Tokenizer

    start = time.perf_counter()
    corpus = prepare_corpus(TextPair(Path(src), Path(tgt)), Tokenizer.load(tok), DataConfig(num_proc=int(num_proc)), cache)
    seconds = time.perf_counter() - start
    print(f"{corpus.report.read} {seconds}", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--num-proc", type=int, default=2)
    args = ap.parse_args()
    from mtkit.tokenizer import TokenizerOptions, train_tokenizer

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
            read, seconds = output.split()
            print(f"{int(read):>9,} pairs: {int(read) / float(seconds):>9,.0f} pairs/s ({float(seconds):.1f} s), "
                  f"peak RSS {usage.ru_maxrss / 1024:,.0f} MB (the largest of the child and its map workers)")
            src.unlink()
            tgt.unlink()


if __name__ == "__main__":
    main()
