"""Where parallel text comes from: two aligned files, one TSV/JSONL file, or a `datasets` hub id.

Each source is read in chunks of raw lines (decoded and encoded elsewhere, in parallel), knows a
quick identity (paths, sizes, modification times: what a restart compares, without reading) and,
once read, a content identity (SHA-256 of the text, or the hub's fingerprint).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mtkit.config import CorpusSpec
from mtkit.data.textio import _open_binary, check_text, iter_lines, require_file
from mtkit.data.tokenizer import file_sha256
from mtkit.errors import UserError
from mtkit.files import atomic_write


@dataclass
class Chunk:
    """Consecutive pairs of a source: raw lines (bytes, decoded by the encoder) or text (str)."""

    src: list  # list[bytes] | list[str]
    tgt: list
    first_line: int  # of the first pair, counted from 1
    src_name: str  # for error messages: the file, or the source's description
    tgt_name: str
    fraction: float | None = None  # the share of the source read once this chunk is (None: unknown)


def _stat(path: Path) -> list:
    require_file(path)
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


@dataclass(frozen=True)
class TextPair:
    """Two aligned plain-text files, one sentence per line (.gz read transparently)."""

    src: Path
    tgt: Path
    _hashes: dict = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.src} + {self.tgt}"

    def check(self) -> int:
        n_src, n_tgt = check_text(self.src), check_text(self.tgt)
        if n_src != n_tgt:
            raise UserError(f"{self.src} has {n_src} lines but {self.tgt} has {n_tgt}: the files are not parallel")
        return n_src

    def quick_identity(self) -> dict:
        return {"src": _stat(self.src), "tgt": _stat(self.tgt)}

    def identity(self) -> dict:
        """SHA-256 of each file's text (decompressed), known once chunks() has read it all."""
        if "src" not in self._hashes:
            for _ in self.chunks(1 << 16):
                pass
        return {"src_text_sha256": self._hashes["src"], "tgt_text_sha256": self._hashes["tgt"]}

    def chunks(self, size: int) -> Iterator[Chunk]:
        hashes = {"src": hashlib.sha256(), "tgt": hashlib.sha256()}
        size_of_src = self.src.stat().st_size
        with _open_binary(self.src) as fs, _open_binary(self.tgt) as ft:
            first = 1
            while True:
                try:
                    src, tgt = list(itertools.islice(fs, size)), list(itertools.islice(ft, size))
                except (OSError, EOFError) as e:
                    raise UserError(f"{self.describe()}: cannot read ({e})") from None
                if len(src) != len(tgt):
                    n_src, n_tgt = first - 1 + len(src), first - 1 + len(tgt)
                    longer, shorter = (self.src, self.tgt) if n_src > n_tgt else (self.tgt, self.src)
                    raise UserError(f"{shorter} ends at line {min(n_src, n_tgt)} but {longer} goes on: "
                                    "the files are not parallel")
                if not src:
                    break
                hashes["src"].update(b"".join(src))
                hashes["tgt"].update(b"".join(tgt))
                yield Chunk(src, tgt, first, str(self.src), str(self.tgt), _share_read(fs, size_of_src))
                first += len(src)
        self._hashes.update({k: h.hexdigest() for k, h in hashes.items()})


