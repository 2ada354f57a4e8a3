"""Writing files so that nothing is lost: atomic, durable, with the user's permissions; and a lock.

- `atomic_write(path)` writes to a temporary file beside `path`, fsyncs it, renames it over `path`
  and fsyncs the directory: a reader (or a crash, or a power loss) sees the old file or the new
  one, never half of one. The file gets the permissions of a normal `open()` (0666 minus the
  umask), not mkstemp's 0600, so a model shared between users loads.
- Temporary names all look like `.NAME.XXXXXXXX.tmp` (`TEMP_GLOB`), so that what a killed process
  left behind can be recognised and removed by the next one that holds the lock.
- `DirLock` is an advisory `flock` on `DIR/.lock`: the kernel releases it when its process dies,
  so a lock left by a dead process is simply taken over.

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mtkit.errors import UserError

TEMP_GLOB = ".*.tmp"
LOCK_NAME = ".lock"


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path` that TEMP_GLOB matches."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write `path` whole or not at all (see the module docstring). On an exception the
    temporary file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete the temporary files and folders a killed mtkit process left in `directory`
    (only call this while holding the directory's lock); returns what was removed."""
    removed = []
    for path in directory.glob(TEMP_GLOB):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def default_dir_mode() -> int:
    """0777 minus the umask: what `mkdir` gives, for directories made by mkdtemp (0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


class DirLock:
    """An exclusive lock on a directory for one process; `with DirLock(d):` or acquire/release.

    The lock file holds the owner's PID, for the error message of whoever is refused."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            owner = self.path.read_text(errors="replace").strip() or "unknown"
            raise UserError(f"{self.path.parent}: locked by PID {owner} (another mtkit process is using it; "
                            "wait for it to finish or stop it)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
