"""augkd.lock: one writer per run folder and per teacher-cache folder; the holder is named; a lock left by a
killed process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from augkd.cli import main
from augkd.lock import LOCK_NAME, FolderLock, LockError

HOLD = (
    "import sys, time; from augkd.lock import FolderLock; "
    "FolderLock(sys.argv[1], sys.argv[2]).acquire(); print('held', flush=True); time.sleep(120)"
)


def _holder(folder: Path, what: str = "augkd train") -> subprocess.Popen:
    """Another process that holds the lock of ``folder`` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), what], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_second_holder_is_refused_naming_the_first_and_a_release_frees_it(tmp_path):
    with FolderLock(tmp_path / "run", "augkd train") as lock:
        assert lock.held and (tmp_path / "run" / LOCK_NAME).is_file() and lock.stale is None
        with pytest.raises(LockError, match=rf"run is in use by augkd train \(pid {os.getpid()} on .*, since"):
            FolderLock(tmp_path / "run", "augkd train").acquire()
    assert not lock.held and (tmp_path / "run" / LOCK_NAME).read_bytes() == b""
    with FolderLock(tmp_path / "run", "augkd train") as again:
        assert again.stale is None  # released cleanly: nothing stale to report


def test_a_lock_of_another_process_is_refused_until_it_is_killed_then_taken_over(tmp_path):
    proc = _holder(tmp_path / "c", "augkd teacher-cache")
    try:
        with pytest.raises(LockError, match=rf"c is in use by augkd teacher-cache \(pid {proc.pid} on "):
            FolderLock(tmp_path / "c", "augkd teacher-cache").acquire()
    finally:
        _kill(proc)
    with FolderLock(tmp_path / "c", "augkd teacher-cache") as lock:  # SIGKILL left the file, not the lock
        assert lock.stale is not None and f"pid {proc.pid}" in lock.stale


def test_an_unlockable_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LockError, match="folder .*file/run is not writable: Not a directory"):
        FolderLock(tmp_path / "file" / "run", "augkd train").acquire()


def test_train_and_teacher_cache_refuse_a_live_folder_also_with_overwrite_or_resume(tmp_path, capsys, tiny_overrides):
    args = tiny_overrides(tmp_path)
    proc = _holder(tmp_path / "tiny")
    try:
        for extra in ([], ["--overwrite"], ["--resume"]):
            assert main(["train", "-q", *args, *extra]) == 2
            err = capsys.readouterr().err.strip()
            assert err.count("\n") == 0, err
            busy = f"run folder {tmp_path / 'tiny'} is in use by augkd train (pid {proc.pid}"
            assert err.startswith(f"augkd train: error: {busy}")
        assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [LOCK_NAME]  # nothing written or deleted
        cache = tmp_path / "cache"
        proc2 = _holder(cache, "augkd teacher-cache")
        try:
            assert main(["teacher-cache", "--teacher", "x.pt", "--out", str(cache), *args]) == 2
            assert f"is in use by augkd teacher-cache (pid {proc2.pid}" in capsys.readouterr().err
        finally:
            _kill(proc2)
    finally:
        _kill(proc)
    assert main(["train", *args]) == 0  # the killed holder's lock is stale: taken over, and said so
    assert f"took over the lock of {tmp_path / 'tiny'} left by augkd train (pid {proc.pid}" in capsys.readouterr().out
