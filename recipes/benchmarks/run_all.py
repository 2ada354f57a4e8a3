"""`make bench`: every benchmark in one run, each printing min / median / max over its repeats.

  BLEU speed vs sacrebleu          recipes/benchmarks/bench_bleu.py
  corpus encoding pairs/s, RSS     recipes/benchmarks/bench_data.py
  model forward+backward tok/s     recipes/benchmarks/bench_model.py   (vs torch.nn.Transformer)
  training tgt tok/s and MFU       recipes/benchmarks/bench_train.py   (vs torch.nn.Transformer)
  decoding sentences/s, RSS        recipes/benchmarks/bench_decode.py  (needs a trained `small` model)

Decoding needs a model: pass --model-dir DIR (a model directory with checkpoints/averaged.pt),
or this script trains one on Multi30k for --train-seconds (default 600) first.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def section(title: str, script: str, *args: str) -> None:
    print(f"\n=== {title} ({script})", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True, cwd=HERE)


def train_small(directory: Path, seconds: int) -> Path:
    from common import MULTI30K

    model = directory / "model"
    precision = "bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "fp32"
    subprocess.run([sys.executable, "-m", "mtkit", "train", "-o", str(model), "--src", str(MULTI30K / "train.en.gz"),
                    "--tgt", str(MULTI30K / "train.de.gz"), "--preset", "small", "--max-tokens", "4096",
                    "--lr", "0.0007", "--warmup", "400", "--max-time", str(seconds), "--save-every", "100",
                    "--keep-last", "5", "--precision", precision, "--quiet"], check=True)
    subprocess.run([sys.executable, "-m", "mtkit", "average", "-m", str(model), "--last", "5"], check=True)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path)
    ap.add_argument("--train-seconds", type=int, default=600)
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    section("BLEU: mtkit vs sacrebleu", "bench_bleu.py")
    section("corpus encoding", "bench_data.py")
    section("model forward+backward, fp32", "bench_model.py", "small", "base")
    section("model forward+backward, bf16", "bench_model.py", "small", "base", "--precision", "bf16")
    section("training", "bench_train.py")
    with tempfile.TemporaryDirectory() as tmp:
        # the sections run in recipes/benchmarks: a relative --model-dir means the caller's directory
        model = args.model_dir.resolve() if args.model_dir else train_small(Path(tmp), args.train_seconds)
        section("decoding", "bench_decode.py", str(model))


if __name__ == "__main__":
    main()
