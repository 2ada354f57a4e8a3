"""Forward+backward speed of mtkit's Transformer vs torch.nn.Transformer of the same size.

Both get the same length-bucketed batches from Multi30k-like lengths (~4096 tokens per side),
the same embeddings/output layer shape and a cross-entropy loss; we time forward + backward +
zero_grad (no optimiser) and report target tokens/s, min/median/max over repeats.
Usage: python recipes/benchmarks/bench_model.py [small base] [--precision fp32|bf16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.config import preset
from mtkit.data.tokenizer import PAD_ID
from mtkit.model.transformer import Transformer

VOCAB = 8000


class TorchTransformer(nn.Module):
    """torch.nn.Transformer with the same embeddings, positions and tied output as mtkit's."""

    def __init__(self, cfg):
        super().__init__()
        self.embed = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=PAD_ID)
        with warnings.catch_warnings():  # norm_first turns off the nested-tensor fast path: expected here
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            self.core = nn.Transformer(cfg.d_model, cfg.n_heads, cfg.n_enc_layers, cfg.n_dec_layers, cfg.d_ff,
                                       cfg.dropout, batch_first=True, norm_first=cfg.norm == "pre")
        self.register_buffer("pos", torch.randn(1024, cfg.d_model) * 0.02, persistent=False)
        self.scale = math.sqrt(cfg.d_model)

    def forward(self, src, tgt):
        s = self.embed(src) * self.scale + self.pos[: src.size(1)]
        t = self.embed(tgt) * self.scale + self.pos[: tgt.size(1)]
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.size(1), device=tgt.device, dtype=torch.bool)
        h = self.core(s, t, tgt_mask=causal, src_key_padding_mask=src.eq(PAD_ID),
                      tgt_key_padding_mask=tgt.eq(PAD_ID), memory_key_padding_mask=src.eq(PAD_ID), tgt_is_causal=True)
        return h @ self.embed.weight.t()


def batches(n: int, max_tokens: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tgt_len = int(torch.randint(10, 20, (1,), generator=g))
        src_len = tgt_len + int(torch.randint(-2, 3, (1,), generator=g))
        bsz = max_tokens // max(src_len, tgt_len)
        out.append((torch.randint(4, VOCAB, (bsz, src_len), generator=g), torch.randint(4, VOCAB, (bsz, tgt_len), generator=g)))
    return out


def step_time(model: nn.Module, src, tgt, device: str, dtype) -> float:
    src, tgt = src.to(device), tgt.to(device)
    start = time.perf_counter()
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        logits = model(src, tgt)
        loss = F.cross_entropy(logits.float().view(-1, VOCAB), tgt.reshape(-1))
    loss.backward()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(model: nn.Module, data, device: str, dtype, repeats: int) -> list[float]:
    model.train()
    for src, tgt in data[:2]:
        step_time(model, src, tgt, device, dtype)  # warm up
    rates = []
    for _ in range(repeats):
        tokens, seconds = 0, 0.0
        for src, tgt in data:
            seconds += step_time(model, src, tgt, device, dtype)
            tokens += tgt.numel()
        rates.append(tokens / seconds)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="*", default=["small", "base"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=4096)
    args = ap.parse_args()
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    data = batches(args.batches, args.max_tokens)
    print(f"device {args.device}, {args.precision}, threads {torch.get_num_threads()}, "
          f"{args.batches} batches of ~{args.max_tokens} tokens, {args.repeats} repeats (target tokens/s)")
    for name in args.presets:
        cfg = preset(name, src_vocab_size=VOCAB, tgt_vocab_size=VOCAB)
        torch.manual_seed(0)
        ours = Transformer(cfg).to(args.device)
        theirs = TorchTransformer(cfg).to(args.device)
        r_ours = measure(ours, data, args.device, dtype, args.repeats)
        r_theirs = measure(theirs, data, args.device, dtype, args.repeats)
        ratio = statistics.median(r_ours) / statistics.median(r_theirs)
        print(f"{name:6s} mtkit           {min(r_ours):8.0f} / {statistics.median(r_ours):8.0f} / {max(r_ours):8.0f}")
        print(f"{name:6s} nn.Transformer  {min(r_theirs):8.0f} / {statistics.median(r_theirs):8.0f} / {max(r_theirs):8.0f}"
              f"   mtkit/nn.Transformer = {ratio:.2f}x")


if __name__ == "__main__":
    main()
