"""Writing files so that nothing is lost: atomic, durable, with the user's permissions; and a lock.

- `atomic_write(path)` writes to a temporary file beside `path`, fsyncs it, renames it over `path`
  and fsyncs the directory: a reader (or a crash, or a power loss) sees the old file or the new
  one, never half of one. The file gets the permissions of a normal `open()` (0666 minus the
  umask), not mkstemp's 0600, so a model shared between users loads.
- Temporary names all look like `.NAME.PID-XXXXXXXX.tmp` (`TEMP_RE`), so that what a killed
  process left behind can be recognised and removed: by the next process that holds the
  directory's lock (all of them), or by the next writer of the same NAME (those whose PID is no
  longer alive, `remove_stale_temps`), so that a killed `translate -o` or `tokenizer train`
  leaves nothing behind for long.
- A failed write (a full disk, a read-only file system) becomes one line naming the file and
  saying what happened (`write_error`), never a traceback.
- `DirLock` is an advisory `flock` on `DIR/.lock`: the kernel releases it when its process dies,
  so a lock left by a dead process is simply taken over.

Standard library only.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import gzip
import io
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mtkit.errors import UserError, describe

TEMP_GLOB = ".*.tmp"
# What mtkit's temporary names look like: .NAME.PID-XXXXXXXX.tmp (and .NAME.XXXXXXXX.tmp, as earlier
# versions named them). A user's own `.notes.tmp` does not match, and is never removed.
TEMP_RE = re.compile(r"\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[0-9a-f]{8}\.tmp")
LOCK_NAME = ".lock"


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path` that TEMP_RE matches, naming this process."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: another user's live process
        return True
    return True


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files and folders for `path` that processes no longer alive left
    beside it (a killed `translate -o`, `tokenizer train`, `convert`); returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            m = TEMP_RE.fullmatch(temp.name)
            if m and m["name"] == path.name and m["pid"] and not _alive(int(m["pid"])):
                remove_path(temp)
                removed.append(temp)
    return removed


def make_temp_dir(path: Path) -> Path:
    """A fresh temporary directory beside `path` (named by temp_name, stale ones of earlier
    processes removed first, `path`'s parent made if missing) with the permissions `mkdir` gives,
    for a result that appears whole by one rename."""
    work = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        work.mkdir(mode=default_dir_mode())
    except OSError as e:
        raise write_error(path, e) from None
    return work


def disk_full(directory: Path) -> bool:
    """Whether the file system of `directory` has (next to) no room left: libraries that report
    a failed write in their own words (torch.save, SentencePiece) are told apart by this."""
    directory = Path(directory).absolute()
    while not directory.exists() and directory != directory.parent:  # the file system it would be on
        directory = directory.parent
    try:
        return shutil.disk_usage(directory).free < (1 << 20)
    except OSError:
        return False


def write_error(path: Path, error: BaseException) -> UserError:
    """One line for a write of `path` that failed: a full disk names the directory that is full."""
    path = Path(path)
    no_room = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or disk_full(path.parent)
    if no_room:
        return UserError(f"{path.parent}: the disk is full (no space left on device while writing {path.name}); "
                         "free some space and run the command again")
    if isinstance(error, OSError) and error.strerror:
        return UserError(f"{path}: cannot write ({error.strerror})")
    return UserError(f"{path}: cannot write ({describe(error)})")


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
    """Write `path` whole or not at all (see the module docstring); mode "wb" or "w". Text ("w")
    to a name ending in .gz is written gzip-compressed, as every text reader of mtkit's reads it
    (binary files, checkpoints, are written as they are). On an exception
    the temporary file is removed and `path` is left as it was; a failed write (OSError) becomes
    a UserError naming the file (write_error)."""
    path = Path(path)
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except OSError as e:
        raise write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as raw:
            binary: IO[bytes] = raw
            if path.name.endswith(".gz") and "b" not in mode:
                binary = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[assignment]
            f: IO = binary if "b" in mode else io.TextIOWrapper(binary, encoding=encoding or "utf-8")
            yield f
            if f is not binary:
                f.flush()
                f.detach()  # type: ignore[attr-defined]
            if binary is not raw:
                binary.close()  # the gzip trailer; the file itself stays open
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except OSError as e:
        failure = write_error(path, e)  # while the temporary file still takes its room
        tmp.unlink(missing_ok=True)
        raise failure from None
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
        if TEMP_RE.fullmatch(path.name):
            remove_path(path)
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
