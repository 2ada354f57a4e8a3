"""Token-budget batches: length-bucketed, shuffled per epoch from a seed, resumable exactly.

Sequences fed to the model: src = ids + eos, tgt_in = bos + ids, tgt_out = ids + eos.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from mtkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from mtkit.errors import UserError

if TYPE_CHECKING:  # decoding imports this module and needs no corpus machinery
    from mtkit.data.corpus import EncodedCorpus


def padded_len(n_tokens: np.ndarray) -> np.ndarray:
    """Model-side length of a side with n tokens: one special token (eos or bos) is added."""
    return n_tokens + 1


def make_batches(
    src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int, epoch: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Length-bucketed batches of example indices, in a shuffled order that depends on (seed, epoch).

    A batch costs (sentences x longest padded length) on each side and never exceeds max_tokens.
    Returns the batches and the indices of pairs too long to fit any batch (reported, not used).
    """
    rng = np.random.default_rng([seed, epoch])
    s, t = padded_len(src_lens), padded_len(tgt_lens)
    cost = np.maximum(s, t)  # a pair's share of a batch: its longer padded side
    oversized = np.flatnonzero(cost > max_tokens)
    order = np.lexsort((rng.random(len(s)), s, t))  # by target length, then source, random ties
    order = order[cost[order] <= max_tokens]
    batches = [order[a:b] for a, b in _batch_bounds(cost[order], max_tokens)]
    perm = rng.permutation(len(batches))
    return [batches[k] for k in perm], oversized


def _batch_bounds(cost: np.ndarray, max_tokens: int) -> Iterator[tuple[int, int]]:
    """Cut a sequence of pairs (cost: each one's padded length, the larger side's) into consecutive
    batches, each as long as it can be: k pairs cost k x the longest of them, at most max_tokens.
    One numpy pass per batch, not a Python step per pair: a batch can hold no more than
    max_tokens // (its first pair's cost) pairs, and within that window the cost of its first
    k pairs grows with k, so a binary search finds where it ends."""
    start, n = 0, len(cost)
    while start < n:
        window = cost[start:start + max_tokens // int(cost[start])]
        spent = np.maximum.accumulate(window) * np.arange(1, len(window) + 1)
        end = start + int(np.searchsorted(spent, max_tokens, side="right"))
        yield start, end
        start = end


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) ids + eos, padded
    tgt_in: torch.Tensor  # (batch, tgt_len) bos + ids, padded
    tgt_out: torch.Tensor  # (batch, tgt_len) ids + eos, padded
    indices: np.ndarray  # example indices in the corpus

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.tgt_out.ne(PAD_ID).sum())

    def to(self, device: torch.device | str) -> Batch:
        """The batch on `device`; to a GPU through pinned memory, so the copy does not wait for it."""
        device = torch.device(device)
        if device.type != "cuda":
            return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.indices)
        src, tgt_in, tgt_out = (t.pin_memory().to(device, non_blocking=True) for t in (self.src, self.tgt_in, self.tgt_out))
        return Batch(src, tgt_in, tgt_out, self.indices)


def pad_sequences(seqs: Sequence[Sequence[int] | np.ndarray], prefix: int | None = None, suffix: int | None = None) -> torch.Tensor:
    """(batch, longest) int64 tensor of the sequences with optional prefix/suffix token, right-padded."""
    extra = (prefix is not None) + (suffix is not None)
    out = np.full((len(seqs), max(len(x) for x in seqs) + extra), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(seqs):
        start = 0
        if prefix is not None:
            out[row, 0], start = prefix, 1
        out[row, start:start + len(seq)] = seq
        if suffix is not None:
            out[row, start + len(seq)] = suffix
    return torch.from_numpy(out)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate(corpus: EncodedCorpus, indices: np.ndarray, multiple: int = 1) -> Batch:
    """The batch of corpus pairs `indices`, each side padded to its longest sequence (rounded up to
    a multiple of `multiple`, which bounds the number of distinct shapes)."""
    indices = np.asarray(indices)
    rows = np.arange(len(indices))
    src_len, tgt_len = corpus.src_lens[indices].astype(np.int64), corpus.tgt_lens[indices].astype(np.int64)
    src = np.full((len(indices), _round_up(int(src_len.max()) + 1, multiple)), PAD_ID, dtype=np.int64)
    corpus.src_ids.fill(src, indices, 0)
    src[rows, src_len] = EOS_ID
    tgt_in = np.full((len(indices), _round_up(int(tgt_len.max()) + 1, multiple)), PAD_ID, dtype=np.int64)
    tgt_in[:, 0] = BOS_ID
    corpus.tgt_ids.fill(tgt_in, indices, 1)
    tgt_out = np.full_like(tgt_in, PAD_ID)
    tgt_out[:, :-1] = tgt_in[:, 1:]
    tgt_out[rows, tgt_len] = EOS_ID
    return Batch(torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), indices)


@dataclass
class BatchIterator:
    """Epochs of batches; position (epoch, index) is all it takes to resume exactly.

    With world_size > 1 each rank takes every world_size-th batch of the same epoch order; the
    epoch is cut to a multiple of world_size so that all ranks take the same number of steps.
    """

    corpus: EncodedCorpus
    max_tokens: int
    seed: int
    epoch: int = 1
    index: int = 0  # batches of this epoch already consumed (per rank)
    rank: int = 0
    world_size: int = 1
    oversized: int = 0
    pad_multiple: int = 1  # lengths padded up to a multiple of this (fewer distinct shapes)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        batches, oversized = make_batches(self.corpus.src_lens, self.corpus.tgt_lens, self.max_tokens, self.seed, epoch)
        self.oversized = len(oversized)
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank:usable:self.world_size]

    def check(self) -> None:
        """Refuse a budget that no pair fits (before any work, as the loop would find it)."""
        fits = np.maximum(padded_len(self.corpus.src_lens), padded_len(self.corpus.tgt_lens)) <= self.max_tokens
        if not fits.any():
            raise self._nothing_fits()

    def _nothing_fits(self) -> UserError:
        return UserError(f"no batch fits --max-tokens {self.max_tokens}: every pair is longer")

    def __iter__(self) -> Iterator[Batch]:
        """Endless: the rest of the current epoch, then the following epochs. The position moves
        on before each batch is yielded, so state() is always where the next batch comes from."""
        while True:
            batches = self.epoch_batches(self.epoch)
            if not batches:
                raise self._nothing_fits()
            if self.index >= len(batches):  # a saved position past this epoch's end: the epoch is over
                self.epoch, self.index = self.epoch + 1, 0
                continue
            for i in range(self.index, len(batches)):
                last = i == len(batches) - 1
                self.epoch, self.index = (self.epoch + 1, 0) if last else (self.epoch, i + 1)
                yield collate(self.corpus, batches[i], self.pad_multiple)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
