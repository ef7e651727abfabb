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


def test_exponential_is_efficientnets_staircase_counted_from_step_zero():
    # EfficientNet (section 4.2): x0.97 every 2.4 epochs; 10 steps per epoch -> every 24 steps.
    cfg = OptimConfig(lr=0.256, schedule="exponential", decay_rate=0.97, decay_epochs=2.4, warmup_epochs=1)
    spe, total = 10, 100
    f = [lr_factor(cfg, s, spe, total) for s in range(total)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warm-up replaces the first epoch
    assert f[10:24] == pytest.approx([1.0] * 14)
    assert f[24] == pytest.approx(0.97) and f[47] == pytest.approx(0.97) and f[48] == pytest.approx(0.97**2)
    assert f[99] == pytest.approx(0.97**4)
    # The staircase counts optimizer steps from 0 (TensorFlow's and timm's convention), not from the warm-up's end.
    long_warm = OptimConfig(lr=0.256, schedule="exponential", warmup_epochs=5, decay_epochs=2.4)
    assert lr_factor(long_warm, 50, spe, total) == pytest.approx(0.97**2)
    # Beyond the planned steps it keeps decaying (no clamp), so a longer run continues the same curve.
    assert lr_factor(cfg, 240, spe, total) == pytest.approx(0.97**10)


def test_exponential_schedule_checks_its_keys():
    with pytest.raises(ValueError, match="optim.decay_rate must be in"):
        OptimConfig(schedule="exponential", decay_rate=1.5)
    with pytest.raises(ValueError, match="optim.decay_epochs > 0"):
        OptimConfig(schedule="exponential", decay_epochs=0)
