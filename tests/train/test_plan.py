"""augkd.train.plan and ``augkd plan``: a short calibration gives consistent memory, speed and wall-time figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from augkd.cli import main
from augkd.config import load_config
from augkd.train.config import TrainConfig
from augkd.train.loop import RunError
from augkd.train.plan import KNOWN_SIZES, data_sizes, format_plan, plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def tiny(tiny_overrides, tmp_path):
    def make(*extra: str) -> TrainConfig:
        return load_config(TrainConfig, None, tiny_overrides(tmp_path / "runs", "epochs=3", "eval_every=2", *extra))

    return make


def test_plan_figures_are_consistent(tiny, tmp_path):
    p = plan(tiny(), gpus=2, steps=2, warmup=1, efficiency=0.8)
    assert p["batch_per_device"] == 25 and p["global_batch"] == 50
    assert p["data"] == {
        "train_images": 200,  # the config's subset: scanned, not decoded
        "eval_images": 100,
        "num_classes": 10,
        "source": p["data"]["source"],
    }
    assert p["train_images_per_s_per_device"] > 0 and p["eval_images_per_s_per_device"] > 0
    assert p["train_images_per_s"] == pytest.approx(p["train_images_per_s_per_device"] * 2 * 0.8)
    assert p["steps_per_epoch"] == 4 and p["eval_passes"] == 2  # epochs 2 and 3
    train_s = 3 * 4 * 50 / p["train_images_per_s"]
    assert p["wall_time_s"] == pytest.approx(train_s + 2 * p["eval_pass_s"])
    assert p["device_hours"] == pytest.approx(p["wall_time_s"] * 2 / 3600)
    assert 0 < p["memory_per_device_bytes"] < 2**31  # a 0.1M-parameter net at batch 25
    assert any("measured on the CPU" in n for n in p["notes"])
    assert not any("--warmup 0" in n for n in p["notes"])
    assert not (tmp_path / "runs").exists()
    text = format_plan(p)
    assert "on 2 devices: global batch 50 = 2 x 25" in text and "device-hours" in text
    # The teacher cache of this run (200 images, 3 epochs, kd.k=3 from the cifar10 preset, 10 classes) and of
    # ImageNet-1k: the sizes augkd teacher-cache would write, from the layout (64-byte blocks, 256-byte seal).
    run, ref = p["teacher_cache"]["run"], p["teacher_cache"]["reference"]
    assert (run["rows"], run["epochs"], run["k"], run["num_classes"]) == (200, 3, 3, 10)
    assert run["float32"] == {"bytes_per_sample": 34, "bytes": 3 * (1216 + 2432 + 3200 + 256)}
    assert run["float16"] == {"bytes_per_sample": 16, "bytes": 3 * (448 + 1216 + 1600 + 256)}
    assert (ref["rows"], ref["epochs"], ref["k"], ref["float16"]["bytes_per_sample"]) == (1_281_167, 300, 10, 41)
    assert ref["float16"]["bytes"] == pytest.approx(1_281_167 * 300 * 41, rel=1e-5)
    assert ref["float32"]["bytes"] == pytest.approx(1_281_167 * 300 * 76, rel=1e-5)
    assert (
        "teacher cache of this run (K=3, 200 images x 3 epochs): 21.3 kB in float32 (34 B per sample-epoch), " in text
    )
    assert "10.6 kB in float16 (16 B)" in text
    imagenet = "ImageNet-1k (1,281,167 images x 300 epochs, K=10): 29.2 GB in float32 (76 B per sample-epoch), 15.8 GB"
    assert imagenet in text and "15.8 GB in float16 (41 B)" in text


def test_plan_times_the_kd_step_with_a_stand_in_teacher(tiny, tmp_path):
    p = plan(tiny(f"kd.teacher={tmp_path / 'later.pt'}", "kd.k=20"), gpus=1, steps=1, warmup=0)
    assert any("copy of the student as teacher" in n for n in p["notes"])
    assert any("kd.k=20 is more than the 10 classes" in n for n in p["notes"])
    assert any(n.startswith("--warmup 0: the timed steps include one-time costs") for n in p["notes"])
    text = format_plan(p)
    assert "on 1 device: global batch 50 = 1 x 50" in text and "\n  on 1 device: " in text
    assert "1 devices" not in text


def test_data_sizes_without_the_data():
    cfg = load_config(TrainConfig, None, ["data.root=/nowhere/imagenet", "data.dataset=folder"])
    sizes = data_sizes(cfg)
    assert (sizes["train_images"], sizes["eval_images"], sizes["num_classes"]) == KNOWN_SIZES["imagenet"]
    assert "assumed ImageNet-1k" in sizes["source"]
    cfg = load_config(TrainConfig, None, ["data.dataset=cifar100", "data.subset_per_class=10"])
    assert (data_sizes(cfg)["train_images"], data_sizes(cfg)["num_classes"]) == (1000, 100)


def test_plan_rejects_an_uneven_split(tiny):
    with pytest.raises(ValueError, match=r"batch_size=50 \(the global batch\) does not split evenly over 3"):
        plan(tiny(), gpus=3)
    with pytest.raises(RunError, match="efficiency"):
        plan(tiny(), gpus=2, efficiency=1.5)


def test_cli_plan_json(capsys, tiny_overrides, tmp_path):
    demo = str(CONFIGS / "cifar10-demo.yaml")
    tiny = tiny_overrides(tmp_path / "runs")
    assert main(["plan", "--config", demo, "--gpus", "2", "--steps", "1", "--warmup", "0", "--json", *tiny]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["gpus"] == 2 and p["batch_per_device"] == 25 and p["wall_time_s"] > 0
    assert main(["plan", "--config", demo, "--gpus", "3", *tiny]) == 2
    err = capsys.readouterr().err
    assert err.startswith("augkd plan: error:") and "does not split evenly over 3 processes" in err


def test_plan_checks_a_teacher_cache_and_times_a_stand_in_teacher(tiny, sealed_teacher_cache):
    cfg = tiny("augment.policy=ra-n2-m9")
    cache = sealed_teacher_cache(cfg, epochs=3)
    p = plan(tiny("augment.policy=ra-n2-m9", f"kd.cache={cache}"), gpus=1, steps=1, warmup=0)
    assert any(n.startswith(f"kd.cache {cache}: header and the 3 epoch files") for n in p["notes"]), p["notes"]
    policy_mismatch = (
        r"kd.cache: .*built with pipeline\.stages\.augment\.policy\.type='RandAugment', but this run has 'NoAugment'"
    )
    with pytest.raises(RunError, match=policy_mismatch):
        plan(tiny("augment.policy=none", f"kd.cache={cache}"), gpus=1, steps=1, warmup=0)
