"""augkd.train.dryrun: every config in configs/ builds and takes one real training step on the CPU.

The paper's models run at full width (one step of WRN-28-10, PyramidNet-272 or EfficientNet-B8 on 2 images takes
seconds). The data is swapped for the shared archives: CIFAR-10 JPEGs for CIFAR-10, the 100-class Tiny-ImageNet
stand-in for CIFAR-100, Imagewoof at 64 px for ImageNet. The teachers do not exist yet: a random copy of the
student stands in.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from augkd.cli import main
from augkd.config import load_config
from augkd.train import dryrun
from augkd.train.config import TrainConfig
from augkd.train.dryrun import dry_run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = sorted(CONFIGS.rglob("*.yaml"))


def stand_in_data(path: Path, cifar10_zip: Path, tiny100_zip: Path, woof_zip: Path) -> list[str]:
    """Overrides that point a config at the shared archives."""
    text = path.read_text()
    if "dataset: cifar100" in text:
        return ["data.dataset=folder", f"data.root={tiny100_zip}"]
    if "data/imagenet" in text:
        k = ["kd.k=10"] if "preset: imagenet-large" in text else []  # K=50 > Imagewoof's 10 classes: the run refuses
        return [f"data.root={woof_zip}", "data.image_size=64", "data.eval_size=64", "data.loader=memory", *k]
    return ["data.dataset=folder", f"data.root={cifar10_zip}"]


_DECODED: dict[str, tuple] = {}


@pytest.fixture
def shared_decode(monkeypatch):
    """Decode each (archive, size) subset once for all the configs that share it (the decode is not under test)."""
    original = dryrun.build_datasets

    def build(data, quiet=True):
        key = repr(data)
        if key not in _DECODED:
            _DECODED[key] = original(data, quiet=quiet)
        return _DECODED[key]

    monkeypatch.setattr(dryrun, "build_datasets", build)


def test_every_config_is_covered():
    names = {p.relative_to(CONFIGS).as_posix() for p in ALL}
    assert "cifar10-demo.yaml" in names
    assert len([n for n in names if n.startswith("paper/")]) == 20  # Table 1 (8) + Table 2 (8) + Table 3 (4)


@pytest.mark.slow  # 1-3 s per paper config on an idle 2-core machine: one step of the full-width network
@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_dry_run_every_config(path, tmp_path, cifar10_zip, tiny100_zip, woof_zip, cache_dir, shared_decode, load_cfg):
    overrides = [
        f"out_dir={tmp_path / 'runs'}",
        f"data.cache_dir={cache_dir}",
        "device=cpu",
        *stand_in_data(path, cifar10_zip, tiny100_zip, woof_zip),
    ]
    cfg = load_cfg(path, overrides)
    res = dry_run(cfg, batch_size=2)
    assert res["model"] == cfg.model.name and res["policy"] == cfg.augment.policy
    assert res["batch_shape"] == [2, 3, cfg.data.image_size, cfg.data.image_size]
    assert math.isfinite(res["loss"]) and res["loss"] > 0
    if path.parent.name == "paper":
        assert res["params"] > 2_000_000  # the full-width paper network, not a reduced stand-in
        assert cfg.kd.enabled and "kd_loss" in {k.removeprefix("train_") for k in res["losses"]}
        assert any("stands in" in n for n in res["notes"])
    assert not (tmp_path / "runs").exists()  # nothing written


def test_cli_dry_run_prints_and_writes_nothing(capsys, tmp_path, cifar10_zip, cache_dir):
    argv = [
        "train",
        "--config",
        str(CONFIGS / "paper" / "cifar10-shake26-2x32d-aa.yaml"),
        "--dry-run",
        "--quiet",
        f"out_dir={tmp_path}",
        "data.dataset=folder",
        f"data.root={cifar10_zip}",
        f"data.cache_dir={cache_dir}",
        "kd.k=10",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: shake_shake_26_2x32d (2.9")
    assert "policy 'aa-cifar10', KD K=10 lambda=1.0 T=2.0" in out
    assert "one step on a batch (4, 3, 32, 32) uint8 of 10 classes: loss" in out and "kd_loss" in out
    assert "random copy of the student stands in" in out
    assert list(tmp_path.iterdir()) == []
    # kd.k=20 with CIFAR-10's 10 classes: the real run refuses it, so the dry run must too (not lower it)
    assert main([*argv[:-1], "kd.k=20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("augkd train: error: kd.k=20 is larger than the 10 classes of the data")
    assert list(tmp_path.iterdir()) == []


def test_dry_run_checks_k_with_a_real_teacher_too(tmp_path, tiny_overrides):
    from augkd.train.loop import RunError, train

    teacher = load_config(TrainConfig, None, tiny_overrides(tmp_path / "t"))
    train(teacher, quiet=True)
    overrides = tiny_overrides(tmp_path / "s", f"kd.teacher={tmp_path / 't' / 'tiny' / 'best.pt'}", "kd.k=11")
    with pytest.raises(RunError, match="kd.k=11 is larger than the 10 classes"):
        dry_run(load_config(TrainConfig, None, overrides))


def test_dry_run_uses_a_real_teacher_when_it_exists(tmp_path, tiny_overrides):
    from augkd.train.loop import train

    teacher = load_config(TrainConfig, None, tiny_overrides(tmp_path / "t"))
    train(teacher, quiet=True)
    overrides = tiny_overrides(tmp_path / "s", f"kd.teacher={tmp_path / 't' / 'tiny' / 'best.pt'}")
    student = load_config(TrainConfig, None, overrides)
    res = dry_run(student)
    assert res["notes"] == [] and res["kd"]["k"] == 3 and res["batch_shape"] == [4, 3, 32, 32]
    assert not (tmp_path / "s").exists()


def test_dry_run_checks_a_teacher_cache_without_its_training_set(tmp_path, tiny_overrides, sealed_teacher_cache):
    """--dry-run with kd.cache: the cache's header and epoch files are checked (its training set is not built),
    the step runs with a stand-in teacher, and a cache that cannot serve the run is one line."""
    from augkd.distill.cache import epoch_path
    from augkd.train.loop import RunError

    def config(*extra: str) -> TrainConfig:
        return load_config(
            TrainConfig, None, tiny_overrides(tmp_path / "s", "epochs=2", "augment.policy=ra-n2-m9", *extra)
        )

    cache = sealed_teacher_cache(config(), epochs=2)
    with_cache = config(f"kd.cache={cache}")
    res = dry_run(with_cache)
    assert res["kd"]["k"] == 3 and "train_kd_loss" in res["losses"]
    assert any(n.startswith(f"kd.cache {cache}: header and the 2 epoch files") for n in res["notes"]), res["notes"]
    seed_mismatch = r"kd.cache: .*built with pipeline\.stages\.augment\.\S*seed=0, but this run has 7"
    with pytest.raises(RunError, match=seed_mismatch):
        dry_run(config(f"kd.cache={cache}", "seed=7"))
    with pytest.raises(RunError, match="kd.cache: .*the run trains 3 epochs but the cache has epochs 0..1"):
        dry_run(config(f"kd.cache={cache}", "epochs=3"))
    epoch_path(cache, 1).write_bytes(epoch_path(cache, 0).read_bytes())
    with pytest.raises(RunError, match="kd.cache: .*epoch_0001.bin: sealed as epoch 0, expected epoch 1"):
        dry_run(with_cache)
    assert not (tmp_path / "s").exists()
