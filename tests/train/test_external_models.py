"""Bring your own teacher and student: Imagewoof distilled from an ImageNet-1k timm teacher through
``kd.class_map=auto`` (live and cached, step for step equal, with either loader), a ``timm:`` student
that trains, resumes exactly and evaluates, and the dry run and plan with a library teacher.

The teacher is timm's ``test_efficientnet`` (1000 classes) with random weights saved to a safetensors file: what
is tested is the plumbing (class map, size, normalization, cache key), not the teacher's knowledge.
"""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.data import ImageNetInfo
from torch import nn

from augkd.checkpoint import load_checkpoint
from augkd.cli import main
from augkd.config import load_config
from augkd.train import loop
from augkd.train.config import TrainConfig
from augkd.train.dryrun import dry_run, format_dry_run
from augkd.train.loop import setup_run, train, train_one_epoch
from augkd.train.plan import plan
from augkd.train.teacher_cache import build_teacher_cache


def _config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, list(overrides))


@pytest.fixture(scope="module")
def imagenet_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "test_efficientnet.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("test_efficientnet").state_dict(), out)
    return out


@pytest.fixture(scope="module")
def woof_args(woof_zip, cache_dir, imagenet_teacher):
    """Overrides of a tiny Imagewoof run (30 photos at 32 px, a narrow fastnet9) distilled from the teacher."""

    def make(out_dir, *extra: str) -> list[str]:
        return [
            f"out_dir={out_dir}", "epochs=1", "batch_size=10", "eval_batch_size=10", "amp=off", "threads=1",
            f"data.root={woof_zip}", f"data.cache_dir={cache_dir}", "data.subset_per_class=3",
            "data.test_subset_per_class=1", "data.image_size=32", "data.base_aug=rrc-flip",
            "model.kwargs.width=8", "augment.policy=ra-n2-m9", "kd.preset=imagenet-b0",
            "kd.teacher=timm:test_efficientnet", f"kd.teacher_weights={imagenet_teacher}", "kd.class_map=auto",
            "kd.teacher_size=48", *extra,
        ]  # fmt: skip

    return make


@pytest.fixture(scope="module")
def woof(woof_args):
    return lambda out_dir, *extra: _config(*woof_args(out_dir, *extra))


