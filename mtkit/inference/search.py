"""Greedy and batched beam search with the decoder's KV cache (mtkit.inference.translate runs them
over lines of text).

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
search exactly. In both searches finished sentences leave the batch, so the batch shrinks as
decoding goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtkit.config import DecodeConfig, ModelConfig
from mtkit.data.batching import pad_sequences
from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from mtkit.model.transformer import Transformer


class Searchable(Protocol):
    """What greedy and beam search need of a model: the Transformer, or the uncached FullRecompute."""

    cfg: ModelConfig

    def encode(self, src: Tensor) -> Tensor: ...

    def start_state(self, memory: Tensor, src_pad_mask: Tensor, beams: int = 1) -> Any: ...  # has reorder(index, same_sources)

    def decode_step(self, tokens: Tensor, state: Any) -> Tensor: ...


def length_penalty(n: int, alpha: float) -> float:
    return n**alpha


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos and eos
    logprob: float  # log p(tokens + eos | source)
    score: float  # logprob / length_penalty(len(tokens) + 1)


def _next_logprobs(model: Searchable, tokens: Tensor, state: Any, forced_eos: list[int]) -> Tensor:
    """(rows, V) log-probabilities of the next token, with the tokens the search may not pick set
    to -inf (pad, bos; for the rows listed in forced_eos, which reached their length limit,
    everything but eos); every other token keeps its model log-probability. Masked in place; the
    rows to force come from the host, so nothing waits for a GPU."""
    logprobs = F.log_softmax(model.decode_step(tokens, state).float(), dim=-1)  # (rows, V)
    logprobs[:, PAD_ID] = logprobs[:, BOS_ID] = float("-inf")
    if forced_eos:
        rows = torch.as_tensor(forced_eos).to(logprobs.device, non_blocking=True)
        eos = logprobs[rows, EOS_ID]
        logprobs[rows] = float("-inf")
        logprobs[rows, EOS_ID] = eos
    return logprobs


BLOCK = 64  # vocabulary columns per block in _best_candidates


def _best_candidates(logprobs: Tensor, scores: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The `count` best continuations of each sentence, best first, as (n, count) tensors: their
    log-probabilities (hypothesis + next token), the beam each extends, and its token.
    logprobs (n*k, V): next-token log-probabilities of the k live hypotheses of n sentences;
    scores (n, k): those hypotheses' log-probabilities.

    torch.topk on a CPU costs ~1.3 us per 1,000 values, its max with indices as much; the top
    `count` continuations lie in the `count` blocks of BLOCK columns whose best continuation ranks
    highest (each such block holds one at least as good as anything outside them), so a CPU ranks
    block maxima (a fast reduction), then the candidates of those blocks only: 3-7x faster
    (Multi30k's 8k vocabulary, beam 5 and greedy). Ties may be broken otherwise than by one top-k."""
    n, k = scores.shape
    vocab = logprobs.size(1)
    if logprobs.device.type != "cpu" or vocab < 4 * BLOCK:  # a GPU's top-k is fast; a tiny vocabulary
        per_beam = min(count, vocab)  # the best of a sentence are among the best of each beam
        best, best_token = logprobs.topk(per_beam, dim=1)  # (n*k, per_beam)
        top, idx = (scores.view(-1, 1) + best).view(n, k * per_beam).topk(count, dim=1)
        return top, idx // per_beam, best_token.view(n, k * per_beam).gather(1, idx)
    if vocab % BLOCK:
        logprobs = F.pad(logprobs, (0, -vocab % BLOCK), value=float("-inf"))
    blocks_per_beam = logprobs.size(1) // BLOCK
    blocks = logprobs.view(n, k * blocks_per_beam, BLOCK)
    block_best = blocks.amax(-1).view(n, k, blocks_per_beam).add_(scores[:, :, None]).view(n, -1)
    chosen = block_best.topk(count, dim=1).indices  # (n, count): block numbers, beam-major
    cand = blocks.gather(1, chosen[:, :, None].expand(n, count, BLOCK))
    cand += scores.gather(1, chosen // blocks_per_beam)[:, :, None]  # (n, count, BLOCK)
    top, pos = cand.view(n, count * BLOCK).topk(count, dim=1)
    block = chosen.gather(1, pos // BLOCK)
    return top, block // blocks_per_beam, block % blocks_per_beam * BLOCK + pos % BLOCK


def max_lengths(src: Tensor, cfg: DecodeConfig, model: Searchable) -> Tensor:
    """(batch,) most output tokens (eos included) for each sentence: a * source length + b."""
    src_len = src.ne(PAD_ID).sum(1)
    limit = (cfg.max_len_a * src_len.float() + cfg.max_len_b).long().clamp(min=1)
    return limit.clamp(max=model.cfg.max_positions)


@torch.inference_mode()
def greedy(model: Searchable, src: Tensor, cfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Most probable next token at each step, until eos (or the length limit)."""
    return _greedy(model, src, cfg, model.start_state(model.encode(src), src.eq(PAD_ID)))


def _greedy(model: Searchable, src: Tensor, cfg: DecodeConfig, state: Any) -> list[list[Hypothesis]]:
    def best(logprobs: Tensor, logprob: Tensor, rows: list[int], t: int) -> tuple[Tensor, Tensor]:
        top, _, tokens = _best_candidates(logprobs, logprob[:, None], 1)
        return top[:, 0], tokens[:, 0]

    limits = max_lengths(src, cfg, model).tolist()
    hyps = decode_rows(model, state, limits, torch.zeros(src.size(0), device=src.device), best, cfg.length_penalty)
    return [[h] if h is not None else [] for h in hyps]


Pick = Callable[[Tensor, Tensor, list[int], int], tuple[Tensor, Tensor]]


def decode_rows(model: Searchable, state: Any, limits: list[int], logprob: Tensor, pick: Pick,
                alpha: float) -> list[Hypothesis | None]:
    """One hypothesis per decoder row (greedy search, sampling), each next token chosen by
    pick(logprobs (rows, V), logprob (rows,), rows, t) -> (the rows' log-probabilities with it,
    tokens), where `rows` are the original numbers of the rows still decoding and t the step. Rows
    leave the batch as they end (their eos, or eos forced at their length limit, limits[row])."""
    device = logprob.device
    alive = list(range(len(limits)))  # the original row of each row still decoding
    prefixes: list[list[int]] = [[] for _ in limits]  # host: each row's tokens so far
    tokens = torch.full((len(limits),), BOS_ID, dtype=torch.long, device=device)
    results: list[Hypothesis | None] = [None] * len(limits)
    for t in range(max(limits)):
        forced = [i for i, row in enumerate(alive) if limits[row] == t + 1]
        logprob, tokens = pick(_next_logprobs(model, tokens, state, forced), logprob, alive, t)
        tokens_host = tokens.tolist()  # the one transfer of a step
        for row, token in zip(alive, tokens_host):
            prefixes[row].append(token)
        ended = [i for i, token in enumerate(tokens_host) if token == EOS_ID]
        if not ended:
            continue
        logprob_host = logprob.tolist()
        for i in ended:
            ids, lp = prefixes[alive[i]][:-1], logprob_host[i]
            results[alive[i]] = Hypothesis(ids, lp, lp / length_penalty(len(ids) + 1, alpha))
        keep = [i for i, token in enumerate(tokens_host) if token != EOS_ID]
        if not keep:
            break
        index = torch.tensor(keep, device=device)
        tokens, logprob = tokens[index], logprob[index]
        state.reorder(index)
        alive = [alive[i] for i in keep]
    return results


@dataclass
class _Beams:
    """The live hypotheses of the sentences still searching, in three index spaces:

        sentence  a sentence's place in the batch (`finished`, the length limits)
        row       its place among the sentences still searching: sentences[row] is its sentence
        hyp       row * k + beam: a live hypothesis, and the decoder row that extends it

    The device holds what the next step computes with (scores, last tokens); the host the tokens
    so far and which sentence each row is."""

    k: int
    sentences: list[int]  # row -> sentence
    scores: Tensor  # (rows, k) log-probabilities of the live hypotheses
    last: Tensor  # (rows * k,) their last tokens
    prefixes: np.ndarray  # (rows * k, t) host: their tokens so far (no bos)

    @classmethod
    def start(cls, batch: int, k: int, device: torch.device) -> _Beams:
        scores = torch.full((batch, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # all beams start equal: expand only the first
        return cls(k, list(range(batch)), scores, torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device),
                   np.zeros((batch * k, 0), dtype=np.int64))

    def at_limit(self, limits: list[int], t: int) -> list[int]:
        """The hyps whose sentence may have no more tokens after this step's: eos is forced."""
        k = self.k
        return [row * k + b for row, s in enumerate(self.sentences) if limits[s] == t + 1 for b in range(k)]

    def extend(self, step: _StepOnHost) -> None:
        """The host's half of a step: each new hyp's tokens are its previous hyp's plus its token."""
        self.prefixes = np.concatenate([self.prefixes[step.hyps], step.last[:, None]], axis=1)

    def keep(self, keep: np.ndarray, state: Any, hyps: Tensor) -> None:
        """Only the rows where `keep` (rows,) is True go on searching (and decoding). hyps (rows * k,):
        the decoder row each new hypothesis extends (the state still has the step's old rows)."""
        kept = np.flatnonzero(keep)
        kept_hyps = (kept[:, None] * self.k + np.arange(self.k)).reshape(-1)
        device = self.scores.device
        kept_dev, kept_hyps_dev = (torch.from_numpy(x).to(device, non_blocking=True) for x in (kept, kept_hyps))
        self.scores, self.last = self.scores[kept_dev], self.last[kept_hyps_dev]
        state.reorder(hyps[kept_hyps_dev])
        self.sentences, self.prefixes = [self.sentences[i] for i in kept], self.prefixes[kept_hyps]


@torch.inference_mode()
def beam_search(model: Searchable, src: Tensor, cfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Up to cfg.nbest hypotheses per sentence, best first.

    The device scores and ranks the candidates; the host keeps the hypotheses' tokens and decides
    when a sentence is done, from one small transfer per step (so a GPU waits once per step)."""
    batch, k, device = src.size(0), cfg.beam, src.device
    limit_host = max_lengths(src, cfg, model).tolist()  # (batch,) most output tokens
    state = model.start_state(model.encode(src), src.eq(PAD_ID), beams=k)  # k decoder rows per sentence
    beams = _Beams.start(batch, k, device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for t in range(max(limit_host)):
        n = len(beams.sentences)
        logprobs = _next_logprobs(model, beams.last, state, beams.at_limit(limit_host, t))
        top, beam_of, token = _best_candidates(logprobs, beams.scores, 2 * k)  # (n, 2k)
        is_eos = token.eq(EOS_ID) & torch.isfinite(top)
        # the k best candidates that do not end: stable sort puts non-eos first, keeping score order
        order = torch.sort(is_eos.int(), dim=1, stable=True).indices[:, :k]  # (n, k)
        hyps = (torch.arange(n, device=device)[:, None] * k + beam_of.gather(1, order)).view(-1)
        beams.scores, beams.last = top.gather(1, order), token.gather(1, order).view(-1)
        step = _StepOnHost.read(top[:, :k], beam_of[:, :k], is_eos[:, :k], hyps.view(n, k), beams.last.view(n, k),
                                beams.scores)
        _collect_finished(finished, beams.sentences, beams.prefixes, step, k, t, cfg)
        beams.extend(step)
        keep = ~_sentences_done(finished, beams.sentences, step.best_live, limit_host, t, cfg)
        if not keep.any():
            break
        if keep.all():
            state.reorder(hyps, same_sources=True)
        else:  # the beams reordered and the finished sentences' rows dropped in one copy of the caches
            beams.keep(keep, state, hyps)
    return [sorted(hyps, key=lambda h: -h.score)[: cfg.nbest] for hyps in finished]


@dataclass
class _StepOnHost:
    """What the host needs of one beam-search step, fetched in one transfer: every column packed
    into one int32 matrix (log-probabilities by their bits), so that nothing is rounded."""

    top: np.ndarray  # (n, k) float32: log-probabilities of the k best candidates
    beam_of: np.ndarray  # (n, k) the beam each extends
    is_eos: np.ndarray  # (n, k) bool: the candidate ends the hypothesis
    hyps: np.ndarray  # (n*k,) the previous hyp of each new live hypothesis
    last: np.ndarray  # (n*k,) their new last tokens
    best_live: np.ndarray  # (n,) float32: each sentence's best live log-probability

    # the packed matrix's columns, in order: (field, one column per beam (else one), float32 bits (else integers))
    LAYOUT = (("top", True, True), ("beam_of", True, False), ("is_eos", True, False), ("hyps", True, False),
              ("last", True, False), ("best_live", False, True))

    @classmethod
    def read(cls, top: Tensor, beam_of: Tensor, is_eos: Tensor, hyps: Tensor, last: Tensor, scores: Tensor) -> _StepOnHost:
        k = top.size(1)
        columns = {"top": top, "beam_of": beam_of, "is_eos": is_eos, "hyps": hyps, "last": last,
                   "best_live": scores.max(dim=1, keepdim=True).values}
        packed = torch.cat([columns[name].float().contiguous().view(torch.int32) if bits else columns[name].int()
                            for name, _, bits in cls.LAYOUT], dim=1).cpu().numpy()
        fields, start = {}, 0
        for name, per_beam, bits in cls.LAYOUT:
            block = packed[:, start:start + (k if per_beam else 1)]
            start += block.shape[1]
            fields[name] = block.view(np.float32) if bits else block.astype(np.int64)
        return cls(fields["top"], fields["beam_of"], fields["is_eos"] > 0, fields["hyps"].reshape(-1),
                   fields["last"].reshape(-1), fields["best_live"][:, 0])


def _collect_finished(finished: list[list[Hypothesis]], sentences: list[int], prefixes: np.ndarray,
                      step: _StepOnHost, k: int, t: int, cfg: DecodeConfig) -> None:
    """Candidates ending in eos among a sentence's top k become finished hypotheses."""
    for row, col in zip(*np.nonzero(step.is_eos)):
        hyps = finished[sentences[row]]
        if len(hyps) >= k:
            continue
        tokens = prefixes[row * k + step.beam_of[row, col]].tolist()
        logprob = float(step.top[row, col])
        hyps.append(Hypothesis(tokens, logprob, logprob / length_penalty(t + 1, cfg.length_penalty)))


def _sentences_done(finished: list[list[Hypothesis]], sentences: list[int], best_live: np.ndarray,
                    limit: list[int], t: int, cfg: DecodeConfig) -> np.ndarray:
    """(rows,) True where a sentence has k finished hypotheses, reached its length limit, or has an
    nbest-th finished score that no live hypothesis can still beat."""
    done = np.zeros(len(sentences), dtype=bool)
    for row, sentence in enumerate(sentences):
        hyps, lim = finished[sentence], limit[sentence]
        if len(hyps) >= cfg.beam or t + 1 >= lim:
            done[row] = True
        elif len(hyps) >= cfg.nbest:
            nth = sorted((h.score for h in hyps), reverse=True)[cfg.nbest - 1]
            best_lp = max(length_penalty(t + 2, cfg.length_penalty), length_penalty(lim, cfg.length_penalty))
            done[row] = nth >= float(best_live[row]) / best_lp
    return done


def search(model: Searchable, src: Tensor, cfg: DecodeConfig) -> list[list[Hypothesis]]:
    """Greedy or beam search (sampling: mtkit.inference.sampling)."""
    return greedy(model, src, cfg) if cfg.beam == 1 else beam_search(model, src, cfg)


@dataclass
class AttentionMap:
    src_pieces: list[str]  # source pieces, then "</s>"
    tgt_pieces: list[str]  # output pieces, then "</s>"
    weights: list[list[float]]  # (tgt, src): mean over layers and heads
    translation: str
    src_length: int  # source pieces before truncation (len(src_pieces) - 1 unless it was cut)


@torch.inference_mode()
def cross_attention(model: Transformer, tokenizer: Tokenizer, sentence: str, cfg: DecodeConfig | None = None,
                    max_src: int | None = None) -> AttentionMap:
    """The greedy translation of one sentence (the very search of `translate --greedy`) with its
    cross-attention recorded at every step; the source is cut to `max_src` pieces (and always to
    what the model's positions cover)."""
    cfg = cfg or DecodeConfig(beam=1)
    all_ids = tokenizer.encode_src([sentence])[0]
    limit = model.cfg.max_positions - 1 if max_src is None else min(max_src, model.cfg.max_positions - 1)
    ids = all_ids[:limit]
    src = pad_sequences([ids], suffix=EOS_ID)
    state = model.start_state(model.encode(src), src.eq(PAD_ID), record_attention=True)
    out = _greedy(model, src, cfg, state)[0][0].tokens
    assert state.attention is not None
    weights = torch.stack(state.attention)[: len(out) + 1, 0].tolist()  # (steps, src_len), eos's step included
    return AttentionMap([tokenizer.src.id_to_piece(i) for i in ids] + ["</s>"],
                        [tokenizer.tgt.id_to_piece(i) for i in out] + ["</s>"], weights,
                        tokenizer.decode_tgt([out])[0], len(all_ids))


class FullRecompute:
    """A stand-in for the model in `greedy`/`beam_search` that keeps no KV cache: every step
    re-runs the decoder over the whole prefix. Slow on purpose; it checks the cached path."""

    def __init__(self, model: Transformer):
        self.model, self.cfg = model, model.cfg

    def encode(self, src: Tensor) -> Tensor:
        return self.model.encode(src)

    def start_state(self, memory: Tensor, src_pad_mask: Tensor, beams: int = 1) -> _Prefix:
        return _Prefix(memory.repeat_interleave(beams, dim=0), src_pad_mask.repeat_interleave(beams, dim=0), None)

    def decode_step(self, tokens: Tensor, state: _Prefix) -> Tensor:
        step = tokens[:, None]
        state.tokens = step if state.tokens is None else torch.cat([state.tokens, step], 1)
        return self.model.output(self.model.decode(state.tokens, state.memory, state.src_pad_mask)[:, -1])


@dataclass
class _Prefix:
    memory: Tensor
    src_pad_mask: Tensor
    tokens: Tensor | None

    def reorder(self, index: Tensor, same_sources: bool = False) -> None:
        self.memory, self.src_pad_mask = self.memory.index_select(0, index), self.src_pad_mask.index_select(0, index)
        if self.tokens is not None:
            self.tokens = self.tokens.index_select(0, index)
