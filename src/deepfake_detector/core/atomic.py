"""Output files that are whole or absent, written by one run at a time.

A results file (``predict --json/--csv``) or a report folder (``predict --explain``) is
written under a hidden temporary name in its own folder and moved onto its path with one
rename (:func:`os.replace`, atomic on POSIX filesystems): a run that is interrupted (Ctrl-C,
a full disk, a serializer that raises halfway) leaves the previous file as it was, byte for
byte, and never a truncated one.

Renaming alone would still let the last of two runs on one path win silently, so a run also
holds :class:`OutputLock` on each of its output paths: ``<file>.lock`` next to an output file,
``<folder>/.lock`` inside an output folder, locked with ``flock``. The kernel drops the lock
when its process dies, however it dies, so a killed run leaves no stale lock behind; the
second run is refused with the path and the first run's pid.

Example:
    >>> with OutputLock([Path("out/results.json")]):  # doctest: +SKIP
    ...     with atomic_path(Path("out/results.json")) as tmp:
    ...         tmp.write_text(text)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Iterable, Iterator

LOCK_SUFFIX = ".lock"
# The lock file of an output folder, inside it (its parent may be a folder we cannot write).
FOLDER_LOCK = ".lock"


class OutputBusyError(Exception):
    """Another run holds the lock of an output path.

    Attributes:
        path: The output path.
        pid: The process id written in the lock file (``"unknown"`` when it could not be read).
    """

    def __init__(self, path: Path, pid: str, lock: Path) -> None:
        self.path, self.pid = path, pid
        super().__init__(f"{path}: another run (pid {pid}) is writing it; wait for it to finish or choose another "
                         f"path (its lock: {lock})")


def _target(path: Path) -> Path:
    """The file that a write to ``path`` replaces: a symlink's target, not the link itself."""
    return Path(os.path.realpath(path))


def _hidden_name(target: Path, kind: str) -> Path:
    """A fresh hidden name next to ``target`` (``.results.json.<pid>.<random>.tmp``)."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` to write; it becomes ``path`` when the block ends normally.

    The temporary file is created empty (with the permissions a new file gets, or those of
    the file it replaces). When the block raises, whatever it is (``KeyboardInterrupt``
    included), the temporary file is removed and ``path`` is left as it was.

    Args:
        path: The output file (its folder is created when missing; a symlink's target is replaced).

    Yields:
        The temporary file's path.
    """
    target = _target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_name(target, "tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as to any new file
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        _fsync(tmp)  # the bytes are on disk before the name points at them
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        _fsync(target.parent, directory=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder name next to ``path``; the folder made there replaces ``path`` when the block ends normally.

    The name yielded does not exist yet: the block creates the folder and fills it. Then the
    previous ``path`` folder, if any, is moved aside, the new one renamed into place and the
    old one deleted (a folder that holds files cannot be replaced in one rename). When the
    block raises, the new folder is deleted and ``path`` is left as it was.

    Args:
        path: The output folder.

    Yields:
        The temporary folder's path.

    Raises:
        NotADirectoryError: If ``path`` exists and is not a folder (checked before the block runs).
    """
    target = _target(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_name(target, "tmp")
    try:
        yield tmp
        if tmp.is_dir():
            _swap_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_dir(new: Path, target: Path) -> None:
    if not target.exists():
        os.rename(new, target)
        return
    old = _hidden_name(target, "old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)  # the previous folder goes back
        raise
    shutil.rmtree(old, ignore_errors=True)


def lock_file(path: Path, folder: bool = False) -> Path:
    """The lock file of an output path: ``<path>.lock`` next to a file, ``<path>/.lock`` in a folder."""
    target = _target(path)
    return target / FOLDER_LOCK if folder else target.with_name(target.name + LOCK_SUFFIX)


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _lock(path: Path, lock: Path, tries: int = 100) -> int:
    """Lock ``lock``, the lock file of ``path``; its open descriptor.

    Raises:
        OutputBusyError: If another process holds it.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(tries):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusyError(path, holder, lock) from None
        # The run before ours may have removed the file between our open and our lock: a lock
        # on a removed file guards nothing, so lock the file that is there now.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise OSError(f"could not lock {lock}: it keeps being replaced")


class OutputLock:
    """Hold the lock of each output path for the life of a run (a context manager).

    Args:
        files: The output files (one named twice, or through a symlink, is locked once).
        folders: The output folders (created, to hold their lock).

    Raises:
        OutputBusyError: On entry, if another run holds one of them (none is held then).
        OSError: On entry, if a lock file cannot be created.
    """

    def __init__(self, files: Iterable[Path] = (), folders: Iterable[Path] = ()) -> None:
        self.locks = {lock_file(p): Path(p) for p in files} | {lock_file(p, folder=True): Path(p) for p in folders}
        self._held: list[tuple[Path, int]] = []

    def acquire(self) -> None:
        """Take every lock, or none (what entering the context does)."""
        try:
            for lock, path in self.locks.items():
                self._held.append((lock, _lock(path, lock)))
        except BaseException:
            self.release()
            raise

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock files and let go of the locks (removed first, while still held)."""
        while self._held:
            lock, fd = self._held.pop()
            try:
                lock.unlink(missing_ok=True)
            finally:
                os.close(fd)
