"""A prepared corpus in memory: token ids as zero-copy views of memory-mapped files, the cleaning
rules and their counts, and the duplicate filter (hashes in arrays, no Python object per pair).

Preparing (reading, encoding, cleaning, writing) is mtkit.data.prepare; batching is
mtkit.data.batching.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from mtkit.config import MAX_EPOCH_PAIRS
from mtkit.errors import UserError


@dataclass(frozen=True)
class Cleaning:
    """The rules that remove pairs (a DataConfig's max_len, max_ratio, dedup)."""

    max_len: int = 250
    max_ratio: float = 3.0
    dedup: bool = False

    @classmethod
    def of(cls, cfg) -> Cleaning:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass
class CleaningReport:
    """How many pairs were read and how many each rule removed (each pair counted once, by the
    first rule that removed it, in this order)."""

    read: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    duplicate: int = 0
    kept: int = 0

    def removed(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k not in ("read", "kept")}

    def add(self, other: CleaningReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def keep_mask(src_len: np.ndarray, tgt_len: np.ndarray, cfg: Cleaning, report: CleaningReport) -> np.ndarray:
    """Boolean mask of pairs that survive the length rules; fills report.{empty,too_long,bad_ratio}."""
    alive = np.ones(len(src_len), dtype=bool)
    rules = [
        ("empty", (src_len == 0) | (tgt_len == 0)),
        ("too_long", (src_len > cfg.max_len) | (tgt_len > cfg.max_len)),
    ]
    if cfg.max_ratio > 0:
        longer, shorter = np.maximum(src_len, tgt_len), np.maximum(np.minimum(src_len, tgt_len), 1)
        rules.append(("bad_ratio", longer > cfg.max_ratio * shorter))
    for name, removed in rules:
        hit = alive & removed
        setattr(report, name, getattr(report, name) + int(hit.sum()))
        alive &= ~removed
    return alive


@dataclass
class RaggedColumn:
    """A list<int32> Arrow column as zero-copy numpy views of its memory-mapped chunks: nothing
    is copied into memory, so memory use does not grow with the corpus."""

    offsets: list[np.ndarray]  # per chunk: row j is values[offsets[j]:offsets[j + 1]]
    values: list[np.ndarray]  # per chunk
    starts: np.ndarray  # (n_chunks + 1,) first row of each chunk, then the number of rows
    lens: list[np.ndarray] | None = None  # per chunk, each row's length, when stored (else from offsets)

    @classmethod
    def of_chunks(cls, offsets: list[np.ndarray], values: list[np.ndarray],
                  lens: list[np.ndarray] | None = None) -> RaggedColumn:
        return cls(offsets, values, np.cumsum([0] + [len(o) - 1 for o in offsets]), lens)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self.starts, i, side="right")) - 1
        j, off = i - int(self.starts[c]), self.offsets[c]
        return self.values[c][off[j]:off[j + 1]]

    def lengths(self) -> np.ndarray:
        """(rows,) each row's length: the stored array itself for one chunk (memory-mapped)."""
        if not self.offsets:
            return np.zeros(0, dtype=np.int32)
        parts = self.lens if self.lens is not None else [np.diff(o).astype(np.int32) for o in self.offsets]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def fill(self, out: np.ndarray, rows: np.ndarray, first_column: int) -> None:
        """Write row rows[k] into out[k, first_column:] for every k, vectorised per chunk (a batch
        costs a few numpy calls, not a Python step per sentence); out must be wide enough."""
        chunk = np.searchsorted(self.starts, rows, side="right") - 1
        for c in np.unique(chunk):
            where = np.flatnonzero(chunk == c)  # positions in the batch of this chunk's rows
            local = rows[where] - self.starts[c]
            begin, end = self.offsets[c][local], self.offsets[c][local + 1]
            lengths = (end - begin).astype(np.int64)
            within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # 0..len-1 per row
            out[np.repeat(where, lengths), first_column + within] = self.values[c][np.repeat(begin, lengths) + within]


