"""Sampling: each token drawn from the model's distribution (tempered, truncated to the top k and
to the nucleus p), with random numbers that depend only on (seed, line number, sample, step), so
that a sentence's samples are the same in any batch and any process (back-translation).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtkit.config import DecodeConfig
from mtkit.data.tokenizer import PAD_ID
from mtkit.inference.search import Hypothesis, Searchable, decode_rows, max_lengths

SPLITMIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def uniforms(seed: int, lines: np.ndarray, samples: np.ndarray, step: int) -> np.ndarray:
    """(rows,) float64 in [0, 1): a random number for each row from (seed, its line, its sample,
    the step) alone -- a counter-based generator (SplitMix64 of the mixed counters), so that a
    sentence's samples do not depend on its batch, its place in it, or the process."""
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) * np.uint64(0xD1B54A32D192ED03) + lines.astype(np.uint64) * np.uint64(0xABC98388FB8FAC03)
             + samples.astype(np.uint64) * np.uint64(0x8CB92BA72F3D8DD7) + np.uint64(step) * np.uint64(SPLITMIX[0]))
        for _ in range(2):
            x = x + np.uint64(SPLITMIX[0])
            x = (x ^ (x >> np.uint64(30))) * np.uint64(SPLITMIX[1])
            x = (x ^ (x >> np.uint64(27))) * np.uint64(SPLITMIX[2])
            x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _sample_tokens(logprobs: Tensor, u: Tensor, cfg: DecodeConfig) -> Tensor:
    """(rows,) one token per row drawn from softmax(logprobs / temperature), restricted to the
    `topk` most probable (0: all) and then to the smallest set of them whose probability reaches
    `topp` (nucleus), by inverting the cumulative distribution at u (rows,)."""
    scaled = logprobs / cfg.temperature
    if cfg.topk or cfg.topp < 1.0:  # candidates by decreasing probability (ties: lower id first)
        k = min(cfg.topk or scaled.size(1), scaled.size(1))
        values, ids = torch.sort(scaled, dim=1, descending=True, stable=True)
        values, ids = values[:, :k], ids[:, :k]
    else:
        values, ids = scaled, None
    probs = torch.softmax(values, dim=1)
    cumulative = probs.cumsum(dim=1)
    if cfg.topp < 1.0:  # keep the first candidates until their mass reaches topp (at least one)
        outside = (cumulative - probs) >= cfg.topp
        probs = probs.masked_fill(outside, 0.0)
        cumulative = probs.cumsum(dim=1)
    target = (u.to(cumulative.dtype) * cumulative[:, -1]).unsqueeze(1)  # (rows, 1)
    pick = torch.searchsorted(cumulative, target, right=True).clamp_(max=cumulative.size(1) - 1)
    while True:  # a zero-probability candidate is never picked (a flat run of the cumulative sum)
        zero = probs.gather(1, pick).squeeze(1).eq(0) & pick.squeeze(1).gt(0)
        if not bool(zero.any()):
            break
        pick[zero] -= 1
    return pick.squeeze(1) if ids is None else ids.gather(1, pick).squeeze(1)


@torch.inference_mode()
def sample(model: Searchable, src: Tensor, cfg: DecodeConfig, lines: list[int]) -> list[list[Hypothesis]]:
    """cfg.nbest samples per sentence, each drawn token by token (see _sample_tokens) with the
    random numbers of (cfg.seed, the sentence's line number, the sample's number, the step): the
    same whatever the batch. Samples are in the order drawn; scores are the model's own
    log-probabilities (without temperature or truncation), as beam search reports them."""
    n = cfg.nbest
    rows_src = src.repeat_interleave(n, dim=0)  # sentence i's samples are rows i*n .. i*n + n-1
    state = model.start_state(model.encode(rows_src), rows_src.eq(PAD_ID))
    row_line = np.repeat(np.asarray(lines, dtype=np.int64), n)
    row_sample = np.tile(np.arange(n), len(lines))

    def draw(logprobs: Tensor, logprob: Tensor, rows: list[int], t: int) -> tuple[Tensor, Tensor]:
        u = torch.from_numpy(uniforms(cfg.seed, row_line[rows], row_sample[rows], t)).to(src.device)
        tokens = _sample_tokens(logprobs, u, cfg)
        return logprob + logprobs.gather(1, tokens[:, None]).squeeze(1).double(), tokens

    limits = max_lengths(rows_src, cfg, model).tolist()
    logprob = torch.zeros(len(limits), dtype=torch.float64, device=src.device)
    results = decode_rows(model, state, limits, logprob, draw, cfg.length_penalty)
    return [[h for h in results[i * n:(i + 1) * n] if h is not None] for i in range(len(lines))]
