"""augkd.train.loop: a real tiny run on CIFAR-10 JPEGs, run-folder contents, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from augkd.config import load_config
from augkd.train.checkpoint import load_checkpoint
from augkd.train.config import TrainConfig
from augkd.train.loop import RunError, train


@pytest.fixture
def tiny_config(tiny_overrides):
    def make(out_dir, *extra: str) -> TrainConfig:
        base = ("epochs=2", "optim.schedule=cosine", "optim.warmup_epochs=0.5")
        return load_config(TrainConfig, None, tiny_overrides(out_dir, *base, *extra))

    return make


def test_tiny_run_writes_a_complete_run_folder(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, "ema.enabled=true", "ema.decay=0.9")
    summary = train(cfg, quiet=True)
    run = tmp_path / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["step"] == 2 * (200 // 50)
    for key in ("train_loss", "train_task_loss", "test_top1", "test_top5", "test_loss", "ema_top1", "lr"):
        assert key in rows[-1]
    assert 0.0 <= rows[-1]["test_top1"] <= rows[-1]["test_top5"] <= 100.0
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step")
    assert json.loads((run / "summary.json").read_text())["final_top1"] == pytest.approx(rows[-1]["test_top1"])
    assert summary["eval_images"] == 100 and summary["train_images"] == 200
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["config"]["model"]["name"] == "fastnet9"
    best = load_checkpoint(run / "best.pt")
    assert best["best_top1"] == pytest.approx(max(max(r["test_top1"], r["ema_top1"]) for r in rows))
    assert "config.yaml" in {p.name for p in run.iterdir()}


def test_resume_equals_uninterrupted(tmp_path, monkeypatch, tiny_config):
    from augkd.train import loop

    full = tiny_config(tmp_path / "a", "model.drop_rate=0.2")
    train(full, quiet=True)

    # The same run, killed after its first epoch, then resumed.
    original = loop.train_one_epoch
    calls = {"n": 0}

    def stop_after_one(run, epoch, progress=True):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(run, epoch, progress)

    cut = tiny_config(tmp_path / "b", "model.drop_rate=0.2")
    monkeypatch.setattr(loop, "train_one_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(cut, quiet=True)
    monkeypatch.setattr(loop, "train_one_epoch", original)
    assert load_checkpoint(tmp_path / "b" / "tiny" / "last.pt")["epoch"] == 1
    train(cut, resume=True, quiet=True)

    a = load_checkpoint(tmp_path / "a" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "tiny" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert [r["test_top1"] for r in a["history"]] == [r["test_top1"] for r in b["history"]]


def test_existing_run_folder_is_not_clobbered(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, "epochs=1")
    train(cfg, quiet=True)
    with pytest.raises(RunError, match="already holds a run"):
        train(cfg, quiet=True)
    with pytest.raises(RunError, match="no checkpoint"):
        train(tiny_config(tmp_path, "name=other"), resume=True, quiet=True)


def test_policy_plugs_into_training_and_replays(tmp_path, tiny_config):
    from augkd.train.loop import setup_run

    cfg = tiny_config(tmp_path, "augment.policy=geo-n2-m5", "epochs=1")
    run = setup_run(cfg, quiet=True)
    run.train_loader.set_epoch(0)
    batch = next(iter(run.train_loader))
    based = run.augment.base(batch.images, batch.indices, 0)
    augmented = run.augment(batch.images, batch.indices, 0)
    assert augmented.dtype == torch.uint8 and augmented.shape == batch.images.shape
    changed = (augmented != based).flatten(1).any(1).float().mean().item()
    assert changed > 0.9  # two geometric ops at M=5 move almost every image
    # the same samples in another order get the same augmentation
    perm = torch.randperm(len(batch.indices))
    again = run.augment(batch.images[perm], batch.indices[perm], 0)
    assert torch.equal(again, augmented[perm])
    assert not torch.equal(run.augment(batch.images, batch.indices, 1), augmented)  # a new epoch, new draws
    summary = train(cfg, quiet=True, overwrite=True)
    assert summary["policy"] == "geo-n2-m5" and summary["final_top1"] is not None


def test_policy_off_for_the_last_epochs_equals_no_policy(tmp_path, tiny_config):
    """augment.off_last_epochs: the switched-off epochs see exactly the base augmentation (paper §3.4)."""
    plain = train(tiny_config(tmp_path / "a", "epochs=1"), quiet=True)
    off = train(tiny_config(tmp_path / "b", "epochs=1", "augment.policy=geo-n2-m10", "augment.off_last_epochs=1"))
    assert off["policy"] == "geo-n2-m10" and off["off_last_epochs"] == 1
    rows = [json.loads((tmp_path / d / "tiny" / "metrics.jsonl").read_text()) for d in ("a", "b")]
    assert rows[0]["train_loss"] == rows[1]["train_loss"]
    assert plain["final_top1"] == off["final_top1"]


def test_magnitude_key_sets_the_policy_magnitude(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, "augment.policy=ra-n2-m9", "augment.magnitude=3")
    assert cfg.augment.spec() == "ra-n2-m3"
    for extra, message in [
        (("augment.policy=aa-cifar10", "augment.magnitude=3"), "has no magnitude"),
        (("augment.policy=geo-n2-m4", "augment.magnitude=11"), "m must be in"),
        (("augment.off_last_epochs=3",), "more than the 2 epochs"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_config(tmp_path, *extra)


def test_cutout_runs_after_the_policy(tmp_path, tiny_config):
    from augkd.augment.base import Cutout
    from augkd.train.loop import setup_run

    run = setup_run(tiny_config(tmp_path, "augment.cutout=8", "augment.fill=255"), quiet=True)
    assert isinstance(run.augment.post, Cutout) and run.augment.post.size == 8
    images = torch.zeros(16, 3, 32, 32, dtype=torch.uint8)
    out = run.augment(images, torch.arange(16), 0)
    # Every image keeps a blank square of at most 8x8 (clipped at the border) after crop and flip.
    blanked = (out[:, 0] == 255).flatten(1).sum(1)
    assert bool((blanked > 0).all() and (blanked <= 64).all())
