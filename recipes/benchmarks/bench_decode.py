"""Decoding speed on Multi30k test_2016_flickr (1,000 sentences): mtkit fp32, mtkit int8 and
CTranslate2 int8 on the same weights, in one run.

  in process     translate() of the loaded engine (start-up excluded), sentences/s and BLEU
  whole process  `mtkit translate -i test.en -o out.de`, wall time and peak RSS
  start-up       `mtkit translate` of one sentence, whole process, against `python -c 'import torch'`

The whole-process part runs its commands round-robin (each once per round), so that the
machine's drift during the run falls on all of them alike.

The CTranslate2 model is written here by `mtkit convert --quantization int8` (skipped when
ctranslate2 is not installed). On a CPU both engines decode one batch per thread (the default);
the "1 worker" rows decode one batch at a time with all the threads (mtkit before, and
CTranslate2's own default, inter_threads=1), in process only. With --device cuda: mtkit fp32 and
bf16 on the GPU, in process.
Then, in this process, the cached search is checked against FullRecompute (no KV cache): greedy
on all 1,000 sentences, beam 5 on 200.
With several model directories: the ensemble of them (mtkit fp32 and int8, in process; memory is
the peak RSS of this process once the engine is loaded), after each model alone.
--quick: in process only (no whole-process rounds, no check against the uncached search).

Usage: python recipes/benchmarks/bench_decode.py MODEL_DIR [MODEL_DIR ...] [--checkpoint averaged]
       [--repeats 3] [--threads 2] [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import MULTI30K, corpus_lines, peak_rss_mb, summary

from mtkit.config import DecodeConfig
from mtkit.data.batching import pad_sequences
from mtkit.data.tokenizer import EOS_ID
from mtkit.inference.engine import open_engine
from mtkit.inference.search import FullRecompute, beam_search, greedy
from mtkit.inference.types import TranslateStats
from mtkit.metrics.bleu import corpus_bleu
from mtkit.model.checkpoint import load_for_inference

SEARCHES = (("beam 5", 5), ("greedy", 1))


def in_process(engines: list[tuple[str, Path, str, int]], device: str, checkpoint: str, repeats: int) -> None:
    """One engine after the other, CTranslate2 last, not round-robin: once CTranslate2 has run in a
    process, its thread pool competes with torch's for the cores. On the 2-core VM, mtkit int8
    greedy fell from 935-996 to 513-686 sentences/s after it, even after 2 s idle (measured)."""
    lines, refs = corpus_lines("test_2016_flickr", "en"), corpus_lines("test_2016_flickr", "de")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    print(f"in process on {device}: sentences/s over {repeats} runs (min / median / max), BLEU cased")
    for name, model, precision, concurrent in engines:
        engine = open_engine(model, checkpoint, device, precision, concurrent)
        if isinstance(model, list):
            print(f"  {name}: peak RSS {peak_rss_mb():,.0f} MB once loaded", flush=True)
        for search, beam in SEARCHES:
            cfg = DecodeConfig(beam=beam)
            list(engine.translate(lines[:64], cfg, TranslateStats(), 2000))  # warm-up
            walls, hyps = [], []
            for _ in range(repeats):
                sync()
                start = time.perf_counter()
                hyps = [t.text for t in engine.translate(lines, cfg, TranslateStats(), 2000)]
                sync()
                walls.append(time.perf_counter() - start)
            print(f"  {name:19s} {search:7s} {summary([len(lines) / w for w in walls])}; "
                  f"BLEU {corpus_bleu(hyps, [refs]).score:.2f}", flush=True)


def run_process(args: list[str], threads: int, stdin: str | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one process. The RSS is read by /usr/bin/time: a child of this
    (large) process would report this process's pages copied at fork."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.NamedTemporaryFile("r") as rss:
        timer = ["/usr/bin/time", "-f", "%M", "-o", rss.name] if Path("/usr/bin/time").exists() else []
        start = time.perf_counter()
        done = subprocess.run([*timer, *args], env=env, input=stdin or "", stdout=subprocess.DEVNULL, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}")
        kb = rss.read().strip().splitlines()
    return wall, (int(kb[-1]) / 1024 if timer and kb else float("nan"))


def whole_process(engines: list[tuple[str, Path, str, int]], checkpoint: str, repeats: int, threads: int) -> None:
    """Round-robin: each round runs every command once, `import torch` included (separate
    processes, so nothing of one run lingers into the next)."""
    lines = corpus_lines("test_2016_flickr", "en")
    one_sentence = "A man in an orange hat starring at something.\n"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "test.en", Path(tmp) / "out.de"
        src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        print(f"whole process, {threads} threads: `mtkit translate` of {len(lines)} sentences (wall s, "
              f"min / median / max), and of one sentence (start-up), over {repeats + 2} rounds")
        commands: list[tuple[str, list[str], str | None]] = []  # (label, command, stdin)
        for name, model, precision, concurrent in engines:
            if concurrent:  # the command line decodes one batch per thread
                continue
            base = [sys.executable, "-m", "mtkit", "translate", "-m", str(model), "--checkpoint", checkpoint,
                    "--precision", precision]
            commands += [(f"{name:19s} {search:7s}", [*base, "--beam", str(beam), "-i", str(src), "-o", str(out)], None)
                         for search, beam in SEARCHES]
            commands.append((f"{name:19s} one sentence", base, one_sentence))
        commands.append(("python -c 'import torch'", [sys.executable, "-c", "import torch"], None))
        runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in commands}
        for _ in range(repeats + 2):
            for label, command, stdin in commands:
                runs[label].append(run_process(command, threads, stdin))
        for label, command, _ in commands:
            walls = [w for w, _ in runs[label]]
            if "-i" in command:  # the 1,000 sentences; the others time start-up
                print(f"  {label} wall {summary(walls)} ({len(lines) / statistics.median(walls):.0f} sentences/s); "
                      f"peak RSS {statistics.median(r for _, r in runs[label]):.0f} MB", flush=True)
            else:
                print(f"  {label}: {summary(walls)} s", flush=True)


def check_against_uncached(model_dir: Path, checkpoint: str, lines: list[str]) -> None:
    model, tok, _ = load_for_inference(model_dir, checkpoint)
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dirs", type=Path, nargs="+")
    ap.add_argument("--checkpoint", default="averaged")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="in process only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # CTranslate2's threads in this process (mtkit.inference.ct2)
    if len(args.model_dirs) > 1:
        return ensemble(args)
    args.model_dir = args.model_dirs[0]
    print(f"{MULTI30K.name} test_2016_flickr, model {args.model_dir} ({args.checkpoint})")
    if args.device.startswith("cuda"):
        engines = [("mtkit fp32", args.model_dir, "fp32", 0), ("mtkit bf16", args.model_dir, "bf16", 0)]
        in_process(engines, args.device, args.checkpoint, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        engines = [("mtkit fp32", args.model_dir, "fp32", 0), ("mtkit int8", args.model_dir, "int8", 0),
                   ("mtkit int8 1 worker", args.model_dir, "int8", 1)]
        if importlib.util.find_spec("ctranslate2"):
            converted = Path(tmp) / "ct2"
            subprocess.run([sys.executable, "-m", "mtkit", "convert", "-m", str(args.model_dir), "-o", str(converted),
                            "--checkpoint", args.checkpoint, "--quantization", "int8"], check=True)
            engines += [("ctranslate2 int8", converted, "auto", 0), ("ct2 int8 1 worker", converted, "auto", 1)]
        # whole process first: CTranslate2's threads, once it has run in this process, take CPU
        # time from the processes it starts (the whole-process times came out ~1 s longer after it)
        if not args.quick:
            whole_process(engines, args.checkpoint, args.repeats, args.threads)
        in_process(engines, "cpu", args.checkpoint, args.repeats)
    if args.quick:
        return
    print("cached vs uncached (FullRecompute) search:")
    check_against_uncached(args.model_dir, args.checkpoint, corpus_lines("test_2016_flickr", "en"))


def ensemble(args: argparse.Namespace) -> None:
    """Each model alone, then all of them as one ensemble (mtkit's engine, fp32 and int8)."""
    from mtkit.model.directory import ModelRef

    names = " + ".join(str(m) for m in args.model_dirs)
    print(f"{MULTI30K.name} test_2016_flickr, ensemble of {names} ({args.checkpoint}), {args.device}")
    refs = [ModelRef(m, args.checkpoint) for m in args.model_dirs]
    precisions = ("fp32", "bf16") if args.device.startswith("cuda") else ("fp32", "int8")
    engines: list = [(f"{m.name} {p}", m, p, 0) for p in precisions for m in args.model_dirs]
    engines += [(f"ensemble of {len(refs)} {p}", refs, p, 0) for p in precisions]
    in_process(engines, args.device, args.checkpoint, args.repeats)


if __name__ == "__main__":
    main()
