"""Atomic file writes: a crash or a full disk mid-write never leaves a half-written file behind.

Every write goes to a temp file beside the target (``.<name>.<random>.tmp``), is flushed and fsynced, optionally
checked by a ``verify`` callback, and only then renamed over the target. A failure at any point removes the temp
file and leaves the previous version of the target as it was; an operating-system failure (full disk, read-only
folder, no permission) becomes a :class:`WriteError` whose message names the file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "TEMP_SUFFIX",
    "WriteError",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_temp_file",
    "out_folder",
    "remove_temp_files",
    "terminate_cleanly",
]

#: Suffix of the temp files of :func:`atomic_write_bytes` (a killed process can leave one behind).
TEMP_SUFFIX = ".tmp"


class WriteError(OSError):
    """A file that could not be written (full disk, read-only folder, no permission); its old version is intact."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        reason = cause.strerror or str(cause) or type(cause).__name__
        super().__init__(cause.errno, f"cannot write {path}: {reason} (any previous version of it is left intact)")
        self.filename = str(path)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[1])


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is named like a temp file of :func:`atomic_write_bytes`."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.name.count(".") >= 3


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that killed writes left in ``folder`` (not its sub-folders); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.is_file() and is_temp_file(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: str | Path, write: Callable[[IO[bytes]], object], verify: Callable[[Path], object] | None = None
) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync it, then rename it to ``path``.

    Args:
        path: the target file.
        write: writes the content to the open binary file.
        verify: called with the temp file's path once it is on disk, before the rename; an exception it raises
            aborts the write (the temp file is removed, the previous ``path`` stays).

    Raises:
        WriteError: the folder or the file could not be written (full disk, read-only folder, no permission).
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(path, exc) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically to ``path``."""
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def out_folder(path: str | Path, what: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) or say in one line why it cannot be one.

    Raises:
        NotADirectoryError: ``path`` is a file.
        WriteError: the file system refused (read-only, no permission, full, a parent that is a file).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(20, f"{what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(path, exc) from None
    if not os.access(path, os.W_OK):
        raise WriteError(path, PermissionError(13, "no permission to write there"))
    return path


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Within the block, SIGTERM ends the process like an exception (exit status 143), so ``finally`` clauses and
    context managers remove their temporaries; outside it (and off the main thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
