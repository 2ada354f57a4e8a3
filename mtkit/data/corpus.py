"""From a parallel corpus to token-budget batches.

    source (two text files | a TSV/JSONL file | a `datasets` hub id)
      -> rows {src, tgt} validated line by line       (Dataset.from_generator)
      -> token ids                                    (.map(batched=True, num_proc=...))
      -> cleaned (empty, too long, length ratio, duplicates), each removal counted
      -> cached Arrow files, memory-mapped, keyed by (inputs, tokenizer, cleaning settings)
      -> length-bucketed batches under a token budget (mtkit.data.batching)
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from mtkit.config import DataConfig
from mtkit.data.textio import check_text, iter_lines
from mtkit.data.tokenizer import Tokenizer, file_sha256
from mtkit.errors import UserError
from mtkit.files import atomic_write, disk_full, make_temp_dir, write_error

CACHE_VERSION = 1


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class TextPair:
    """Two aligned plain-text files, one sentence per line (.gz read transparently)."""

    src: Path
    tgt: Path

    def check(self) -> int:
        n_src, n_tgt = check_text(self.src), check_text(self.tgt)
        if n_src != n_tgt:
            raise UserError(f"{self.src} has {n_src} lines but {self.tgt} has {n_tgt}: the files are not parallel")
        return n_src

    def identity(self) -> dict:
        return {"src": file_sha256(self.src), "tgt": file_sha256(self.tgt)}

    def rows(self) -> Iterator[tuple[str, str]]:
        yield from zip(iter_lines(self.src), iter_lines(self.tgt))


@dataclass(frozen=True)
class TableFile:
    """A TSV (source<TAB>target) or JSONL file ({"src": ..., "tgt": ...}; keys may be dotted)."""

    path: Path
    src_key: str = "src"
    tgt_key: str = "tgt"

    def check(self) -> int:
        return check_text(self.path)

    def identity(self) -> dict:
        return {"table": file_sha256(self.path), "keys": [self.src_key, self.tgt_key]}

    def rows(self) -> Iterator[tuple[str, str]]:
        jsonl = self.path.name.removesuffix(".gz").endswith((".jsonl", ".json"))
        for lineno, line in enumerate(iter_lines(self.path), start=1):
            where = f"{self.path}:{lineno}"
            if jsonl:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{where}: invalid JSON ({e.msg})") from None
                yield _field(obj, self.src_key, where), _field(obj, self.tgt_key, where)
            else:
                parts = line.split("\t")
                if len(parts) < 2:
                    raise UserError(f"{where}: expected two tab-separated fields (source, target)")
                yield parts[0], parts[1]


def _field(obj: object, key: str, where: str) -> str:
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise UserError(f"{where}: field {key!r} is missing")
        obj = obj[part]
    if not isinstance(obj, str):
        raise UserError(f"{where}: field {key!r} is not a string")
    return obj


@dataclass(frozen=True)
class HubCorpus:
    """A `datasets` hub dataset, e.g. name=wmt14 config=de-en split=train keys translation.en/.de."""

    name: str
    config: str | None
    split: str
    src_key: str
    tgt_key: str

    def load(self):
        import datasets

        try:
            return datasets.load_dataset(self.name, self.config, split=self.split)
        except Exception as e:  # datasets raises many types for offline / missing / bad config
            raise UserError(f"cannot load dataset {self.name!r} (config {self.config}, split {self.split}): "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def check(self) -> int:
        return len(self.load())

    def identity(self) -> dict:
        return {"hub": self.load()._fingerprint, "keys": [self.src_key, self.tgt_key]}

    def rows(self) -> Iterator[tuple[str, str]]:
        for i, row in enumerate(self.load()):
            where = f"{self.name}[{self.split}] row {i}"
            yield _field(row, self.src_key, where), _field(row, self.tgt_key, where)


Source = TextPair | TableFile | HubCorpus


def source_from_paths(src: str | Path, tgt: str | Path | None = None) -> Source:
    """Two files, or one TSV/JSONL file when tgt is None."""
    if tgt is not None:
        return TextPair(Path(src), Path(tgt))
    return TableFile(Path(src))


def _generate_rows(source: Source) -> Iterator[dict]:
    for src, tgt in source.rows():
        yield {"src": src.replace("\x00", " "), "tgt": tgt.replace("\x00", " ")}


# ----------------------------------------------------------------------------- encoding and cleaning
@lru_cache(maxsize=4)
def _tokenizer(directory: str) -> Tokenizer:
    return Tokenizer.load(directory)


def _encode_batch(batch: dict, tokenizer_dir: str) -> dict:
    tok = _tokenizer(tokenizer_dir)
    return {"src_ids": tok.encode_src(batch["src"]), "tgt_ids": tok.encode_tgt(batch["tgt"])}


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


def keep_mask(src_len: np.ndarray, tgt_len: np.ndarray, cfg: DataConfig, report: CleaningReport) -> np.ndarray:
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
        setattr(report, name, int(hit.sum()))
        alive &= ~removed
    return alive


@dataclass
class RaggedColumn:
    """A list<int32> Arrow column as zero-copy numpy views of its memory-mapped chunks: nothing
    is copied into memory, so memory use does not grow with the corpus."""

    offsets: list[np.ndarray]  # per chunk: row j is values[offsets[j]:offsets[j + 1]]
    values: list[np.ndarray]  # per chunk
    starts: np.ndarray  # (n_chunks + 1,) first row of each chunk, then the number of rows

    @classmethod
    def from_dataset(cls, ds, name: str) -> RaggedColumn:
        column = ds.data.column(name)
        chunks = [c for c in getattr(column, "chunks", [column]) if len(c)]
        offsets = [c.offsets.to_numpy(zero_copy_only=False) for c in chunks]
        values = [c.values.to_numpy(zero_copy_only=False) for c in chunks]
        starts = np.cumsum([0] + [len(c) for c in chunks])
        return cls(offsets, values, starts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self.starts, i, side="right")) - 1
        j, off = i - int(self.starts[c]), self.offsets[c]
        return self.values[c][off[j]:off[j + 1]]

    def lengths(self) -> np.ndarray:
        if not self.offsets:
            return np.zeros(0, dtype=np.int32)
        return np.concatenate([np.diff(o) for o in self.offsets]).astype(np.int32)

    def rows(self) -> Iterator[np.ndarray]:
        for off, val in zip(self.offsets, self.values):
            for j in range(len(off) - 1):
                yield val[off[j]:off[j + 1]]

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


HASH_BLOCK = 1 << 22  # ids hashed at once: the temporaries stay a few tens of MB whatever the corpus


def row_hashes(column: RaggedColumn, multiplier: int) -> np.ndarray:
    """(rows,) uint64: a polynomial hash of each row's ids, sum((id + 1) * m ** position) xor
    its length times a constant, modulo 2**64; vectorised numpy over blocks of rows."""
    out = []
    for off, values in zip(column.offsets, column.values):
        first = 0
        while first < len(off) - 1:  # rows first..last-1 hold at most HASH_BLOCK ids (or are one row)
            last = max(first + 1, int(np.searchsorted(off, off[first] + HASH_BLOCK, side="right")) - 1)
            out.append(_block_hashes(off[first:last + 1], values, multiplier))
            first = last
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def _block_hashes(off: np.ndarray, values: np.ndarray, multiplier: int) -> np.ndarray:
    lengths = np.diff(off).astype(np.int64)
    ids = values[off[0]:off[-1]].astype(np.uint64) + np.uint64(1)  # + 1: a row of pads is not empty
    position = np.arange(len(ids)) - np.repeat(off[:-1] - off[0], lengths)
    powers = np.cumprod(np.full(int(lengths.max(initial=0)) + 1, multiplier, dtype=np.uint64))  # wraps mod 2**64
    running = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(ids * powers[position], dtype=np.uint64)])
    sums = running[off[1:] - off[0]] - running[off[:-1] - off[0]]  # each row's terms, mod 2**64
    return sums ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def mark_duplicates(src_ids: RaggedColumn, tgt_ids: RaggedColumn, alive: np.ndarray, report: CleaningReport) -> None:
    """Keep the first of every set of identical pairs among those still alive. Pairs are compared
    by 128 bits (a 64-bit hash of each side; a false match among 10**8 pairs has a probability of
    about 10**-23), held in two arrays: 16 bytes a pair, no Python object per pair."""
    src, tgt = row_hashes(src_ids, 0x100000001B3), row_hashes(tgt_ids, 0xC2B2AE3D27D4EB4F)
    candidates = np.flatnonzero(alive)
    src, tgt = src[candidates], tgt[candidates]
    order = np.lexsort((tgt, src))  # stable: equal pairs stay in corpus order, the first one first
    repeated = (src[order][1:] == src[order][:-1]) & (tgt[order][1:] == tgt[order][:-1])
    duplicate = np.zeros(len(candidates), dtype=bool)
    duplicate[order[1:][repeated]] = True
    alive[candidates[duplicate]] = False
    report.duplicate += int(duplicate.sum())


# ----------------------------------------------------------------------------- the prepared corpus
@dataclass
class EncodedCorpus:
    """Token ids of a cleaned corpus, memory-mapped; example i is (src(i), tgt(i))."""

    src_ids: RaggedColumn
    tgt_ids: RaggedColumn
    report: CleaningReport
    directory: Path
    dataset: object = field(repr=False, default=None)  # keeps the memory map alive
    src_lens: np.ndarray = field(init=False, repr=False)  # (pairs,) int32
    tgt_lens: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.src_lens, self.tgt_lens = self.src_ids.lengths(), self.tgt_ids.lengths()

    def __len__(self) -> int:
        return len(self.src_lens)

    def src(self, i: int) -> np.ndarray:
        return self.src_ids[i]

    def tgt(self, i: int) -> np.ndarray:
        return self.tgt_ids[i]


def cache_key(source: Source, tokenizer: Tokenizer, cfg: DataConfig) -> str:
    identity = {
        "version": CACHE_VERSION,
        "source": source.identity(),
        "tokenizer": tokenizer.fingerprint(),
        "cleaning": {"max_len": cfg.max_len, "max_ratio": cfg.max_ratio, "dedup": cfg.dedup},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def prepare_corpus(source: Source, tokenizer: Tokenizer, cfg: DataConfig, cache_root: str | Path) -> EncodedCorpus:
    """Encode and clean a corpus, or reuse its cache. The cache directory appears whole or not at all."""
    if source.check() == 0:
        raise UserError(f"{_describe(source)}: the corpus is empty")
    cache_root = Path(cache_root)
    final = cache_root / cache_key(source, tokenizer, cfg)
    if not (final / "report.json").is_file():
        work = make_temp_dir(final)
        try:
            _build(source, tokenizer, cfg, work)
            shutil.rmtree(final, ignore_errors=True)
            work.rename(final)
        except OSError as e:  # writing the cache failed (a full disk): the cache, not the input, is named
            raise write_error(final / "data", e) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return load_corpus(final)


def _describe(source: Source) -> str:
    if isinstance(source, TextPair):
        return f"{source.src} + {source.tgt}"
    return str(source.path) if isinstance(source, TableFile) else source.name


def _build(source: Source, tokenizer: Tokenizer, cfg: DataConfig, work: Path) -> None:
    import datasets

    datasets.disable_progress_bars()
    try:
        raw = datasets.Dataset.from_generator(
            _generate_rows, gen_kwargs={"source": source}, cache_dir=str(work / "raw"),
            features=datasets.Features({"src": datasets.Value("string"), "tgt": datasets.Value("string")}),
        )
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, OSError) and (cause.errno in (errno.ENOSPC, errno.EDQUOT) or disk_full(work)):
            raise cause from None  # writing the cache failed, not reading the corpus
        raise UserError(f"{_describe(source)}: {cause or e}") from None
    encoded = raw.map(
        _encode_batch, batched=True, batch_size=1000, num_proc=cfg.num_proc if cfg.num_proc > 1 else None,
        fn_kwargs={"tokenizer_dir": str(tokenizer.directory)}, remove_columns=["src", "tgt"],
        cache_file_name=str(work / "encoded" / "data.arrow"), new_fingerprint=work.name,
        features=datasets.Features({"src_ids": datasets.Sequence(datasets.Value("int32")),
                                    "tgt_ids": datasets.Sequence(datasets.Value("int32"))}),
    )
    report = CleaningReport(read=len(encoded))
    src_ids, tgt_ids = RaggedColumn.from_dataset(encoded, "src_ids"), RaggedColumn.from_dataset(encoded, "tgt_ids")
    alive = keep_mask(src_ids.lengths(), tgt_ids.lengths(), cfg, report)
    if cfg.dedup:
        mark_duplicates(src_ids, tgt_ids, alive, report)
    report.kept = int(alive.sum())
    if report.kept == 0:
        raise UserError(f"{_describe(source)}: no pair survives cleaning ({report.removed()})")
    encoded.select(np.flatnonzero(alive)).save_to_disk(str(work / "data"))
    del raw, encoded
    shutil.rmtree(work / "raw", ignore_errors=True)
    shutil.rmtree(work / "encoded", ignore_errors=True)
    (work / "report.json").write_text(json.dumps(asdict(report), indent=1) + "\n")


def load_corpus(directory: str | Path) -> EncodedCorpus:
    import datasets

    directory = Path(directory)
    ds = datasets.load_from_disk(str(directory / "data"))
    report = CleaningReport(**json.loads((directory / "report.json").read_text()))
    return EncodedCorpus(RaggedColumn.from_dataset(ds, "src_ids"), RaggedColumn.from_dataset(ds, "tgt_ids"),
                         report, directory, ds)


def export_pairs(source: Source, src_out: Path, tgt_out: Path) -> int:
    """Write a corpus as two plain-text files (one sentence per line); returns the number of pairs.
    Line breaks inside a sentence become spaces so the files stay parallel."""
    n = 0
    with atomic_write(src_out, "w", encoding="utf-8") as fs, atomic_write(tgt_out, "w", encoding="utf-8") as ft:
        for src, tgt in source.rows():
            fs.write(" ".join(src.splitlines()) + "\n")
            ft.write(" ".join(tgt.splitlines()) + "\n")
            n += 1
    return n
