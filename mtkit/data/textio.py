"""Reading and writing text files: UTF-8, optional gzip, errors that name the file and line.

Standard library only, so that `mtkit bleu` stays light.
"""

from __future__ import annotations

import codecs
import gzip
import io
from collections.abc import Iterator
from pathlib import Path

from mtkit.errors import UserError


def require_file(path: str | Path) -> None:
    """Refuse, naming it, an input path that is missing or is a directory."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file")
    if not path.exists():
        raise UserError(f"{path}: no such file")


def _open_binary(path: Path) -> io.BufferedIOBase:
    require_file(path)
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
    """The number of lines of a text file (.gz read transparently), without decoding it: what a
    progress bar needs before the work starts (a GB a second or so)."""
    path = Path(path)
    lines, last = 0, b"\n"
    with _open_binary(path) as f:
        try:
            while block := f.read(1 << 20):
                lines, last = lines + block.count(b"\n"), block[-1:]
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise UserError(f"{path}: cannot read ({e})") from e
    return lines + (last != b"\n")


def check_text(path: str | Path) -> int:
    """The number of lines of a text file, having checked that all of it is readable UTF-8.
    Reads 1 MB blocks (seconds for a WMT-sized corpus); an error names the file and line."""
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines, last = 0, b"\n"
    with _open_binary(path) as f:
        try:
            while block := f.read(1 << 20):
                _decode_or_locate(decoder, block, path)
                lines, last = lines + block.count(b"\n"), block[-1:]
            _decode_or_locate(decoder, b"", path, final=True)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise UserError(f"{path}: cannot read ({e})") from e
    return lines + (last != b"\n")


def _decode_or_locate(decoder: codecs.IncrementalDecoder, block: bytes, path: Path, final: bool = False) -> None:
    try:
        decoder.decode(block, final)
    except UnicodeDecodeError:
        for _ in iter_lines(path):  # raises naming the line
            pass
        raise UserError(f"{path}: invalid UTF-8") from None
