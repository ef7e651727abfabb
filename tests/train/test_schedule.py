"""augkd.train.schedule: warm-up, cosine, one-cycle and step multipliers."""

from __future__ import annotations

import itertools

import pytest

from augkd.train.config import OptimConfig
from augkd.train.schedule import lr_factor


def test_cosine_with_warmup_shape():
    cfg = OptimConfig(lr=0.1, schedule="cosine", warmup_epochs=1, min_lr=0.001)
    spe, total = 10, 100
    f = [lr_factor(cfg, s, spe, total) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # monotone decay after warm-up
    assert f[-1] == pytest.approx(0.01, abs=1e-3)  # reaches min_lr / lr
    assert lr_factor(cfg, total, spe, total) == pytest.approx(0.01)


def test_onecycle_peaks_then_reaches_zero():
    cfg = OptimConfig(lr=0.2, schedule="onecycle", warmup_epochs=2)
    spe, total = 5, 40
    f = [lr_factor(cfg, s, spe, total) for s in range(total)]
    assert max(f) == pytest.approx(1.0) and f.index(max(f)) == 9
    assert f[-1] == pytest.approx(0.0)


def test_step_schedule_milestones():
    cfg = OptimConfig(lr=0.1, schedule="step", milestones=[2, 4], gamma=0.1)
    spe = 10
    assert lr_factor(cfg, 19, spe, 60) == pytest.approx(1.0)
    assert lr_factor(cfg, 20, spe, 60) == pytest.approx(0.1)
    assert lr_factor(cfg, 45, spe, 60) == pytest.approx(0.01)


def test_bad_schedules_are_errors():
    with pytest.raises(ValueError, match="onecycle needs optim.warmup_epochs"):
        OptimConfig(schedule="onecycle")
    with pytest.raises(ValueError, match="milestones must be increasing"):
        OptimConfig(schedule="step", milestones=[3, 1])
