"""augkd.distill.teacher and the KD task in training: frozen teacher, lambda = 0 equals plain training."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from torch import nn

from augkd.checkpoint import CheckpointError, load_checkpoint
from augkd.config import load_config
from augkd.distill.teacher import Teacher, TeacherError, load_teacher
from augkd.train.config import TrainConfig
from augkd.train.loop import RunError, setup_run, train, train_one_epoch


@pytest.fixture(scope="module")
def tiny(tiny_overrides):
    return lambda out_dir, *extra: load_config(TrainConfig, None, tiny_overrides(out_dir, *extra))


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("teacher")
    train(tiny(out, "model.kwargs.width=16", "epochs=2"), quiet=True)
    return out / "tiny" / "best.pt"


def test_teacher_is_frozen_and_stays_in_eval(teacher_ckpt):
    teacher = load_teacher(teacher_ckpt, 10)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    out = teacher(x)
    assert out.shape == (4, 10) and not out.requires_grad
    torch.testing.assert_close(out, teacher(x))  # eval mode: deterministic


def test_teacher_errors(teacher_ckpt, tmp_path):
    with pytest.raises(TeacherError, match="predicts 10 classes but the student's data has 100"):
        load_teacher(teacher_ckpt, 100)
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "nope.pt", 10)
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil.write_bytes(pickle.dumps({"model": Payload(), "config": {}}))
    with pytest.raises(CheckpointError, match="refused"):
        load_teacher(evil, 10)
    assert not (tmp_path / "PWNED").exists()


def test_teacher_converts_the_students_normalization():
    model = nn.Conv2d(3, 2, 1)
    s_norm, t_norm = ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    teacher = Teacher(model, s_norm, t_norm)
    raw = torch.rand(2, 3, 4, 4)
    x_student = (raw - torch.tensor(s_norm[0]).view(1, 3, 1, 1)) / torch.tensor(s_norm[1]).view(1, 3, 1, 1)
    x_teacher = (raw - torch.tensor(t_norm[0]).view(1, 3, 1, 1)) / torch.tensor(t_norm[1]).view(1, 3, 1, 1)
    torch.testing.assert_close(teacher(x_student), model(x_teacher), rtol=1e-5, atol=1e-5)
    assert Teacher(model, s_norm, s_norm).scale is None  # same normalization: no conversion


def test_kd_run_logs_both_terms_and_never_changes_the_teacher(teacher_ckpt, tmp_path, tiny):
    cfg = tiny(tmp_path, f"kd.teacher={teacher_ckpt}", "augment.policy=geo-n2-m6")
    run = setup_run(cfg, quiet=True)
    before = {k: v.clone() for k, v in run.task.teacher.state_dict().items()}
    stats = train_one_epoch(run, 0, progress=False)
    assert stats["train_kd_loss"] > 0 and stats["train_task_loss"] > 0
    assert stats["train_loss"] == pytest.approx(stats["train_task_loss"] + stats["train_kd_loss"], rel=1e-4)
    for k, v in run.task.teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN statistics untouched
    saved = load_checkpoint(teacher_ckpt)["model"]
    for k, v in run.task.teacher.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    summary = train(cfg, quiet=True, overwrite=True)
    row = json.loads((tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_kd_loss" in row and summary["kd"]["k"] == 3 and summary["kd"]["temperature"] == 2.0


def test_lambda_zero_trains_exactly_like_no_kd(teacher_ckpt, tmp_path, tiny):
    plain = tiny(tmp_path / "plain", "augment.policy=ra-n2-m9")
    kd0 = tiny(tmp_path / "kd0", "augment.policy=ra-n2-m9", f"kd.teacher={teacher_ckpt}", "kd.lambda=0")
    train(plain, quiet=True)
    train(kd0, quiet=True)
    a = load_checkpoint(tmp_path / "plain" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "kd0" / "tiny" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert b["history"][0]["train_kd_loss"] > 0  # still measured and logged


def test_kd_config_errors(teacher_ckpt, tmp_path, tiny):
    with pytest.raises(RunError, match="kd.k=11 is larger than the 10 classes"):
        setup_run(tiny(tmp_path, f"kd.teacher={teacher_ckpt}", "kd.k=11"), quiet=True)
    with pytest.raises(RunError, match="kd.teacher: .*not found"):
        setup_run(tiny(tmp_path, f"kd.teacher={tmp_path / 'none.pt'}"), quiet=True)