def block_hashes(off: np.ndarray, values: np.ndarray, multiplier: int) -> np.ndarray:
    """(rows,) uint64: a polynomial hash of each row's ids, sum((id + 1) * m ** position) xor its
    length times a constant, modulo 2**64, for rows values[off[k]:off[k + 1]] (vectorised; a
    row's hash does not depend on its neighbours, so a corpus is hashed a chunk at a time)."""
    lengths = np.diff(off).astype(np.int64)
    ids = values[off[0]:off[-1]].astype(np.uint64) + np.uint64(1)  # + 1: a row of pads is not empty
    position = np.arange(len(ids)) - np.repeat(off[:-1] - off[0], lengths)
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, multiplier, dtype=np.uint64))  # wraps mod 2**64
    running = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(ids * powers[position], dtype=np.uint64)])
    sums = running[off[1:] - off[0]] - running[off[:-1] - off[0]]  # each row's terms, mod 2**64
    return sums ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


SRC_HASH, TGT_HASH = 0x100000001B3, 0xC2B2AE3D27D4EB4F  # the multipliers of each side's row hash


def duplicates(src_hash: np.ndarray, tgt_hash: np.ndarray) -> np.ndarray:
    """(pairs,) bool: True for every pair equal to an earlier one. Pairs are compared by 128 bits
    (a 64-bit hash of each side; a false match among 10**8 pairs has a probability of about
    10**-23), held in two arrays: 16 bytes a pair, no Python object per pair."""
    order = np.lexsort((tgt_hash, src_hash))  # stable: equal pairs stay in corpus order, the first one first
    repeated = (src_hash[order][1:] == src_hash[order][:-1]) & (tgt_hash[order][1:] == tgt_hash[order][:-1])
    duplicate = np.zeros(len(src_hash), dtype=bool)
    duplicate[order[1:][repeated]] = True
    return duplicate


# ----------------------------------------------------------------------------- the prepared corpus
@dataclass(frozen=True)
class Part:
    """One corpus of a prepared set: its rows are start .. start + size - 1 of the whole."""

    name: str
    start: int
    size: int
    weight: float = 1.0
    tag: str = ""
    report: CleaningReport = field(default_factory=CleaningReport)

    def drawn(self) -> int:
        """Pairs of this corpus in one epoch: weight x size, rounded."""
        return int(round(self.weight * self.size))


def check_epoch_size(parts: list[Part]) -> None:
    """Refuse weights that make an epoch draw more than MAX_EPOCH_PAIRS pairs, naming the corpus
    that draws the most."""
    drawn = [p.drawn() for p in parts]
    if sum(drawn) > MAX_EPOCH_PAIRS:
        big = max(range(len(parts)), key=drawn.__getitem__)
        p = parts[big]
        raise UserError(f"corpus {p.name}: weight {p.weight:g} x {p.size:,} pairs draws {drawn[big]:,} pairs an epoch; "
                        f"an epoch may draw at most {MAX_EPOCH_PAIRS:,} in all: lower its weight")


@dataclass
class EncodedCorpus:
    """Token ids of one or more cleaned corpora, memory-mapped; example i is (src(i), tgt(i))."""

    src_ids: RaggedColumn
    tgt_ids: RaggedColumn
    parts: list[Part]
    directory: Path | None = None
    src_lens: np.ndarray = field(init=False, repr=False)  # (pairs,) uint16 or int32
    tgt_lens: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.src_lens, self.tgt_lens = self.src_ids.lengths(), self.tgt_ids.lengths()

    @classmethod
    def single(cls, src_ids: RaggedColumn, tgt_ids: RaggedColumn, report: CleaningReport | None = None) -> EncodedCorpus:
        """One corpus of weight 1 (tests, benchmarks)."""
        n = len(src_ids)
        return cls(src_ids, tgt_ids, [Part("train", 0, n, report=report or CleaningReport(read=n, kept=n))])

    @property
    def report(self) -> CleaningReport:
        total = CleaningReport()
        for part in self.parts:
            total.add(part.report)
        return total

    def __len__(self) -> int:
        return len(self.src_lens)

    def src(self, i: int) -> np.ndarray:
        return self.src_ids[i]

    def tgt(self, i: int) -> np.ndarray:
        return self.tgt_ids[i]
