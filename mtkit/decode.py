"""Greedy and batched beam search with the decoder's KV cache, and `translate(lines)`.

Scores. A hypothesis y (its tokens followed by eos) scores  log p(y | x) / |y| ** alpha  where |y|
counts the eos: fairseq's `--lenpen` and Marian's `--normalize` (alpha 1, the default, is the mean
log-probability per token; alpha 0 the plain log-probability).
The log-probabilities are the model's own (log-softmax over the whole vocabulary): pad and bos
are only excluded from the search, so a full forward pass over y rescores it to the same number.

Beam search keeps `beam` live hypotheses per sentence. A candidate ending in eos that ranks
among the top `beam` of a step is finished. A sentence stops when `beam` hypotheses have
finished, or when its `nbest`-th best finished score is at least the best score any live
hypothesis could still reach (its log-probability can only fall, so the bound is its current
log-probability over the largest length penalty it could still get). With beam 1 this is greedy
search exactly. Finished sentences leave the batch, so the batch shrinks as decoding goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mtkit.batching import pad_sequences
from mtkit.config import DecodeConfig
from mtkit.model import Transformer
from mtkit.runtime import autocast
from mtkit.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer


def length_penalty(n: int, alpha: float) -> float:
    return n**alpha


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos and eos
    logprob: float  # log p(tokens + eos | source)
    score: float  # logprob / length_penalty(len(tokens) + 1)


@dataclass
class Translation:
    text: str
    tokens: list[int]
    score: float
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score), best first


def _next_logprobs(model: Transformer, tokens: Tensor, state, forced_eos: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, V) log-probabilities of the next token, and the same with the tokens the search may
    not pick set to -inf (pad, bos; for rows in forced_eos everything but eos)."""
    logprobs = F.log_softmax(model.decode_step(tokens, state).float(), dim=-1)  # (rows, V)
    search = logprobs.clone()
    search[:, PAD_ID] = search[:, BOS_ID] = float("-inf")
    search[forced_eos] = torch.where(
        torch.arange(search.size(1), device=search.device) == EOS_ID, search[forced_eos], float("-inf")
    )
    return logprobs, search


def max_lengths(src: Tensor, cfg: DecodeConfig, model: Transformer) -> Tensor:
    """(batch,) most output tokens (eos included) for each sentence: a * source length + b."""
    src_len = src.ne(PAD_ID).sum(1)
    limit = (cfg.max_len_a * src_len.float() + cfg.max_len_b).long().clamp(min=1)
    return limit.clamp(max=model.cfg.max_positions)


