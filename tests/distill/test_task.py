"""augkd.distill.task: per-image KD weights and the distillation task's arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from augkd.distill.loss import TopKKL
from augkd.distill.task import DistillationTask, kd_weights
from augkd.distill.teacher import Teacher


def test_kd_weights():
    labels = torch.tensor([0, 1, 2])
    certain = torch.tensor([[50.0, 0, 0], [0, 50.0, 0], [0, 0, 50.0]])
    uniform = torch.zeros(3, 3)
    assert kd_weights(certain, labels, "constant") is None
    torch.testing.assert_close(kd_weights(uniform, labels, "entropy"), torch.ones(3))
    assert kd_weights(certain, labels, "entropy").max() < 1e-6
    assert kd_weights(certain, labels, "doubt").max() < 1e-6  # sure of the true class: no extra KD
    wrong = certain.roll(1, dims=1)  # sure of another class
    torch.testing.assert_close(kd_weights(wrong, labels, "doubt"), torch.ones(3))
    torch.testing.assert_close(kd_weights(uniform, labels, "doubt"), torch.full((3,), 2 / 3))
    with pytest.raises(ValueError, match="constant, entropy, doubt"):
        kd_weights(uniform, labels, "magic")


@pytest.mark.parametrize("weighting", ["constant", "entropy", "doubt"])
def test_distillation_task_is_ce_plus_weighted_kl(weighting):
    torch.manual_seed(0)
    student, teacher_net = nn.Linear(6, 5), nn.Linear(6, 5)
    x, labels = torch.randn(8, 6), torch.randint(0, 5, (8,))
    loss_fn = TopKKL(k=3, temperature=2.0)
    task = DistillationTask(Teacher(teacher_net), loss_fn, lam=0.7, weighting=weighting)
    out = task(student, x, labels, torch.arange(8), 0)
    s, t = student(x), teacher_net(x)
    per = loss_fn(s, t, reduction="none")
    w = kd_weights(t, labels, weighting)
    kd = per.mean() if w is None else (w * per).mean()
    torch.testing.assert_close(out["kd_loss"], kd)
    torch.testing.assert_close(out["loss"], F.cross_entropy(s, labels) + 0.7 * kd)
    assert math.isfinite(out["loss"].item())
