"""Writing files so that a crash, a full disk or a second writer never loses data.

* :func:`atomic_write` / :func:`atomic_write_text`: a temporary file in the target's folder, fsync, rename over
  the target, fsync the folder. A reader sees the old file or the new one, never half of one.
* :func:`replace_dir`: the same for a folder (weights): the new folder is complete and fsynced, the old one is
  renamed aside (``.<name>.old``), the new one renamed in, the old one deleted. An interruption between the two
  renames is undone at once (or, after a hard kill, by :func:`settle_dir` on the next read or write), so the
  target is always either the old or the new complete folder.
* :func:`path_lock`: one writer per target (``fcntl.flock`` on ``.<name>.lock`` beside it; the lock file names the
  holder's pid and host so a waiting writer can say whom it waits for). flock locks die with their process.
* Everything is created with the user's umask (0644/0755 under umask 022), as ``open`` and ``mkdir`` would.
* :func:`write_errors`: a full disk or an unwritable folder becomes one SegbenchError line naming the path.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from .errors import SegbenchError

# ================================================================ permissions


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would, briefly, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` would give a new folder: 0o777 minus the umask."""
    return 0o777 & ~current_umask()


# ================================================================ errors


def write_error(exc: OSError, path: str | Path) -> SegbenchError | None:
    """One line for the OS errors a user can fix (full disk, unwritable folder); None for anything else."""
    where = Path(exc.filename) if exc.filename else Path(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SegbenchError(f"{where}: no space left on device (or quota exceeded); "
                             "free some space on that disk or write to another folder")
    if exc.errno == errno.EROFS:
        return SegbenchError(f"{where if where.is_dir() else where.parent}: folder is on a read-only file system; "
                             "write to another folder")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SegbenchError(f"{where if where.is_dir() else where.parent}: folder is not writable (permission "
                             "denied); fix its permissions or write to another folder")
    return None


@contextmanager
def write_errors(path: str | Path) -> Iterator[None]:
    """Turn a full disk or an unwritable folder met while writing ``path`` into one SegbenchError line."""
    try:
        yield
    except OSError as exc:
        friendly = write_error(exc, path)
        if friendly is None:
            raise
        raise friendly from None


# ================================================================ files


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable (some file systems cannot fsync a folder: then nothing to do)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temporary file beside ``path``, fsync, rename over ``path``, fsync the folder.

    On any failure (including Ctrl-C) the temporary file is removed and ``path`` is untouched; a full disk or an
    unwritable folder raises one SegbenchError line."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes 0600 files; the user's umask decides who may read
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ================================================================ paths from outside data


def confined(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative`` when it stays inside ``root`` once resolved (``..``, an absolute path or a symbolic
    link pointing out would leave it), else a one-line SegbenchError naming ``what``. For every path built from
    data this process did not write: manifest entries, record fields, URIs."""
    base = Path(root).resolve()
    if not isinstance(relative, str) or not relative or "\x00" in relative or Path(relative).is_absolute():
        raise SegbenchError(f"{what} {relative!r}: not a relative path inside {base}")
    path = (base / relative).resolve()
    if path == base or not path.is_relative_to(base):
        raise SegbenchError(f"{what} {relative!r}: leaves {base}; only paths inside it are read or written")
    return path


# ================================================================ folders


def make_temp_dir(final: Path) -> Path:
    """An empty hidden folder beside ``final`` (same file system, so it can be renamed in), umask-mode."""
    with write_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
        os.chmod(tmp, dir_mode())  # mkdtemp makes 0700 folders
    return tmp


def fsync_tree(folder: Path) -> None:
    """Give every file in ``folder`` (one level) the umask's mode (safetensors writes 0600 whatever the umask),
    fsync it, then fsync the folder."""
    mode = file_mode()
    for item in folder.iterdir():
        if item.is_file():
            os.chmod(item, mode)
            with open(item, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)


def aside_path(final: Path) -> Path:
    """Where :func:`replace_dir` parks the old folder between its two renames."""
    return final.parent / f".{final.name}.old"


def settle_dir(final: Path) -> None:
    """Finish an interrupted :func:`replace_dir`: put the old folder back if the new one never arrived, or
    delete a leftover old folder. Call it holding :func:`path_lock` (``replace_dir`` does)."""
    aside = aside_path(final)
    if not aside.exists():
        return
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(aside, final)
        fsync_dir(final.parent)


def recover_dir(final: Path) -> None:
    """Readers: if a writer was killed between its two renames, put the old folder back (under the lock, so a
    writer in the middle of its swap finishes first). Quiet when nothing is to be done or the folder is read-only."""
    if final.exists() or not aside_path(final).exists():
        return
    try:
        with path_lock(final, log=lambda _: None):
            settle_dir(final)
    except (OSError, SegbenchError):
        pass


def replace_dir(new: Path, final: Path) -> None:
    """Swap the complete folder ``new`` in as ``final`` (hold :func:`path_lock` on ``final``).

    new fsynced -> old renamed aside -> new renamed in -> folder fsynced -> old deleted. If the second rename
    fails the old folder is renamed back before the error propagates."""
    with write_errors(final):
        fsync_tree(new)
        settle_dir(final)
        aside = aside_path(final)
        had_old = final.exists()
        if had_old:
            os.rename(final, aside)
        try:
            os.rename(new, final)
        except BaseException:
            if had_old and not final.exists():
                os.rename(aside, final)
            raise
        fsync_dir(final.parent)
        if had_old:
            shutil.rmtree(aside, ignore_errors=True)  # a leftover is removed by the next settle_dir


# ================================================================ locking


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process"


def _try_lock(lock: Path) -> int | None:
    """An fd holding the flock of ``lock``, or None if another writer holds it (or just removed the file)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The holder deletes the lock file before unlocking; a lock won on a deleted file guards nothing.
        if os.fstat(fd).st_ino == os.stat(lock).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


@contextmanager
def path_lock(target: Path, *, timeout: float | None = 600.0, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of ``target`` (a file or folder); a second writer logs whom it waits for, then waits.

    After ``timeout`` seconds (None: forever) it gives up with one SegbenchError line naming the holder.
    The lock file (``.<name>.lock``, holding "pid N on HOST since T") is removed on release."""
    lock = target.parent / f".{target.name}.lock"
    start, told = time.monotonic(), False
    while True:
        with write_errors(lock):
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = _try_lock(lock)
        if fd is not None:
            break
        if not told:
            log(f"{target}: waiting for {_holder(lock)} to finish writing it")
            told = True
        if timeout is not None and time.monotonic() - start > timeout:
            raise SegbenchError(f"{target}: still locked by {_holder(lock)} after {timeout:.0f} s; wait for "
                                "that run to finish or stop it")
        time.sleep(0.05)
    try:
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)  # a holder killed earlier left its line
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        yield
    finally:
        Path(lock).unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
