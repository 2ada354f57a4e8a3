"""A prepared-data directory (what `mtkit prepare` writes, mtkit.data.prepare), its one owner:
what it holds, opening it checked, and replacing its contents without touching a user's files.

    DATA/prepared.json                      what it holds: format, tokenizer, cleaning, each corpus
                                            (weight, tag, source identity, cleaning counts, the
                                            largest id of each side), its id
    DATA/tokenizer/                         the tokenizer the ids come from
    DATA/corpora/NAME/{src,tgt}.ids         the ids of every kept pair, one after the other
    DATA/corpora/NAME/{src,tgt}.len.npy     each pair's length
    DATA/corpora/NAME/{src,tgt}.offsets.npy where each pair's ids start (pairs + 1 entries)

Opening one (`load_prepared`) reads prepared.json and maps the files: nothing grows with the
corpus but the length arrays (4 bytes a pair), and no text is read or hashed again. It checks
what is cheap to check: every file's size, each pair's length against its offsets, and the
largest id recorded at preparation against the tokenizer's vocabulary. (Ids changed in place
after preparation are caught batch by batch, mtkit.data.batching.)

Only mtkit's own entries (OWN) are ever replaced; a directory is mtkit's when its prepared.json
reads as mtkit's, or when it carries the REPLACING mark of an interrupted replacement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mtkit.data.corpus import CleaningReport, EncodedCorpus, Part, RaggedColumn
from mtkit.errors import UserError, describe
from mtkit.files import LOCK_NAME, TEMP_RE, DirLock, fsync_dir, remove_leftovers, temp_name, write_error

FORMAT = 1
INFO = "prepared.json"
REPLACING = ".mtkit-replacing"  # present while the contents are being replaced
OWN = (INFO, "tokenizer", "corpora", REPLACING, LOCK_NAME)


def content_id(info: dict) -> str:
    """What the prepared data is, from the content of its sources (not their paths): two
    directories prepared from the same text, tokenizer and settings have the same id."""
    what = {"format": info["format"], "tokenizer": info["tokenizer"], "cleaning": info["cleaning"],
            "corpora": [[c["name"], c["weight"], c["tag"], c["source"]] for c in info["corpora"]]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def read_info(directory: Path) -> dict:
    """prepared.json, checked; a missing or damaged one is refused in one line."""
    path = directory / INFO
    if not path.is_file():
        raise UserError(f"{directory}: not prepared data ({INFO} is missing); make it with `mtkit prepare`")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, this mtkit reads format {FORMAT}")
        if content_id(info) != info["id"]:
            raise ValueError("its id does not match its content")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: damaged ({describe(e, 80)}); prepare the data again") from None
    return info


def load_prepared(directory: str | Path) -> tuple[EncodedCorpus, dict]:
    """Map a prepared directory (checked against its prepared.json) and return it with its info."""
    directory = Path(directory)
    info = read_info(directory)
    vocab = _vocabulary(directory)
    columns: dict[str, tuple[list, list, list]] = {"src": ([], [], []), "tgt": ([], [], [])}
    parts, start = [], 0
    for c in info["corpora"]:
        for k, side in enumerate(("src", "tgt")):
            d = directory / "corpora" / c["name"]
            offsets, values, lens = _map_side(d, side, c["pairs"], c["tokens"][k], info)
            if "max_ids" in c and vocab is not None and c["max_ids"][k] >= vocab[k]:
                raise UserError(f"{d}: damaged prepared data ({side} ids reach {c['max_ids'][k]:,}, the tokenizer "
                                f"has {vocab[k]:,}); prepare the data again")
            columns[side][0].append(offsets)
            columns[side][1].append(values)
            columns[side][2].append(lens)
        parts.append(Part(c["name"], start, c["pairs"], c["weight"], c["tag"], CleaningReport(**c["report"])))
        start += c["pairs"]
    src, tgt = (RaggedColumn.of_chunks(*columns[side]) for side in ("src", "tgt"))
    return EncodedCorpus(src, tgt, parts, directory), info


def _vocabulary(directory: Path) -> tuple[int, int] | None:
    """The vocabulary sizes of the tokenizer stored beside the ids (None when it does not say)."""
    try:
        meta = json.loads((directory / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
        return int(meta["src_vocab_size"]), int(meta["tgt_vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


BLOCK = 1 << 22  # pairs compared at a time: memory stays flat whatever the corpus


def _map_side(d: Path, side: str, pairs: int, tokens: int, info: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        lens = np.load(d / f"{side}.len.npy", mmap_mode="r")
        offsets = np.load(d / f"{side}.offsets.npy", mmap_mode="r")
        ids_path = d / f"{side}.ids"
        expected = tokens * np.dtype(info["id_dtype"]).itemsize
        if ids_path.stat().st_size != expected:
            raise ValueError(f"{ids_path.name} holds {ids_path.stat().st_size:,} bytes, {expected:,} expected")
        if lens.shape != (pairs,) or offsets.shape != (pairs + 1,) or int(offsets[-1]) != tokens:
            raise ValueError(f"the {side} lengths or offsets do not match {pairs:,} pairs")
        for first in range(0, pairs, BLOCK):
            last = min(first + BLOCK, pairs)
            if not np.array_equal(np.diff(offsets[first:last + 1]), lens[first:last]):
                bad = first + int(np.flatnonzero(np.diff(offsets[first:last + 1]) != lens[first:last])[0])
                raise ValueError(f"{side}.len.npy says pair {bad:,} has {int(lens[bad])} tokens, its offsets "
                                 f"{int(offsets[bad + 1] - offsets[bad])}")
        values = np.memmap(ids_path, dtype=info["id_dtype"], mode="r", shape=(tokens,))
    except (OSError, ValueError) as e:
        raise UserError(f"{d}: damaged prepared data ({describe(e, 140)}); prepare the data again") from None
    return offsets, values, lens


def is_prepared(directory: Path) -> bool:
    return (directory / INFO).is_file()


def state_of(out: Path) -> str:
    """What `out` is to `mtkit prepare -o`: 'new' (nothing there), 'empty' (a directory holding
    nothing but what a killed mtkit left), 'prepared' (mtkit's prepared data), 'interrupted' (a
    replacement that did not finish). Anything else is refused, with or without --overwrite."""
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if (out / REPLACING).exists():
        return "interrupted"
    if is_prepared(out):
        try:
            read_info(out)
        except UserError as e:
            raise UserError(f"{out}: its {INFO} is not mtkit's ({e}); nothing was changed: choose another -o "
                            "(mtkit only replaces its own prepared data)") from None
        return "prepared"
    if any(p.name not in OWN and not TEMP_RE.fullmatch(p.name) for p in out.iterdir()):
        raise UserError(f"{out}: exists and is not prepared data; nothing was changed: choose another -o")
    return "empty"


def replace_contents(out: Path, build: Callable[[Path], dict]) -> dict:
    """Build new prepared data and put it in the existing directory `out` in place of mtkit's
    own entries (a user's files beside them stay): the new data is built whole first; then, under
    the directory's lock and with the REPLACING mark set, the old entries are renamed away, the
    new ones renamed in, prepared.json last; what was renamed away is deleted after. A process
    killed on the way leaves the mark, and the next `mtkit prepare --overwrite` finishes the job."""
    try:
        with DirLock(out):
            remove_leftovers(out)
            staging = temp_name(out / "incoming")  # a leftover if killed: removed by the next prepare
            info = build(staging)
            (out / REPLACING).touch()
            fsync_dir(out)
            (out / INFO).unlink(missing_ok=True)
            for name in ("corpora", "tokenizer"):
                if (out / name).exists():
                    (out / name).rename(temp_name(out / name))
            for name in ("corpora", "tokenizer", INFO):
                (staging / name).rename(out / name)
            fsync_dir(out)
            (out / REPLACING).unlink()
            fsync_dir(out)
            remove_leftovers(out)  # the old entries and the staging directory
    except OSError as e:
        raise write_error(out, e) from None
    return info
