"""augkd.train.checkpoint: atomic writes, weights_only loading, clear errors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from augkd.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


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
