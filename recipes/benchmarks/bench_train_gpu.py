"""Training throughput on a GPU: mtkit's update step vs a plain torch.nn.Transformer loop, one run.

For each configuration (preset, corpus, token budget) both train on the same length-bucketed
batches, bf16 autocast, AdamW, label smoothing 0.1, gradient clipping:

  mtkit        mtkit.training.update.Updater, the very step `mtkit train` runs (chunked fused loss, no host
               sync), eager and with --compile (each encoder and decoder layer compiled with dynamic shapes)
  nn.T         torch.nn.Transformer with the same embeddings/positions/tied output, F.cross_entropy,
               fused AdamW, as a user would write it (torch's default attention backends)

Corpora: `m30k` is Multi30k en-de with a joint 8k SentencePiece model (mtkit's data pipeline);
`wmt` is synthetic: WMT-like lengths (subwords per sentence ~ lognormal, mean ~27, at most 128,
target length within 20% of the source's), uniform random ids over a 32k vocabulary.
Rates are target tokens/s over windows of 10 updates timed between two device synchronisations
(min / median / max); MFU counts the matmul FLOPs of the real (unpadded) tokens, x3 for
forward + backward, against a bf16 matmul peak measured here (8192^3, median of 10).
Usage: python recipes/benchmarks/bench_train_gpu.py [--configs multi30k:m30k:8192 big:wmt:32768]
       [--variants eager compile torch] [--steps 60] [--pad-multiple 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch._dynamo.utils as dynamo_utils
import torch.nn.functional as F
from bench_model import TorchTransformer
from common import MULTI30K

from mtkit import config as C
from mtkit.data.batching import Batch, BatchIterator
from mtkit.data.corpus import Cleaning, EncodedCorpus, RaggedColumn
from mtkit.data.prepare import CorpusInput, prepare_cached
from mtkit.data.sources import TextPair
from mtkit.data.tokenizer import PAD_ID, Tokenizer, TokenizerOptions, train_tokenizer
from mtkit.model.loss import LabelSmoothedObjective
from mtkit.model.transformer import Transformer
from mtkit.runtime import Dist, Precision
from mtkit.training.update import Updater

WMT_VOCAB = 32000


def matmul_peak(n: int = 8192, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16), torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * n**3 / statistics.median(times)


def synthetic_corpus(n: int, seed: int = 0) -> EncodedCorpus:
    rng = np.random.default_rng(seed)
    src_len = np.clip(rng.lognormal(np.log(24), 0.55, n).astype(np.int64), 3, 127)
    tgt_len = np.clip((src_len * rng.uniform(0.8, 1.2, n)).astype(np.int64), 3, 127)

    def column(lengths: np.ndarray) -> RaggedColumn:
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = rng.integers(4, WMT_VOCAB, int(offsets[-1])).astype(np.int32)
        return RaggedColumn.of_chunks([offsets], [values])

    return EncodedCorpus.single(column(src_len), column(tgt_len))


def multi30k_corpus(work: Path) -> EncodedCorpus:
    pair = TextPair(MULTI30K / "train.en.gz", MULTI30K / "train.de.gz")
    train_tokenizer([pair.src], [pair.tgt], work / "tok", TokenizerOptions(8000))
    return prepare_cached([CorpusInput("train", pair)], Tokenizer.load(work / "tok"), Cleaning(), work / "cache")[0]


def batch_flops(cfg: C.ModelConfig, b: Batch) -> float:
    """Forward + backward matmul FLOPs of a batch's real tokens (attention over real lengths)."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.tgt_vocab_size
    s_len, t_len = b.src.ne(PAD_ID).sum(1).double(), b.tgt_out.ne(PAD_ID).sum(1).double()
    s_tok, t_tok = float(s_len.sum()), float(t_len.sum())
    enc = cfg.n_enc_layers * (s_tok * 2 * (4 * d * d + 2 * d * f) + 4 * d * float((s_len**2).sum()))
    dec = cfg.n_dec_layers * (t_tok * 2 * (6 * d * d + 2 * d * f) + s_tok * 2 * 2 * d * d
                              + 4 * d * float((t_len**2).sum()) + 4 * d * float((t_len * s_len).sum()))
    return 3 * (enc + dec + t_tok * 2 * d * v)


