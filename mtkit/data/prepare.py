"""Preparing corpora once: text -> token ids, cleaned, in memory-mapped files that every run reuses.

    sources (mtkit.data.sources) -> chunks of raw lines, read by this process
      -> decoded, encoded, tagged, length rules applied: one chunk per task, in a pool of
         processes (every CPU by default), results taken in order with a bounded queue
      -> appended to flat files of ids; the lengths and (for dedup) two 64-bit hashes per pair
         are kept in arrays; duplicates are removed at the end
      -> a prepared directory (its layout and opening it: mtkit.data.prepared), appearing whole
         by one rename; `prepare_into` (`mtkit prepare -o`) decides what an existing -o allows
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mtkit.config import DataConfig
from mtkit.data.corpus import (
    SRC_HASH,
    TGT_HASH,
    Cleaning,
    CleaningReport,
    EncodedCorpus,
    Part,
    block_hashes,
    check_epoch_size,
    duplicates,
    keep_mask,
)
from mtkit.data.prepared import (
    FORMAT,
    INFO,
    content_id,
    is_prepared,
    load_prepared,
    read_info,
    replace_contents,
    state_of,
)
from mtkit.data.sources import Chunk, Source, cpu_count, source_from_paths, source_from_spec
from mtkit.data.textio import decode_line
from mtkit.data.tokenizer import UNK_ID, Tokenizer
from mtkit.errors import UserError
from mtkit.files import fsync_dir, make_temp_dir, remove_leftovers, write_error

CHUNK = 16384  # pairs per task: big enough to amortise the hand-over, small enough to keep memory flat
OnProgress = Callable[[str, int, float | None], None]  # (corpus, pairs read so far, share of its text read)


@dataclass(frozen=True)
class CorpusInput:
    """A corpus to prepare: its name, its text, its weight in an epoch and its tag."""

    name: str
    source: Source
    weight: float = 1.0
    tag: str = ""


def corpus_inputs(cfg: DataConfig, src: Path | None, tgt: Path | None, where: str = "[[data.corpora]]") -> list[CorpusInput]:
    """The corpora a command was given: --src/--tgt (one corpus named `train`), or the config's
    [[data.corpora]] tables (each file checked, naming its key)."""
    if src is not None and cfg.corpora:
        raise UserError("give --src/--tgt or [[data.corpora]] in the --config file, not both")
    if src is not None:
        return [CorpusInput("train", source_from_paths(src, tgt))]
    if not cfg.corpora:
        raise UserError("no training data: give --src and --tgt (or a TSV/JSONL file as --src), "
                        "[[data.corpora]] tables in a --config file, or --data DIR from `mtkit prepare`")
    return [CorpusInput(s.name, source_from_spec(s, f"{where} ({s.name})"), s.weight, s.tag) for s in cfg.corpora]


def tag_ids(inputs: list[CorpusInput], tok: Tokenizer) -> dict[str, int]:
    """Each tagged corpus's tag id; a tag that is not one piece of the tokenizer is refused."""
    found = {}
    for inp in inputs:
        if inp.tag:
            piece = tok.src.piece_to_id(inp.tag)
            if piece == UNK_ID or tok.src.id_to_piece(piece) != inp.tag:
                raise UserError(f"[[data.corpora]] ({inp.name}) tag: {inp.tag!r} is not one piece of the tokenizer "
                                f"{tok.directory}; train it with `mtkit tokenizer train --tag '{inp.tag}'`")
            found[inp.name] = piece
    return found


