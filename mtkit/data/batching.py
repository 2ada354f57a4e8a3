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
    from mtkit.data.corpus import EncodedCorpus, Part


def padded_len(n_tokens: np.ndarray) -> np.ndarray:
    """Model-side length of a side with n tokens: one special token (eos or bos) is added."""
    return n_tokens + 1


@dataclass
class EpochBatches:
    """An epoch's batches without a Python object per batch: batch k holds the pairs at positions
    bounds[cut[k]] .. bounds[cut[k] + 1] - 1 of the epoch's order. The order is kept as the chain
    of index arrays that built it (the pair at position i is chain[0][chain[1][...chain[-1][i]]]),
    composed one batch at a time: no pass over the whole epoch to compose them."""

    chain: tuple[np.ndarray, ...]
    bounds: np.ndarray  # (batches + 1,) where each batch starts in the order
    cut: np.ndarray  # (batches,) the epoch's batch order

    def __len__(self) -> int:
        return len(self.cut)

    def __getitem__(self, k: int) -> np.ndarray:
        b = int(self.cut[k])
        return self.pairs(slice(self.bounds[b], self.bounds[b + 1]))

    def pairs(self, positions: slice | np.ndarray) -> np.ndarray:
        picked = self.chain[-1][positions]
        for step in reversed(self.chain[:-1]):
            picked = step[picked]
        return picked

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))

    def take(self, first: int, stop: int, step: int) -> EpochBatches:
        """Batches first, first + step, ... before stop (a rank's share)."""
        return EpochBatches(self.chain, self.bounds, self.cut[first:stop:step])


def make_batches(
    src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, seed: int, epoch: int
) -> tuple[EpochBatches, np.ndarray]:
    """Length-bucketed batches of example indices, in a shuffled order that depends on (seed, epoch).

    A pair costs its longer padded side; pairs are sorted by that cost, then by target length,
    then at random, and cut in that order into batches as full as the budget allows (`_cuts`:
    sentences x the longest padded side never exceeds max_tokens, and only the last batch may be
    partial). The whole epoch takes a few sorts and a Python step per distinct cost, none per pair
    or per batch. Returns the batches and the indices of pairs too long to fit any batch
    (reported, not used).
    """
    rng = np.random.default_rng([seed, epoch])
    small = np.uint16 if max(int(src_lens.max(initial=0)), int(tgt_lens.max(initial=0))) < (1 << 16) - 1 else np.int32
    tgt = padded_len(tgt_lens.astype(small, copy=False))  # 16 bits where they suffice: less memory to sort
    cost = np.maximum(padded_len(src_lens.astype(small, copy=False)), tgt)
    chain = _bucket_order(cost, tgt, rng)
    per_cost = np.bincount(cost, minlength=1)[:max_tokens + 1]  # pairs of each cost that fits
    fits = int(per_cost.sum())  # the order puts them first
    bounds = _cuts(per_cost, max_tokens)
    batches = EpochBatches(chain, bounds, rng.permutation(len(bounds) - 1))
    return batches, np.sort(batches.pairs(slice(fits, None)))


