"""Folder locks: one writer per run folder and per teacher-cache folder.

``augkd train`` holds the lock of its run folder and ``augkd teacher-cache`` the lock of its cache folder for as
long as they write. A second process that wants the same folder (also with ``--overwrite`` or ``--resume``, which
must never delete or continue a live run) is refused with one line naming the holder::

    runs/demo is in use by augkd train (pid 4121 on node7, since 2026-12-02 01:02:03 UTC); wait for it or stop it

The lock is ``fcntl.flock`` on ``<folder>/.augkd.lock``: the kernel releases it when its process ends, however it
ends, so a lock left by a killed process is stale by construction and the next process takes it over (and says
whose it was). The file itself stays and names the holder while the lock is held; a clean release empties it.
Local file systems only: ``flock`` is not shared between the hosts of a network file system.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LOCK_NAME", "FolderLock", "LockError"]

LOCK_NAME = ".augkd.lock"


class LockError(ValueError):
    """The folder is in use by another live process (named), or its lock file cannot be created."""


def _describe(holder: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("since", 0)))
    return f"{holder.get('what', 'augkd')} (pid {holder.get('pid')} on {holder.get('host')}, since {when})"


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 4096)
    try:
        holder = json.loads(data.decode()) if data.strip() else None
    except ValueError:
        return {"what": "an unreadable lock file"}
    return holder if isinstance(holder, dict) else None


class FolderLock:
    """An exclusive lock on a folder (created if needed), held from :meth:`acquire` until :meth:`release`.

    Use as a context manager::

        with FolderLock(run_dir, "augkd train"):
            ...

    Args:
        folder: the folder to lock.
        what: how the holder is named to a process that is refused (e.g. ``augkd train``).
        kind: how the folder is named in errors (e.g. ``run folder``).

    Attributes:
        stale: the holder of a lock left behind by a process that died, taken over by :meth:`acquire`
            (its description), or None.
    """

    def __init__(self, folder: str | Path, what: str, kind: str = "folder") -> None:
        self.folder, self.what, self.kind = Path(folder), what, kind
        self.path = self.folder / LOCK_NAME
        self.stale: str | None = None
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock.

        Raises:
            LockError: another live process holds it (named), or the lock file cannot be created.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LockError(f"{self.kind} {self.folder} is not writable: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd) or {"what": "another process"}
            os.close(fd)
            busy = f"{self.kind} {self.folder} is in use by {_describe(holder)}"
            raise LockError(f"{busy}; wait for it or stop it") from None
        previous = _read_holder(fd)
        self.stale = _describe(previous) if previous else None  # a clean release leaves the file empty
        me = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        me["argv"] = " ".join(sys.argv[:8])[:400]
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and let go (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the lock goes anyway; a non-empty file only makes the next holder mention this process
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
