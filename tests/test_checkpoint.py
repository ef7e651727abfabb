"""augkd.checkpoint: atomic writes, weights_only loading, clear errors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from augkd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "config": {"name": "x", "lr": 0.1}}
    save_checkpoint(tmp_path / "last.pt", state)
    back = load_checkpoint(tmp_path / "last.pt")
    assert back["epoch"] == 3 and back["config"] == {"name": "x", "lr": 0.1}
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left behind


def test_failed_write_keeps_previous(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(path, {"epoch": 2, "bad": Boom()})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"model": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(evil)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_and_missing(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(100, 100)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


# ----------------------------------------------------------------------------------------------------------------
# Sealed checkpoints: a checksum inside, verified before anything is trusted


def _flip_byte_inside(path, marker: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(marker) + len(marker) // 2
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_sealed_file_holds_its_checksum(tmp_path):
    import hashlib

    path = tmp_path / "c.pt"
    save_checkpoint(path, {"w": torch.arange(4.0)})
    outer = torch.load(path, weights_only=True)  # any torch reads the wrapper
    assert outer["format"] == "augkd-sealed/1"
    assert outer["sha256"] == hashlib.sha256(outer["payload"].numpy()).hexdigest()


def test_flipped_bit_is_detected(tmp_path):
    path = tmp_path / "c.pt"
    marker = torch.arange(1000, 1256, dtype=torch.int32)
    save_checkpoint(path, {"w": marker})
    _flip_byte_inside(path, marker.numpy().tobytes())
    with pytest.raises(CheckpointError, match=r"c\.pt: corrupt checkpoint: checksum mismatch"):
        load_checkpoint(path)


def test_unsealed_checkpoints_still_load(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "augkd-checkpoint/1", "epoch": 4, "w": torch.ones(3)}, path)  # written before sealing
    state = load_checkpoint(path)
    assert state["epoch"] == 4 and torch.equal(state["w"], torch.ones(3))


def test_malicious_payload_with_a_valid_checksum_is_refused(tmp_path, monkeypatch):
    import hashlib

    monkeypatch.chdir(tmp_path)
    payload = pickle.dumps({"model": _Payload()})
    sealed = {
        "format": "augkd-sealed/1",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    torch.save(sealed, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------------------------------------------------------
# Full disk, read-only folder: a clear error, the previous checkpoint intact, no temp file left


@pytest.mark.parametrize(
    ("target", "errno_"),
    [("os.replace", "ENOSPC"), ("os.fsync", "ENOSPC"), ("tempfile.mkstemp", "EROFS"), ("tempfile.mkstemp", "EACCES")],
)
def test_failed_write_names_the_file_and_keeps_the_previous(tmp_path, monkeypatch, target, errno_):
    import errno

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    code = getattr(errno, errno_)

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(target, fail)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    msg = str(info.value)
    assert msg.startswith(f"cannot write checkpoint {path}: {os.strerror(code)}") and "\n" not in msg
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_check_run_folder(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from augkd.checkpoint import check_run_folder

    check_run_folder(tmp_path / "run", 1000)
    assert (tmp_path / "run").is_dir() and list((tmp_path / "run").iterdir()) == []  # the probe is cleaned up
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"run folder .*file/run is not writable"):
        check_run_folder(tmp_path / "file" / "run", 1000)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(CheckpointError, match=r"not enough free space .* 5\.0 MiB free, the run needs about 8\.0 MiB"):
        check_run_folder(tmp_path / "run", 8 * 2**20)


def test_read_only_folder(tmp_path):
    from augkd.checkpoint import check_run_folder

    run = tmp_path / "run"
    save_checkpoint(run / "last.pt", {"epoch": 1})
    run.chmod(0o555)
    try:
        if os.access(run, os.W_OK):  # root writes anyway: the monkeypatched EROFS/EACCES cases above cover it
            pytest.skip("running as root: chmod does not make a folder read-only")
        with pytest.raises(CheckpointError, match="is not writable: Permission denied"):
            check_run_folder(run, 0)
        with pytest.raises(CheckpointError, match="cannot write checkpoint .*Permission denied"):
            save_checkpoint(run / "last.pt", {"epoch": 2})
        assert load_checkpoint(run / "last.pt")["epoch"] == 1
    finally:
        run.chmod(0o755)


# ----------------------------------------------------------------------------------------------------------------
# The checkpoints of a run folder: keep the last N, fall back to the newest good one


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_keep_last_n(tmp_path):
    from augkd.checkpoint import save_training_checkpoint

    for epoch in range(1, 6):
        save_training_checkpoint(tmp_path, {"epoch": epoch}, epoch, keep_last=2)
    assert _names(tmp_path) == ["ckpt_epoch0004.pt", "ckpt_epoch0005.pt", "last.pt"]
    assert (tmp_path / "last.pt").samefile(tmp_path / "ckpt_epoch0005.pt")  # a hard link: no extra disk space
    assert load_checkpoint(tmp_path / "ckpt_epoch0004.pt")["epoch"] == 4
    # Resumed from epoch 3: the abandoned epochs 4 and 5 go once epoch 4 is written again.
    save_training_checkpoint(tmp_path, {"epoch": 3}, 3, keep_last=2)
    assert _names(tmp_path) == ["ckpt_epoch0003.pt", "last.pt"]
    save_training_checkpoint(tmp_path, {"epoch": 4}, 4, keep_last=0)
    assert _names(tmp_path) == ["last.pt"]


def test_links_fall_back_to_copies(tmp_path, monkeypatch):
    from augkd.checkpoint import save_training_checkpoint

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    save_training_checkpoint(tmp_path, {"epoch": 1}, 1, keep_last=1)
    assert _names(tmp_path) == ["ckpt_epoch0001.pt", "last.pt"]
    assert not (tmp_path / "last.pt").samefile(tmp_path / "ckpt_epoch0001.pt")
    assert load_checkpoint(tmp_path / "ckpt_epoch0001.pt")["epoch"] == 1


def test_resume_falls_back_to_the_newest_good_checkpoint(tmp_path):
    from augkd.checkpoint import load_latest_checkpoint, save_training_checkpoint

    assert load_latest_checkpoint(tmp_path) is None
    for epoch in range(1, 4):
        save_training_checkpoint(tmp_path, {"epoch": epoch, "w": torch.randn(256)}, epoch, keep_last=3)
    last = tmp_path / "last.pt"
    # last.pt replaced by a truncated copy: its hard-linked twin ckpt_epoch0003.pt is still good.
    data = last.read_bytes()
    last.unlink()
    last.write_bytes(data[: len(data) // 3])
    path, state, problems = load_latest_checkpoint(tmp_path)
    assert (path.name, state["epoch"]) == ("ckpt_epoch0003.pt", 3)
    assert len(problems) == 1 and "last.pt: unreadable or truncated" in problems[0]
    # Damaged in place (both names of epoch 3): epoch 2 is the newest good one.
    with open(tmp_path / "ckpt_epoch0003.pt", "r+b") as f:
        f.truncate(len(data) // 2)
    path, state, problems = load_latest_checkpoint(tmp_path)
    assert (path.name, state["epoch"], len(problems)) == ("ckpt_epoch0002.pt", 2, 2)
    for name in ("ckpt_epoch0002.pt", "ckpt_epoch0001.pt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint in .*: .*last\.pt.*ckpt_epoch0001\.pt"):
        load_latest_checkpoint(tmp_path)


def test_a_write_that_lands_corrupt_is_caught_before_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    marker = torch.arange(5000, 5256, dtype=torch.int32)
    needle = marker.numpy().tobytes()
    real_fsync = os.fsync

    def corrupting_fsync(fd):  # the disk stores one bit wrong
        try:
            data = os.pread(fd, 1 << 20, 0)
        except OSError:
            data = b""
        if needle in data:
            at = data.index(needle) + 7
            os.pwrite(fd, bytes([data[at] ^ 0x04]), at)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", corrupting_fsync)
    with pytest.raises(
        CheckpointError,
        match=r"cannot write checkpoint .*last\.pt: the copy on disk does not read back \(.*checksum mismatch",
    ):
        save_checkpoint(path, {"epoch": 2, "w": marker})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