class StepRecorder(nn.Module):
    """Wraps a task and keeps every step's (loss, kd_loss)."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task
        self.steps: list[tuple[float, float]] = []

    def forward(self, *args):
        out = self.task(*args)
        self.steps.append((out["loss"].item(), out["kd_loss"].item()))
        return out


def _steps(cfg: TrainConfig) -> list[tuple[float, float]]:
    run = setup_run(cfg, quiet=True)
    run.task = StepRecorder(run.task)
    train_one_epoch(run, 0, progress=False)
    return run.task.steps


def test_imagewoof_from_an_imagenet_timm_teacher_live_and_cached(tmp_path, woof, woof_args, capsys):
    # the teacher answers in Imagewoof's classes, in the data's order, at its own 48 px
    run = setup_run(woof(tmp_path / "probe"), quiet=True)
    teacher, wnids = run.task.teacher, ImageNetInfo().label_names()
    assert teacher.class_index.tolist() == [wnids.index(c) for c in run.classes] and teacher.size == 48
    assert run.classes[0].startswith("n0") and len(run.classes) == 10
    del run
    # live, with JPEGs decoded and cropped per batch by the stream loader
    summary = train(woof(tmp_path, "name=stream", "data.loader=stream", "data.workers=0"), quiet=True)
    row = json.loads((tmp_path / "stream" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (
        summary["kd"]["k"] == 5
        and row["step"] == 3
        and math.isfinite(row["train_kd_loss"])
        and row["train_kd_loss"] > 0
    )
    # in memory: a teacher cache built from the same teacher serves a run with the live run's losses
    live = _steps(woof(tmp_path, "name=live"))
    build_teacher_cache(woof(tmp_path), tmp_path / "cache", epochs=1, k=5, quiet=True)
    cached = _steps(woof(tmp_path, "name=cached", f"kd.cache={tmp_path / 'cache'}"))
    assert len(live) == len(cached) == 3
    assert max(abs(a - b) for x, y in zip(live, cached) for a, b in zip(x, y)) <= 1e-6
    # the cache is keyed on the teacher: at another size it is another teacher, refused in one line
    capsys.readouterr()
    argv = ["train", "-q", *woof_args(tmp_path, "name=other", f"kd.cache={tmp_path / 'cache'}", "kd.teacher_size=64")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kd.cache: " in err and "another teacher" in err, err


def test_a_stream_run_reads_a_teacher_cache_with_the_live_losses(tmp_path, woof, woof_args, capsys):
    # the cache is built through the stream loader's own workers and crops, so it serves the stream run exactly
    stream = ("data.loader=stream", "data.workers=1")
    live = _steps(woof(tmp_path, "name=live", *stream))
    summary = build_teacher_cache(woof(tmp_path, *stream), tmp_path / "cache", epochs=1, k=5, quiet=True)
    assert summary["rows"] == 30 and summary["written"] == [0]  # every photo, the last short batch included
    cached = _steps(woof(tmp_path, "name=cached", *stream, f"kd.cache={tmp_path / 'cache'}"))
    assert len(live) == len(cached) == 3
    assert max(abs(a - b) for x, y in zip(live, cached) for a, b in zip(x, y)) <= 1e-6
    assert all(kd > 0 for _, kd in cached)
    # other crops, or the memory loader's stored pixels, are other images: refused in one line before training
    for extra, words in (
        (("data.rrc_scale_min=0.5", *stream), "loader.base.scale"),
        (("data.loader=memory",), "built with data.loader=stream, but this run has data.loader=memory"),
    ):
        capsys.readouterr()
        argv = ["train", "-q", *woof_args(tmp_path, "name=other", f"kd.cache={tmp_path / 'cache'}", *extra)]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "kd.cache: " in err and words in err, err


def test_a_timm_student_fine_tunes_resumes_exactly_and_evaluates(tmp_path, tiny_overrides, monkeypatch, capsys):
    torch.manual_seed(1)
    save_file(timm.create_model("test_resnet").state_dict(), tmp_path / "in1k.safetensors")
    overrides = (
        "model.name=timm:test_resnet", f"model.weights={tmp_path / 'in1k.safetensors'}", "model.kwargs={}",
        "epochs=2", "augment.policy=ra-n2-m9", "threads=1",
    )  # fmt: skip
    full = load_config(TrainConfig, None, tiny_overrides(tmp_path / "a", *overrides))
    train(full, quiet=False)
    assert "output layer of" in capsys.readouterr().err  # the 1000-class head was left out, and the log says so
    original = loop.train_one_epoch

    def stop_after_one(run, epoch, progress=True):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(run, epoch, progress)

    cut = load_config(TrainConfig, None, tiny_overrides(tmp_path / "b", *overrides))
    monkeypatch.setattr(loop, "train_one_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(cut, quiet=True)
    monkeypatch.setattr(loop, "train_one_epoch", original)
    train(cut, resume=True, quiet=True)
    a, b = (load_checkpoint(tmp_path / x / "tiny" / "last.pt") for x in "ab")
    assert a["config"]["model"]["name"] == "timm:test_resnet" and a["model"]["fc.weight"].shape == (10, 96)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    # the backbone starts from the file, the new head does not
    start = setup_run(load_config(TrainConfig, None, tiny_overrides(tmp_path / "c", *overrides)), quiet=True).model
    pretrained = timm.create_model("test_resnet").state_dict()
    save_file_state = load_file(tmp_path / "in1k.safetensors")
    assert torch.equal(start.state_dict()["conv1.0.weight"], save_file_state["conv1.0.weight"])
    assert not torch.equal(start.state_dict()["conv1.0.weight"], pretrained["conv1.0.weight"])  # not a fresh init
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "a" / "tiny" / "best.pt"), "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == "timm:test_resnet" and res["n"] == 100 and math.isfinite(res["loss"])


def test_dry_run_and_plan_with_a_library_teacher(tmp_path, woof, imagenet_teacher):
    res = dry_run(woof(tmp_path))
    assert res["notes"] == [] and res["kd"]["k"] == 5 and math.isfinite(res["losses"]["train_kd_loss"])
    assert (res["kd"]["teacher_size"], res["kd"]["teacher_classes_kept"]) == (48, 10)
    assert "the teacher sees 48 px images; its logits restricted to 10 mapped classes" in format_dry_run(res)
    later = woof(tmp_path, f"kd.teacher_weights={tmp_path / 'later.safetensors'}")
    res = dry_run(later)
    assert any(
        "weight file not found" in n and "timm:test_efficientnet with random weights stands in" in n
        for n in res["notes"]
    )
    p = plan(later, gpus=1, steps=1, warmup=0)
    assert any("timm:test_efficientnet with random weights as teacher" in n for n in p["notes"])
    assert not (tmp_path / "run").exists()


def test_ambiguity_and_teacher_cache_commands_take_a_library_teacher(
    tmp_path, woof_args, woof_zip, cache_dir, imagenet_teacher, capsys
):
    teacher = ["--teacher", "timm:test_efficientnet", f"kd.teacher_weights={imagenet_teacher}", "kd.class_map=auto"]
    data = [f"data.cache_dir={cache_dir}", "data.image_size=32", "data.test_subset_per_class=1", "kd.teacher_size=48"]
    args = ["ambiguity", *teacher, "--data", str(woof_zip), "--images", "10", "--levels", "0", "10", "--gallery", "0"]
    assert main([*args, "--out", str(tmp_path / "amb"), "--json", *data]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["clean"]["n"] == 10 and [r["level"] for r in res["policy"]] == [0, 10]
    # without the class map the 1000-class teacher cannot answer for 10 breeds: one line saying what to set
    assert main([*args[:4], "--data", str(woof_zip), "--out", str(tmp_path / "amb2"), *data]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "predicts 1000 classes but the student's data has 10; set kd.class_map" in err
    # teacher-cache with --teacher timm:NAME: the cache serves the run whose kd.teacher names the same teacher
    run_args = [a for a in woof_args(tmp_path) if not a.startswith("kd.teacher=")]
    argv = ["teacher-cache", "--teacher", "timm:test_efficientnet", "--out", str(tmp_path / "c"), "--json", *run_args]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["written"] == [0]
    assert main(["train", "-q", "--dry-run", *woof_args(tmp_path), f"kd.cache={tmp_path / 'c'}"]) == 0
