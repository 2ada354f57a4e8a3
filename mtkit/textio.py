"""Reading and writing text files: UTF-8, optional gzip, errors that name the file and line.

Standard library only, so that `mtkit bleu` stays light.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mtkit.errors import UserError


def _open_binary(path: Path) -> io.BufferedIOBase:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file")
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # type: ignore[return-value]
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from e


def decode_line(raw: bytes, path: Path | str, lineno: int) -> str:
    """One line of UTF-8 without its line ending (\\n or \\r\\n) and, on line 1, without a BOM."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}:{lineno}: invalid UTF-8 (byte {e.start + 1} of the line)") from e


def iter_lines(path: str | Path) -> Iterator[str]:
    """Stream the lines of a text file (.gz read transparently); only \\n separates lines."""
    path = Path(path)
    with _open_binary(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                yield decode_line(raw, path, lineno)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise UserError(f"{path}: cannot read ({e})") from e


def read_lines(path: str | Path) -> list[str]:
    return list(iter_lines(path))


def count_lines(path: str | Path) -> int:
    n = 0
    with _open_binary(Path(path)) as f:
        for _ in f:
            n += 1
    return n


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