def time_windows(step, batches: list[Batch], warmup: int, window: int = 10) -> tuple[list[float], float]:
    """Target tokens/s of each window of `window` steps after `warmup` steps; and the warm-up's seconds."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i, b in enumerate(batches[:warmup]):
        step(b, i + 1)
    torch.cuda.synchronize()
    warm = time.perf_counter() - start
    rates = []
    for w in range(warmup, len(batches) - window + 1, window):
        chunk = batches[w:w + window]
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i, b in enumerate(chunk):
            step(b, w + i + 1)
        torch.cuda.synchronize()
        rates.append(sum(x.n_tgt_tokens for x in chunk) / (time.perf_counter() - start))
    return rates, warm


def mtkit_step(cfg: C.ModelConfig, compile: bool):
    torch.manual_seed(1)
    model = Transformer(cfg).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), fused=True)
    objective = LabelSmoothedObjective(model, 0.1, PAD_ID, compile=compile)
    update = Updater(model, objective, optimizer, torch.amp.GradScaler("cuda", enabled=False),
                     Precision("bf16", torch.bfloat16), torch.device("cuda"), Dist(),
                     C.TrainConfig(lr=5e-4, warmup=4000, clip_norm=1.0))
    dynamo_utils.counters.clear()
    return lambda b, i: update([b], 1e-3)


def torch_step(cfg: C.ModelConfig):
    torch.manual_seed(1)
    model = TorchTransformer(cfg).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), fused=True)

    def step(b: Batch, i: int) -> None:
        src, tgt_in, tgt_out = (t.pin_memory().cuda(non_blocking=True) for t in (b.src, b.tgt_in, b.tgt_out))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(src, tgt_in)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt_out.view(-1), ignore_index=PAD_ID,
                               label_smoothing=0.1, reduction="sum") / b.n_tgt_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def run_config(name: str, corpus: EncodedCorpus, vocab: int, max_tokens: int, variants: list[str], steps: int,
               pad_multiple: int, peak: float) -> list[dict]:
    preset, corpus_name, _ = name.split(":")
    cfg = C.preset(preset, src_vocab_size=vocab, tgt_vocab_size=vocab)
    it = iter(BatchIterator(corpus, max_tokens, seed=1, pad_multiple=pad_multiple))
    batches = [next(it) for _ in range(steps)]
    flops_per_token = sum(batch_flops(cfg, b) for b in batches) / sum(b.n_tgt_tokens for b in batches)
    shapes = len({(tuple(b.src.shape), tuple(b.tgt_in.shape)) for b in batches})
    rows = []
    for variant in variants:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            step = torch_step(cfg) if variant == "torch" else mtkit_step(cfg, compile=variant == "compile")
            rates, warm = time_windows(step, batches, warmup=10 if variant != "compile" else 20)
        except torch.OutOfMemoryError:
            print(f"{name:22s} {variant:8s} out of memory", flush=True)
            continue
        med = statistics.median(rates)
        row = {"config": name, "variant": variant, "min": min(rates), "median": med, "max": max(rates),
               "mfu": med * flops_per_token / peak, "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
               "warmup_s": warm, "distinct_shapes": shapes, "pad_multiple": pad_multiple}
        if variant == "compile":
            row["graphs"] = dynamo_utils.counters["stats"]["unique_graphs"]
        rows.append(row)
        extra = f" graphs {row['graphs']}" if "graphs" in row else ""
        print(f"{name:22s} {variant:8s} {row['min']:10,.0f} / {med:10,.0f} / {row['max']:10,.0f}  MFU {row['mfu']:6.1%}"
              f"  peak {row['peak_gb']:5.1f} GB  warm-up {warm:5.1f} s  shapes {shapes}{extra}", flush=True)
        del step
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", nargs="+", default=["multi30k:m30k:8192", "base:wmt:8192", "base:wmt:32768",
                                                     "big:wmt:16384", "big:wmt:32768"])
    ap.add_argument("--variants", nargs="+", default=["eager", "compile", "torch"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--pad-multiple", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_train_gpu.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s")
    print(f"{'preset:corpus:tokens':22s} {'variant':8s} {'tgt tok/s min / median / max':>36s}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpora: dict[str, tuple[EncodedCorpus, int]] = {}
        for name in args.configs:
            preset, corpus_name, tokens = name.split(":")
            if corpus_name not in corpora:
                corpora[corpus_name] = ((multi30k_corpus(Path(tmp)), 8000) if corpus_name == "m30k"
                                        else (synthetic_corpus(150_000), WMT_VOCAB))
            corpus, vocab = corpora[corpus_name]
            rows += run_config(name, corpus, vocab, int(tokens), args.variants, args.steps, args.pad_multiple, peak)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