def quick_key(inputs: list[CorpusInput], tok: Tokenizer, cleaning: Cleaning) -> str:
    """Names what would be prepared from paths, sizes and modification times (no text is read):
    what a restart compares."""
    identity = {"format": FORMAT, "tokenizer": tok.fingerprint(), "cleaning": asdict(cleaning),
                "corpora": [[i.name, i.weight, i.tag, i.source.quick_identity()] for i in inputs]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- encoding one chunk (in a worker)
@dataclass(frozen=True)
class Encoding:
    """What a worker needs besides the chunk."""

    tokenizer_dir: str
    cleaning: Cleaning
    id_dtype: str
    len_dtype: str
    tag_id: int = -1  # -1: no tag
    hashes: bool = False


@dataclass
class Encoded:
    """A chunk's kept pairs: ids one after the other, lengths, hashes (for dedup), counts."""

    src_ids: np.ndarray
    src_lens: np.ndarray
    tgt_ids: np.ndarray
    tgt_lens: np.ndarray
    report: CleaningReport
    src_hash: np.ndarray | None = None
    tgt_hash: np.ndarray | None = None


@functools.lru_cache(maxsize=2)
def _tokenizer(directory: str) -> Tokenizer:
    return Tokenizer.load(directory)


def decode_chunk(lines: list, name: str, first_line: int) -> list[str]:
    """Raw lines as text: UTF-8 (an error names the file and line), without line endings or a
    byte-order mark on line 1, NUL characters as spaces. One decode for the whole chunk."""
    if lines and isinstance(lines[0], str):
        return [s.replace("\x00", " ") for s in lines]
    raw = b"".join(lines)
    if raw and not raw.endswith(b"\n"):  # the file's last line
        raw += b"\n"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        for k, line in enumerate(lines):
            decode_line(line, name, first_line + k)  # raises, naming the line
        raise
    if "\x00" in text:
        text = text.replace("\x00", " ")
    out = text.split("\n")
    out.pop()
    if "\r" in text:
        out = [s[:-1] if s.endswith("\r") else s for s in out]
    if first_line == 1 and out and out[0].startswith("\ufeff"):
        out[0] = out[0][1:]
    return out


def _flat(ids: list[list[int]], dtype: str, prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids of many sentences as one array and the lengths, with `prefix` before each (if >= 0)."""
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
    if prefix >= 0:
        flat = np.insert(flat, np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64), prefix)
        lens += 1
    return flat, lens


def encode_chunk(chunk: Chunk, enc: Encoding) -> Encoded:
    tok = _tokenizer(enc.tokenizer_dir)
    src_ids, src_lens = _flat(tok.encode_src(decode_chunk(chunk.src, chunk.src_name, chunk.first_line)), enc.id_dtype,
                              enc.tag_id)
    tgt_ids, tgt_lens = _flat(tok.encode_tgt(decode_chunk(chunk.tgt, chunk.tgt_name, chunk.first_line)), enc.id_dtype, -1)
    report = CleaningReport(read=len(src_lens))
    alive = keep_mask(src_lens, tgt_lens, enc.cleaning, report)
    if not alive.all():
        src_ids, tgt_ids = src_ids[np.repeat(alive, src_lens)], tgt_ids[np.repeat(alive, tgt_lens)]
        src_lens, tgt_lens = src_lens[alive], tgt_lens[alive]
    out = Encoded(src_ids, src_lens.astype(enc.len_dtype), tgt_ids, tgt_lens.astype(enc.len_dtype), report)
    if enc.hashes:
        out.src_hash = block_hashes(_offsets(src_lens), src_ids, SRC_HASH)
        out.tgt_hash = block_hashes(_offsets(tgt_lens), tgt_ids, TGT_HASH)
    return out


def _offsets(lens: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lens, dtype=np.int64)])


def _encode_task(task: tuple[Chunk, Encoding]) -> Encoded:
    return encode_chunk(*task)


# ----------------------------------------------------------------------------- in parallel, in order
class EncodingPool:
    """A pool of encoding processes (spawned, so that a parent holding CUDA or OpenMP threads is
    safe), started on first use. map() takes results in input order with a bounded number of tasks
    in flight, so memory does not grow with the corpus."""

    def __init__(self, processes: int):
        self.processes = processes
        self.pool: Any = None

    def map(self, tasks: Iterable[tuple[Chunk, Encoding]]) -> Iterator[Encoded]:
        tasks = iter(tasks)
        head = list(itertools.islice(tasks, 2))
        if self.processes <= 1 or len(head) < 2:  # one chunk: not worth a process
            yield from map(_encode_task, itertools.chain(head, tasks))
            return
        if self.pool is None:
            import multiprocessing

            self.pool = multiprocessing.get_context("spawn").Pool(self.processes)
        pending: collections.deque = collections.deque()
        for task in itertools.chain(head, tasks):
            pending.append(self.pool.apply_async(_encode_task, (task,)))
            if len(pending) >= 2 * self.processes:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def __enter__(self) -> EncodingPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


# ----------------------------------------------------------------------------- one corpus
def _dtypes(tok: Tokenizer, cleaning: Cleaning) -> tuple[str, str]:
    id_dtype = "uint16" if max(tok.src_vocab_size, tok.tgt_vocab_size) <= 1 << 16 else "int32"
    return id_dtype, "uint16" if cleaning.max_len + 1 < 1 << 16 else "int32"


def _prepare_one(inp: CorpusInput, enc: Encoding, pool: EncodingPool, out: Path, progress: OnProgress | None) -> dict:
    out.mkdir(parents=True)
    report = CleaningReport()
    lens: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
    hashes: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
    max_ids = [0, 0]  # the largest id of each side, recorded: opening the data checks it against the vocabulary
    read: collections.deque[float | None] = collections.deque()  # the share of the text read, per chunk in flight

    def tasks() -> Iterator[tuple[Chunk, Encoding]]:
        for chunk in inp.source.chunks(CHUNK):
            read.append(chunk.fraction)
            yield chunk, enc

    with open(out / "src.ids", "wb") as fs, open(out / "tgt.ids", "wb") as ft:
        for done in pool.map(tasks()):
            fs.write(done.src_ids.tobytes())
            ft.write(done.tgt_ids.tobytes())
            max_ids = [max(max_ids[0], int(done.src_ids.max(initial=0))), max(max_ids[1], int(done.tgt_ids.max(initial=0)))]
            lens["src"].append(done.src_lens)
            lens["tgt"].append(done.tgt_lens)
            if done.src_hash is not None and done.tgt_hash is not None:
                hashes["src"].append(done.src_hash)
                hashes["tgt"].append(done.tgt_hash)
            report.add(done.report)
            share = read.popleft()
            if progress:
                progress(inp.name, report.read, share)
        for f in (fs, ft):  # durable before prepared.json names them
            _sync(f)
    if report.read == 0:
        raise UserError(f"{inp.source.describe()}: the corpus is empty")
    sides = {side: np.concatenate(lens[side]) for side in ("src", "tgt")}
    if enc.hashes and len(sides["src"]):
        repeated = duplicates(np.concatenate(hashes["src"]), np.concatenate(hashes["tgt"]))
        report.duplicate = int(repeated.sum())
        if report.duplicate:
            for side in ("src", "tgt"):
                _drop_rows(out / f"{side}.ids", sides[side], ~repeated, enc.id_dtype)
                sides[side] = sides[side][~repeated]
    report.kept = len(sides["src"])
    if report.kept == 0:
        raise UserError(f"{inp.source.describe()}: no pair survives cleaning ({report.removed()})")
    for side, side_lens in sides.items():
        _save(out / f"{side}.len.npy", side_lens)
        _save(out / f"{side}.offsets.npy", _offsets(side_lens))
    return {"name": inp.name, "weight": inp.weight, "tag": inp.tag, "source": inp.source.identity(),
            "quick": inp.source.quick_identity(), "report": asdict(report), "pairs": report.kept,
            "tokens": [int(sides["src"].sum(dtype=np.int64)), int(sides["tgt"].sum(dtype=np.int64))],
            "max_ids": max_ids}


def _sync(f: IO) -> None:
    """An open file's bytes on the disk (the directory appears by one rename once all are)."""
    f.flush()
    os.fsync(f.fileno())


def _save_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        _sync(f)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)
        _sync(f)


def _drop_rows(path: Path, lens: np.ndarray, keep: np.ndarray, dtype: str, block: int = 1 << 20) -> None:
    """Rewrite a file of rows (ids one after the other) without the rows where keep is False,
    a block of rows at a time."""
    ids = np.memmap(path, dtype=dtype, mode="r")
    offsets = _offsets(lens)
    kept = path.with_name(path.name + ".kept")
    with open(kept, "wb") as f:
        for first in range(0, len(lens), block):
            last = min(first + block, len(lens))
            rows = ids[offsets[first]:offsets[last]]
            f.write(rows[np.repeat(keep[first:last], lens[first:last])].tobytes())
        _sync(f)
    del ids
    kept.replace(path)


# ----------------------------------------------------------------------------- a prepared directory
def prepare(inputs: list[CorpusInput], tok: Tokenizer, cleaning: Cleaning, out: Path, num_proc: int = 0,
            progress: OnProgress | None = None) -> dict:
    """Prepare `inputs` into the new directory `out` (it must not exist), which appears whole or
    not at all; returns its prepared.json."""
    tags = tag_ids(inputs, tok)
    id_dtype, len_dtype = _dtypes(tok, cleaning)
    work = make_temp_dir(out)
    try:
        with EncodingPool(encoding_processes(num_proc)) as pool:
            corpora = []
            for inp in inputs:
                enc = Encoding(str(tok.directory), cleaning, id_dtype, len_dtype, tags.get(inp.name, -1), cleaning.dedup)
                corpora.append(_prepare_one(inp, enc, pool, work / "corpora" / inp.name, progress))
        check_epoch_size([Part(c["name"], 0, c["pairs"], c["weight"]) for c in corpora])
        tok.copy_to(work / "tokenizer")
        info = {"format": FORMAT, "tokenizer": tok.fingerprint(), "id_dtype": id_dtype, "len_dtype": len_dtype,
                "cleaning": asdict(cleaning), "quick_key": quick_key(inputs, tok, cleaning), "corpora": corpora}
        info["id"] = content_id(info)
        _save_text(work / INFO, json.dumps(info, indent=1) + "\n")
        for d in (work, work / "corpora", *(work / "corpora" / i.name for i in inputs)):
            fsync_dir(d)
        work.rename(out)
        fsync_dir(out.parent)
    except OSError as e:  # writing failed (a full disk): the output, not the input, is named
        raise write_error(out, e) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return info


def prepare_cached(inputs: list[CorpusInput], tok: Tokenizer, cleaning: Cleaning, cache: Path, num_proc: int = 0,
                   progress: OnProgress | None = None) -> tuple[EncodedCorpus, dict]:
    """Prepared data in `cache`/<quick key> (prepared first if it is not there yet), mapped."""
    where = Path(cache) / quick_key(inputs, tok, cleaning)
    if not is_prepared(where):
        prepare(inputs, tok, cleaning, where, num_proc, progress)
    return load_prepared(where)


def encoding_processes(num_proc: int) -> int:
    """Processes that encode: num_proc (0: one per CPU), at most the CPUs this process may use
    (more only compete for them, each with its own copy of the tokenizer)."""
    return min(num_proc or cpu_count(), cpu_count())


def prepare_into(out: Path, inputs: list[CorpusInput], tok: Tokenizer, cleaning: Cleaning, num_proc: int = 0,
                 overwrite: bool = False, progress: OnProgress | None = None) -> dict | None:
    """`mtkit prepare -o OUT`: prepared.json of the data written to `out`, or None when `out`
    already holds exactly this data (same sources by path, size and time; tokenizer; settings).
    Other prepared data is replaced only with `overwrite` (mtkit's own entries; a user's files
    beside them stay); a directory that is not mtkit's prepared data is refused either way."""
    state = state_of(out)
    if state == "prepared" and not overwrite and read_info(out).get("quick_key") == quick_key(inputs, tok, cleaning):
        return None
    if state in ("prepared", "interrupted") and not overwrite:
        raise UserError(f"{out}: holds other prepared data; nothing was changed: pass --overwrite to replace it, "
                        "or choose another -o")

    def build(where: Path) -> dict:
        return prepare(inputs, tok, cleaning, where, num_proc, progress)

    if state == "new":
        return build(out)
    remove_leftovers(out)
    return replace_contents(out, build)
