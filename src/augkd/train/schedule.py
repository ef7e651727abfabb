"""Per-step learning-rate schedules (warm-up, cosine, step, one-cycle, exponential) as a multiplier of the peak rate.

One pure function of the optimizer step rather than timm's scheduler objects: timm's schedulers are stateful
(stepped per epoch or per update, with their own state dict), while a function of the step alone makes an exact
resume need nothing but the step count saved in ``last.pt``, and keeps every schedule's warm-up in one place.
The ``exponential`` schedule is the staircase of TensorFlow's EfficientNet trainer (and of timm's
``StepLRScheduler`` with ``decay_t=2.4, decay_rate=0.97``), counted in optimizer steps.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from augkd.registry import Registry

if TYPE_CHECKING:
    from augkd.train.config import OptimConfig

__all__ = ["SCHEDULES", "lr_factor"]


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based); pure, so resuming needs only the step.

    Warm-up rises linearly from ``warmup_start`` to 1 over ``warmup_epochs``. After it, ``cosine`` decays to
    ``min_lr / lr`` at the last step, ``onecycle`` decays linearly to zero, ``step`` multiplies by ``gamma`` at
    each milestone epoch, ``exponential`` is ``decay_rate ** (step // decay_steps)`` with ``decay_steps =
    round(decay_epochs * steps_per_epoch)`` (a staircase counted from step 0, as TensorFlow's EfficientNet
    trainer does: the warm-up replaces the first steps, it does not delay the decay), ``constant`` stays at 1.
    """
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * (step + 1) / warm
    return SCHEDULES[cfg.schedule](cfg, step, warm, max(1, total_steps - warm), steps_per_epoch)


def _cosine(cfg: OptimConfig, step: int, warm: int, rest: int, steps_per_epoch: int) -> float:
    t = min(1.0, (step - warm) / rest)  # progress after warm-up, in [0, 1]
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def _step(cfg: OptimConfig, step: int, warm: int, rest: int, steps_per_epoch: int) -> float:
    return cfg.gamma ** bisect.bisect_right(cfg.milestones, step / steps_per_epoch)


def _onecycle(cfg: OptimConfig, step: int, warm: int, rest: int, steps_per_epoch: int) -> float:
    return max(0.0, 1.0 - (step - warm + 1) / rest)


def _constant(cfg: OptimConfig, step: int, warm: int, rest: int, steps_per_epoch: int) -> float:
    return 1.0


def _exponential(cfg: OptimConfig, step: int, warm: int, rest: int, steps_per_epoch: int) -> float:
    decay_steps = max(1, round(cfg.decay_epochs * steps_per_epoch))
    return cfg.decay_rate ** (step // decay_steps)


#: ``optim.schedule`` -> ``(optim config, step, warm-up steps, steps after warm-up, steps per epoch) -> factor``
#: for the steps after the warm-up.
SCHEDULES: Registry[Callable[[OptimConfig, int, int, int, int], float]] = Registry(
    "schedule",
    {"cosine": _cosine, "step": _step, "onecycle": _onecycle, "constant": _constant, "exponential": _exponential},
)