def _bucket_order(cost: np.ndarray, tgt: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Pair indices sorted by (cost, target length, 8 random bits), ties in index order, as a chain
    (see EpochBatches): stable 16-bit radix sorts from the last key to the first (two when lengths
    are under 256, as with the default max_len, else three), or a lexsort beyond 16 bits."""
    noise = rng.integers(0, 256, len(cost), dtype=np.uint16)
    longest = max(int(cost.max()), int(tgt.max())) if len(cost) else 0
    if longest >= 1 << 16:
        return (np.lexsort((noise, tgt, cost)),)
    if longest < 256:
        first = np.argsort((tgt.astype(np.uint16) << 8) | noise, kind="stable")
    else:
        first = np.argsort(noise, kind="stable")
        first = first[np.argsort(tgt[first].astype(np.uint16), kind="stable")]
    return first, np.argsort(cost[first].astype(np.uint16), kind="stable")


def _cuts(per_cost: np.ndarray, max_tokens: int) -> np.ndarray:
    """Batch boundaries over pairs sorted by cost, given how many pairs have each cost: a batch
    grows until one more pair would put its size times its largest cost over max_tokens, across
    runs of equal cost, so that only the last batch of the order may be partial.

    One Python step per run of equal cost (a few hundred at most): the batch left open by the
    cheaper runs is closed first if it cannot take one more pair of this cost, else it is filled
    to this cost's capacity; from there on the run is cut in batches of max_tokens // cost pairs
    (one arange), and what remains is left open for the next run."""
    bounds, start, pos = [np.zeros(1, dtype=np.int64)], 0, 0  # the open batch is pairs start .. pos - 1
    for cost in np.flatnonzero(per_cost):
        capacity, end = max_tokens // int(cost), pos + int(per_cost[cost])
        if pos - start >= capacity:  # full already for a pair of this cost
            bounds.append(np.array([pos], dtype=np.int64))
            start = pos
        closed = np.arange(start + capacity, end + 1, capacity, dtype=np.int64)
        if len(closed):
            bounds.append(closed)
            start = int(closed[-1])
        pos = end
    if pos > start:
        bounds.append(np.array([pos], dtype=np.int64))
    return np.concatenate(bounds)


def epoch_pairs(parts: Sequence[Part], seed: int, epoch: int) -> np.ndarray | None:
    """The pairs an epoch draws from weighted corpora (None: every pair once, all weights 1).

    A corpus of weight w and n pairs gives floor(w) copies of every pair, plus round(frac(w) x n)
    pairs drawn without replacement from (seed, epoch, its position): a pure function of them."""
    if all(p.weight == 1 for p in parts):
        return None
    drawn = []
    for k, part in enumerate(parts):
        whole, extra = int(part.weight), part.drawn() - int(part.weight) * part.size
        if whole:
            drawn.append(np.tile(np.arange(part.start, part.start + part.size), whole))
        if extra > 0:
            rng = np.random.default_rng([seed, epoch, k])
            drawn.append(part.start + np.sort(rng.choice(part.size, extra, replace=False)))
    return np.concatenate(drawn) if drawn else np.zeros(0, dtype=np.int64)


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) ids + eos, padded
    tgt_in: torch.Tensor  # (batch, tgt_len) bos + ids, padded
    tgt_out: torch.Tensor  # (batch, tgt_len) ids + eos, padded
    indices: np.ndarray  # example indices in the corpus

    @property
    def n_tgt_tokens(self) -> int:
        return int(self.tgt_out.ne(PAD_ID).sum())

    @property
    def cost(self) -> int:
        """What the token budget counts: sentences x the longest padded side (source or target)."""
        longest = max(int(self.src.ne(PAD_ID).sum(1).max()), int(self.tgt_out.ne(PAD_ID).sum(1).max()))
        return self.src.size(0) * longest

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


def collate(corpus: EncodedCorpus, indices: np.ndarray, multiple: int = 1,
            vocab: tuple[int, int] | None = None) -> Batch:
    """The batch of corpus pairs `indices`, each side padded to its longest sequence (rounded up to
    a multiple of `multiple`, which bounds the number of distinct shapes). With `vocab` (the
    source and target vocabulary sizes), an id beyond it (prepared data changed after it was
    prepared) is refused, naming the pair, before it reaches the embedding."""
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
    if vocab is not None:
        _check_ids(corpus, indices, (src, tgt_in), vocab)
    return Batch(torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), indices)


def _check_ids(corpus: EncodedCorpus, indices: np.ndarray, sides: tuple[np.ndarray, np.ndarray],
               vocab: tuple[int, int]) -> None:
    for name, ids, size in zip(("source", "target"), sides, vocab):
        if int(ids.max()) >= size:
            row = int(np.flatnonzero((ids >= size).any(axis=1))[0])
            where = corpus.directory or "the prepared data"
            raise UserError(f"{where}: damaged prepared data (pair {int(indices[row]):,} has a {name} id "
                            f"{int(ids[row].max()):,}, the vocabulary has {size:,}); prepare the data again")


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
    vocab: tuple[int, int] | None = None  # source and target vocabulary sizes: ids beyond are refused

    def epoch_batches(self, epoch: int) -> EpochBatches:
        """This rank's batches of an epoch: the weighted draw of the corpora, then make_batches."""
        drawn = epoch_pairs(self.corpus.parts, self.seed, epoch)
        src_lens, tgt_lens = self.corpus.src_lens, self.corpus.tgt_lens
        if drawn is not None:
            src_lens, tgt_lens = src_lens[drawn], tgt_lens[drawn]
        batches, oversized = make_batches(src_lens, tgt_lens, self.max_tokens, self.seed, epoch)
        if drawn is not None:
            batches.chain = (drawn, *batches.chain)
        self.oversized = len(oversized)
        usable = len(batches) - len(batches) % self.world_size
        return batches.take(self.rank, usable, self.world_size)

    def check(self) -> None:
        """Refuse, before any work, weights that draw too many pairs an epoch, and a budget that no
        pair fits (as the loop would find it)."""
        from mtkit.data.corpus import check_epoch_size

        check_epoch_size(self.corpus.parts)
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
                yield collate(self.corpus, batches[i], self.pad_multiple, self.vocab)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
