"""Token-budget batches: length-bucketed, shuffled per epoch from a seed, resumable exactly.

Sequences fed to the model: src = ids + eos, tgt_in = bos + ids, tgt_out = ids + eos.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mtkit.data import EncodedCorpus
from mtkit.errors import UserError
from mtkit.tokenizer import BOS_ID, EOS_ID, PAD_ID


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
    oversized = np.flatnonzero(np.maximum(s, t) > max_tokens)
    order = np.lexsort((rng.random(len(s)), s, t))  # by target length, then source, random ties
    order = order[np.maximum(s[order], t[order]) <= max_tokens]
    batches, start, max_s, max_t = [], 0, 0, 0
    for pos, i in enumerate(order):
        new_s, new_t = max(max_s, s[i]), max(max_t, t[i])
        if (pos - start + 1) * max(new_s, new_t) > max_tokens:
            batches.append(order[start:pos])
            start, new_s, new_t = pos, s[i], t[i]
        max_s, max_t = new_s, new_t
    if start < len(order):
        batches.append(order[start:])
    perm = rng.permutation(len(batches))
    return [batches[k] for k in perm], oversized


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) ids + eos, padded
    tgt_in: torch.Tensor  # (batch, tgt_len) bos + ids, padded
    tgt_out: torch.Tensor  # (batch, tgt_len) ids + eos, padded
    indices: np.ndarray  # example indices in the corpus

    @property
    def src_pad_mask(self) -> torch.Tensor:  # (batch, src_len), True at padding
        return self.src.eq(PAD_ID)

    @property
    def tgt_pad_mask(self) -> torch.Tensor:  # (batch, tgt_len), True at padding
        return self.tgt_out.eq(PAD_ID)

    @property
    def n_src_tokens(self) -> int:
        return int(self.src.ne(PAD_ID).sum())

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.tgt_out.ne(PAD_ID).sum())

    def to(self, device: torch.device | str) -> Batch:
        nb = torch.device(device).type == "cuda"
        return Batch(self.src.to(device, non_blocking=nb), self.tgt_in.to(device, non_blocking=nb),
                     self.tgt_out.to(device, non_blocking=nb), self.indices)


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


def collate(corpus: EncodedCorpus, indices: np.ndarray) -> Batch:
    src = [corpus.src(i) for i in indices]
    tgt = [corpus.tgt(i) for i in indices]
    return Batch(pad_sequences(src, suffix=EOS_ID), pad_sequences(tgt, prefix=BOS_ID),
                 pad_sequences(tgt, suffix=EOS_ID), np.asarray(indices))


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

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        batches, oversized = make_batches(self.corpus.src_lens, self.corpus.tgt_lens, self.max_tokens, self.seed, epoch)
        self.oversized = len(oversized)
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank:usable:self.world_size]

    def __iter__(self) -> Iterator[Batch]:
        """Endless: the rest of the current epoch, then the following epochs. The position moves
        on before each batch is yielded, so state() is always where the next batch comes from."""
        while True:
            batches = self.epoch_batches(self.epoch)
            if not batches:
                raise UserError(f"no batch fits --max-tokens {self.max_tokens}: every pair is longer")
            for i in range(self.index, len(batches)):
                last = i == len(batches) - 1
                self.epoch, self.index = (self.epoch + 1, 0) if last else (self.epoch, i + 1)
                yield collate(self.corpus, batches[i])

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
