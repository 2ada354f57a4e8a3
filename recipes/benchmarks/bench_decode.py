"""Decoding speed: `mtkit translate` on Multi30k test_2016_flickr (1,000 sentences), whole process.

Each configuration runs the real command line in a fresh process (python start-up, model load,
tokenisation, search, output), `repeats` times; we report sentences/s and target tokens/s over
the whole process wall time, and its peak RSS. Then, in this process, the cached search is
checked against FullRecompute (no KV cache): greedy on all 1,000 sentences, beam 5 on 200.
With --device cuda (or cpu) it instead times translate() in this process, start-up excluded:
beam 5 and greedy, fp32 and bf16 autocast, each output scored against the references.
Usage: python recipes/benchmarks/bench_decode.py MODEL_DIR [--repeats 3] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import MULTI30K, corpus_lines, summary

from mtkit.batching import pad_sequences
from mtkit.checkpoint import load_for_inference
from mtkit.config import DecodeConfig
from mtkit.decode import FullRecompute, beam_search, greedy
from mtkit.tokenizer import EOS_ID


def run_translate(model_dir: Path, src: Path, out: Path, extra: list[str], threads: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one `mtkit translate` process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mtkit", "translate", "-m", str(model_dir), "-i", str(src),
                             "-o", str(out), "--checkpoint", "averaged", *extra], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"mtkit translate failed ({status})")
    return wall, usage.ru_maxrss / 1024


def check_against_uncached(model_dir: Path, lines: list[str]) -> None:
    model, tok, _ = load_for_inference(model_dir, "averaged")
    for beam, n in ((1, len(lines)), (5, 200)):
        cfg = DecodeConfig(beam=beam)
        search = greedy if beam == 1 else beam_search
        same = 0
        for start in range(0, n, 100):
            ids = tok.encode_src(lines[start:min(start + 100, n)])
            src = pad_sequences([torch.tensor(x) for x in ids], suffix=EOS_ID)
            a, b = search(model, src, cfg), search(FullRecompute(model), src, cfg)
            same += sum(x[0].tokens == y[0].tokens for x, y in zip(a, b, strict=True))
        print(f"  beam {beam}: cached output identical to uncached on {same}/{n} sentences")


def in_process(model_dir: Path, device: str, repeats: int) -> None:
    """Sentences/s of translate() in this process (model loaded, start-up excluded), and BLEU."""
    from mtkit.bleu import corpus_bleu
    from mtkit.decode import translate

    lines, refs = corpus_lines("test_2016_flickr", "en"), corpus_lines("test_2016_flickr", "de")
    model, tok, _ = load_for_inference(model_dir, "averaged", device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    print(f"translate() in process on {device}, {len(lines)} sentences, {repeats} runs (min / median / max)")
    for name, beam in (("beam 5", 5), ("greedy", 1)):
        for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            cfg = DecodeConfig(beam=beam)
            hyps = [t.text for t in translate(model, tok, lines[:64], cfg, device=device, autocast_dtype=dtype)]  # warm-up
            walls = []
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                hyps = [t.text for t in translate(model, tok, lines, cfg, device=device, autocast_dtype=dtype)]
                sync()
                walls.append(time.perf_counter() - start)
            sps = [len(lines) / w for w in walls]
            bleu = corpus_bleu(hyps, [refs])
            print(f"{name:7s} {precision:5s} sentences/s {summary(sps)}; BLEU {bleu.score:.2f} "
                  f"(lowercased {corpus_bleu(hyps, [refs], lowercase=True).score:.2f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", help="time translate() in this process on this device instead")
    args = ap.parse_args()
    if args.device:
        in_process(args.model_dir, args.device, args.repeats)
        return
    lines = corpus_lines("test_2016_flickr", "en")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "test.en", Path(tmp) / "out.de"
        src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        print(f"mtkit translate, {len(lines)} sentences of {MULTI30K.name} test_2016_flickr, {args.threads} threads, "
              f"whole process, {args.repeats} runs (min / median / max)")
        model, tok, _ = load_for_inference(args.model_dir, "averaged")
        for name, extra in (("beam 5", ["--beam", "5"]), ("greedy", ["--greedy"])):
            walls, rss = [], []
            for _ in range(args.repeats):
                wall, peak = run_translate(args.model_dir, src, out, extra, args.threads)
                walls.append(wall)
                rss.append(peak)
            hyps = out.read_text(encoding="utf-8").splitlines()
            tokens = sum(len(x) + 1 for x in tok.encode_tgt(hyps))
            sps = [len(lines) / w for w in walls]
            tps = [tokens / w for w in walls]
            print(f"{name:7s} sentences/s {summary(sps)}; target tokens/s {summary(tps)}; "
                  f"wall s {summary(walls)}; peak RSS {statistics.median(rss):.0f} MB")
    print("cached vs uncached (FullRecompute) search:")
    torch.set_num_threads(args.threads)
    check_against_uncached(args.model_dir, lines)


if __name__ == "__main__":
    main()