def _share_read(f, size: int) -> float | None:
    """How much of a file (plain, or gzip: its compressed bytes) has been read, 0..1."""
    raw = getattr(f, "fileobj", None) or f  # a GzipFile reads its compressed file through fileobj
    try:
        return min(1.0, raw.tell() / size) if size else 1.0
    except (OSError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class TableFile:
    """A TSV (source<TAB>target) or JSONL file ({"src": ..., "tgt": ...}; keys may be dotted)."""

    path: Path
    src_key: str = "src"
    tgt_key: str = "tgt"

    def describe(self) -> str:
        return str(self.path)

    def check(self) -> int:
        return check_text(self.path)

    def quick_identity(self) -> dict:
        return {"table": _stat(self.path), "keys": [self.src_key, self.tgt_key]}

    def identity(self) -> dict:
        return {"table_sha256": file_sha256(self.path), "keys": [self.src_key, self.tgt_key]}

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

    def chunks(self, size: int) -> Iterator[Chunk]:
        yield from _row_chunks(self.rows(), size, self.describe())


def _field(obj: object, key: str, where: str) -> str:
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise UserError(f"{where}: field {key!r} is missing")
        obj = obj[part]
    if not isinstance(obj, str):
        raise UserError(f"{where}: field {key!r} is not a string")
    return obj


def _row_chunks(rows: Iterator[tuple[str, str]], size: int, name: str) -> Iterator[Chunk]:
    first = 1
    while pairs := list(itertools.islice(rows, size)):
        yield Chunk([p[0] for p in pairs], [p[1] for p in pairs], first, name, name)
        first += len(pairs)


@dataclass(frozen=True)
class HubCorpus:
    """A `datasets` hub dataset, e.g. name=wmt14 config=de-en split=train keys translation.en/.de."""

    name: str
    config: str | None
    split: str
    src_key: str
    tgt_key: str

    def describe(self) -> str:
        return f"{self.name}[{self.split}]"

    def load(self):
        unreachable = None if Path(self.name).exists() else offline_unless_reachable()
        import datasets

        try:
            return datasets.load_dataset(self.name, self.config, split=self.split)
        except Exception as e:  # datasets raises many types for offline / missing / bad config
            why = f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            if unreachable:
                why = f"the hub cannot be reached ({unreachable}) and the dataset is not in the local cache"
            raise UserError(f"cannot load dataset {self.name!r} (config {self.config}, split {self.split}): "
                            f"{why}") from None

    def check(self) -> int:
        return len(self.load())

    def quick_identity(self) -> dict:
        return {"hub": [self.name, self.config, self.split], "keys": [self.src_key, self.tgt_key]}

    def identity(self) -> dict:
        return {"hub_fingerprint": self.load()._fingerprint, "keys": [self.src_key, self.tgt_key]}

    def rows(self) -> Iterator[tuple[str, str]]:
        for i, row in enumerate(self.load()):
            where = f"{self.describe()} row {i}"
            yield _field(row, self.src_key, where), _field(row, self.tgt_key, where)

    def chunks(self, size: int) -> Iterator[Chunk]:
        yield from _row_chunks(self.rows(), size, self.describe())


def offline_unless_reachable(timeout: float = 3.0) -> str | None:
    """datasets retries an unreachable hub for half a minute, a dozen lines of retries, before it
    says so. So the hub's host is tried first: if it cannot be reached within `timeout` seconds,
    datasets is put in offline mode (its local cache still answers) and the reason is returned.
    None when the hub answered, or offline mode was already asked for."""
    import socket
    import sys
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return None
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as e:
        reason = f"{host}: {e.strerror or e}"
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module, names in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        if module in sys.modules:  # already imported: they read the environment once
            for name in names:
                setattr(sys.modules[module], name, True)
    return reason


Source = TextPair | TableFile | HubCorpus


def source_from_paths(src: str | Path, tgt: str | Path | None = None) -> Source:
    """Two files, or one TSV/JSONL file when tgt is None."""
    if tgt is not None:
        return TextPair(Path(src), Path(tgt))
    return TableFile(Path(src))


def source_from_spec(spec: CorpusSpec, where: str) -> Source:
    """The source a [[data.corpora]] table names; a missing file is named with its key."""
    if spec.hub:
        return HubCorpus(spec.hub, spec.hub_config or None, spec.split, spec.src_key, spec.tgt_key)
    for key in ("src", "tgt", "table"):
        if getattr(spec, key):
            try:
                require_file(getattr(spec, key))
            except UserError as e:
                raise UserError(f"{where} {key}: {e}") from None
    if spec.table:
        return TableFile(Path(spec.table), spec.src_key or "src", spec.tgt_key or "tgt")
    return TextPair(Path(spec.src), Path(spec.tgt))


def export_pairs(source: Source, src_out: Path, tgt_out: Path) -> int:
    """Write a corpus as two plain-text files (one sentence per line); returns the number of pairs.
    Line breaks inside a sentence become spaces so the files stay parallel."""
    n = 0
    with atomic_write(src_out, "w", encoding="utf-8") as fs, atomic_write(tgt_out, "w", encoding="utf-8") as ft:
        for chunk in source.chunks(1 << 14):
            for src, tgt in zip(chunk.src, chunk.tgt):
                src, tgt = (s if isinstance(s, str) else s.decode("utf-8") for s in (src, tgt))
                fs.write(" ".join(src.splitlines()) + "\n")
                ft.write(" ".join(tgt.splitlines()) + "\n")
                n += 1
    return n


def cpu_count() -> int:
    """CPUs this process may use (its affinity, which containers and taskset restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