@torch.inference_mode()
def greedy(model: Transformer, src: Tensor, cfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Most probable next token at each step, until eos (or the length limit)."""
    batch, device = src.size(0), src.device
    limit = max_lengths(src, cfg, model)
    state = model.start_state(model.encode(src), src.eq(PAD_ID))
    tokens = torch.full((batch,), BOS_ID, dtype=torch.long, device=device)
    logprob = torch.zeros(batch, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    out = torch.zeros(batch, 0, dtype=torch.long, device=device)
    for t in range(int(limit.max())):
        logprobs, search = _next_logprobs(model, tokens, state, limit.eq(t + 1))
        tokens = search.argmax(-1).masked_fill(done, PAD_ID)
        logprob += logprobs.gather(1, tokens.clamp(min=0)[:, None]).squeeze(1).masked_fill(done, 0.0)
        out = torch.cat([out, tokens[:, None]], 1)
        done |= tokens.eq(EOS_ID)
        if done.all():
            break
    results = []
    for row, lp in zip(out.tolist(), logprob.tolist()):
        ids = row[: row.index(EOS_ID)] if EOS_ID in row else row
        results.append([Hypothesis(ids, lp, lp / length_penalty(len(ids) + 1, cfg.length_penalty))])
    return results


@torch.inference_mode()
def beam_search(model: Transformer, src: Tensor, cfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Up to cfg.nbest hypotheses per sentence, best first."""
    batch, k, device = src.size(0), cfg.beam, src.device
    limit = max_lengths(src, cfg, model)
    memory = model.encode(src).repeat_interleave(k, dim=0)  # (batch*k, src_len, d_model)
    state = model.start_state(memory, src.eq(PAD_ID).repeat_interleave(k, dim=0))
    active = torch.arange(batch, device=device)  # sentences still searching
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: expand only the first
    prefixes = torch.full((batch * k, 1), BOS_ID, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for t in range(int(limit.max())):
        n = active.numel()
        lim = limit[active]
        forced = lim.eq(t + 1).repeat_interleave(k)
        logprobs, search = _next_logprobs(model, prefixes[:, -1], state, forced)
        vocab = logprobs.size(1)
        cand = (scores.view(-1, 1) + search).view(n, k * vocab)  # (n, k*V) log-probabilities
        top, idx = cand.topk(2 * k, dim=1)  # (n, 2k)
        beam_of, token = idx // vocab, idx % vocab
        is_eos = token.eq(EOS_ID) & torch.isfinite(top)
        _collect_finished(finished, active, top, beam_of, prefixes, is_eos, k, t, cfg)
        # the k best candidates that do not end: stable sort puts non-eos first, keeping score order
        order = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :k]  # (n, k)
        rows = (torch.arange(n, device=device)[:, None] * k + beam_of.gather(1, order)).view(-1)
        scores = top.gather(1, order)
        prefixes = torch.cat([prefixes[rows], token.gather(1, order).view(-1, 1)], 1)
        state.reorder(rows)
        keep = ~_sentence_done(finished, active, scores, lim, t, cfg)
        if not keep.any():
            break
        if not keep.all():
            rows = (keep.nonzero().squeeze(1)[:, None] * k + torch.arange(k, device=device)).view(-1)
            active, scores, prefixes = active[keep], scores[keep], prefixes[rows]
            state.reorder(rows)
    return [sorted(hyps, key=lambda h: -h.score)[: cfg.nbest] for hyps in finished]


def _collect_finished(finished, active, top, beam_of, prefixes, is_eos, k: int, t: int, cfg: DecodeConfig) -> None:
    """Candidates ending in eos among a sentence's top k become finished hypotheses."""
    hits = (is_eos[:, :k]).nonzero().tolist()
    for row, col in hits:
        sentence = int(active[row])
        if len(finished[sentence]) >= k:
            continue
        tokens = prefixes[row * k + int(beam_of[row, col]), 1:].tolist()
        logprob = float(top[row, col])
        finished[sentence].append(Hypothesis(tokens, logprob, logprob / length_penalty(t + 1, cfg.length_penalty)))


def _sentence_done(finished, active, scores: Tensor, lim: Tensor, t: int, cfg: DecodeConfig) -> Tensor:
    """(n,) True where a sentence has k finished hypotheses or no live one can beat its nbest-th."""
    done = []
    for row, sentence in enumerate(active.tolist()):
        hyps = finished[sentence]
        if len(hyps) >= cfg.beam or t + 1 >= int(lim[row]):  # k ended, or the length limit was reached
            done.append(True)
            continue
        if len(hyps) < cfg.nbest:
            done.append(False)
            continue
        nth = sorted((h.score for h in hyps), reverse=True)[cfg.nbest - 1]
        best_lp = max(length_penalty(t + 2, cfg.length_penalty), length_penalty(int(lim[row]), cfg.length_penalty))
        done.append(nth >= float(scores[row].max()) / best_lp)
    return torch.tensor(done, device=scores.device)


def search(model: Transformer, src: Tensor, cfg: DecodeConfig) -> list[list[Hypothesis]]:
    return greedy(model, src, cfg) if cfg.beam == 1 else beam_search(model, src, cfg)


# ----------------------------------------------------------------------------- translate
@dataclass
class TranslateStats:
    sentences: int = 0
    truncated: int = 0  # source lines cut to the model's maximum length
    tgt_tokens: int = 0


def _batches(lengths: list[int], max_tokens: int, beam: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches of at most max_tokens (source tokens x beam)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * (lengths[i] + 1) * beam > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def translate_chunk(
    model: Transformer, tokenizer: Tokenizer, lines: list[str], cfg: DecodeConfig, stats: TranslateStats,
    device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
) -> list[Translation]:
    """Translations of lines, in input order; empty lines give empty translations."""
    max_src = model.cfg.max_positions - 1  # room for eos
    ids = tokenizer.encode_src(lines)
    for i, seq in enumerate(ids):
        if len(seq) > max_src:
            ids[i], stats.truncated = seq[:max_src], stats.truncated + 1
    results: list[Translation | None] = [Translation("", [], 0.0) if not seq else None for seq in ids]
    todo = [i for i, seq in enumerate(ids) if seq]
    device_type = torch.device(device).type
    for batch in _batches([len(ids[i]) for i in todo], cfg.max_tokens, cfg.beam):
        rows = [todo[j] for j in batch]
        src = pad_sequences([ids[i] for i in rows], suffix=EOS_ID).to(device)
        with autocast(device_type, autocast_dtype):
            hyps = search(model, src, cfg)
        for i, nbest in zip(rows, hyps):
            texts = tokenizer.decode_tgt([h.tokens for h in nbest])
            results[i] = Translation(texts[0], nbest[0].tokens, nbest[0].score,
                                     [(txt, h.score) for txt, h in zip(texts, nbest)])
            stats.tgt_tokens += len(nbest[0].tokens) + 1
    stats.sentences += len(lines)
    return results  # type: ignore[return-value]


def translate(
    model: Transformer, tokenizer: Tokenizer, lines: Iterable[str], cfg: DecodeConfig,
    stats: TranslateStats | None = None, chunk_size: int = 10000, **kw,
) -> Iterator[Translation]:
    """Stream translations in input order, reading `chunk_size` lines at a time."""
    stats = stats if stats is not None else TranslateStats()
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == chunk_size:
            yield from translate_chunk(model, tokenizer, chunk, cfg, stats, **kw)
            chunk = []
    if chunk:
        yield from translate_chunk(model, tokenizer, chunk, cfg, stats, **kw)


@torch.inference_mode()
def rescore(model: Transformer, src_ids: list[int], tokens: list[int], alpha: float) -> float:
    """log p(tokens + eos | src) / lp by one full forward pass (to check search scores)."""
    src = torch.tensor([src_ids + [EOS_ID]])
    tgt_in = torch.tensor([[BOS_ID] + tokens])
    tgt_out = torch.tensor([tokens + [EOS_ID]])
    logprobs = F.log_softmax(model(src, tgt_in).float(), dim=-1)
    total = logprobs.gather(2, tgt_out[..., None]).sum().item()
    return total / length_penalty(len(tokens) + 1, alpha)


@dataclass
class AttentionMap:
    src_pieces: list[str]  # source pieces, then "</s>"
    tgt_pieces: list[str]  # output pieces, then "</s>"
    weights: list[list[float]]  # (tgt, src): mean over layers and heads
    translation: str


@torch.inference_mode()
def cross_attention(model: Transformer, tokenizer: Tokenizer, sentence: str, max_len: int = 200) -> AttentionMap:
    """Greedy translation of one sentence with its cross-attention recorded at every step."""
    ids = tokenizer.encode_src([sentence])[0][: model.cfg.max_positions - 1]
    src = torch.tensor([ids + [EOS_ID]])
    state = model.start_state(model.encode(src), src.eq(PAD_ID), record_attention=True)
    token, out = torch.tensor([BOS_ID]), []
    for _ in range(min(max_len, model.cfg.max_positions)):
        logits = model.decode_step(token, state)
        logits[:, PAD_ID] = logits[:, BOS_ID] = float("-inf")
        token = logits.argmax(-1)
        if int(token) == EOS_ID:
            break
        out.append(int(token))
    assert state.attention is not None
    weights = torch.stack(state.attention)[:, 0].tolist()  # (steps, src_len)
    return AttentionMap([tokenizer.src.id_to_piece(i) for i in ids] + ["</s>"],
                        [tokenizer.tgt.id_to_piece(i) for i in out] + ["</s>"], weights,
                        tokenizer.decode_tgt([out])[0])


class FullRecompute:
    """A stand-in for the model in `greedy`/`beam_search` that keeps no KV cache: every step
    re-runs the decoder over the whole prefix. Slow on purpose; it checks the cached path."""

    def __init__(self, model: Transformer):
        self.model, self.cfg = model, model.cfg

    def encode(self, src: Tensor) -> Tensor:
        return self.model.encode(src)

    def start_state(self, memory: Tensor, src_pad_mask: Tensor) -> _Prefix:
        return _Prefix(memory, src_pad_mask, None)

    def decode_step(self, tokens: Tensor, state: _Prefix) -> Tensor:
        step = tokens[:, None]
        state.tokens = step if state.tokens is None else torch.cat([state.tokens, step], 1)
        return self.model.output(self.model.decode(state.tokens, state.memory, state.src_pad_mask)[:, -1])


@dataclass
class _Prefix:
    memory: Tensor
    src_pad_mask: Tensor
    tokens: Tensor | None

    def reorder(self, index: Tensor) -> None:
        self.memory, self.src_pad_mask = self.memory.index_select(0, index), self.src_pad_mask.index_select(0, index)
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, index)
