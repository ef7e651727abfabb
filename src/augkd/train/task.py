"""Training tasks: turn a model and a batch into a dict of losses, so the loop stays ignorant of how.

A task returns ``{"loss": total to backpropagate, "task_loss": ..., "output": logits}`` plus any extra terms
(the distillation task adds ``kd_loss``). Every ``*_loss`` entry is logged to ``metrics.jsonl``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KD_WEIGHTINGS", "ClassificationTask", "DistillationTask", "kd_weights"]


class ClassificationTask(nn.Module):
    """Cross-entropy on the ground-truth labels (with optional label smoothing)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int
    ) -> dict[str, torch.Tensor]:
        logits = model(images)
        task_loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return {"loss": task_loss, "task_loss": task_loss, "output": logits}


#: Per-image KD weights (beyond the paper, whose conclusion names a constant lambda as a limitation).
KD_WEIGHTINGS = ("constant", "entropy", "doubt")


def kd_weights(teacher_logits: torch.Tensor, labels: torch.Tensor, weighting: str) -> torch.Tensor | None:
    """Per-image multipliers of lambda in [0, 1], from the teacher's view of the augmented image (no gradient).

    ``constant``: None (every image weighs 1). ``entropy``: the teacher's normalized entropy ``H / log C``, so an
    image the teacher finds ambiguous leans more on the soft labels. ``doubt``: ``1 - p_T(true class)``, the
    teacher's doubt that the augmented image still shows its label.
    """
    if weighting == "constant":
        return None
    p = F.softmax(teacher_logits.detach().float(), dim=1)
    if weighting == "entropy":
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        return entropy / math.log(p.shape[1])
    if weighting == "doubt":
        return 1.0 - p.gather(1, labels[:, None]).squeeze(1)
    raise ValueError(f"kd weighting must be one of {', '.join(KD_WEIGHTINGS)}; got {weighting!r}")


class DistillationTask(nn.Module):
    """``CE(student, labels) + lambda * TopKKL(student, teacher)`` on the very same (augmented) batch.

    The teacher runs under the same autocast settings as the student (the loop's context), without gradients.
    With ``lam = 0`` the loss is exactly the cross-entropy (the KD term is still computed and logged, outside
    autograd), so training follows the plain task step for step.

    Args:
        teacher: a frozen :class:`~augkd.distill.teacher.Teacher`.
        kd_loss: the top-K KL (:class:`~augkd.distill.loss.TopKKL`).
        lam: weight of the KD term.
        label_smoothing: label smoothing of the cross-entropy.
        weighting: per-image weights of the KD term (:func:`kd_weights`); ``constant`` is the paper's.
    """

    def __init__(
        self,
        teacher: nn.Module,
        kd_loss: nn.Module,
        lam: float,
        label_smoothing: float = 0.0,
        weighting: str = "constant",
    ) -> None:
        super().__init__()
        if weighting not in KD_WEIGHTINGS:
            raise ValueError(f"kd weighting must be one of {', '.join(KD_WEIGHTINGS)}; got {weighting!r}")
        self.teacher = teacher
        self.kd_loss = kd_loss
        self.lam = lam
        self.label_smoothing = label_smoothing
        self.weighting = weighting

    def _kd(self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = kd_weights(teacher_logits, labels, self.weighting)
        if weights is None:
            return self.kd_loss(logits.float(), teacher_logits.float())
        return (weights * self.kd_loss(logits.float(), teacher_logits.float(), reduction="none")).mean()

    def forward(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int
    ) -> dict[str, torch.Tensor]:
        logits = model(images)
        task_loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        teacher_logits = self.teacher(images)
        if self.lam == 0:
            with torch.no_grad():
                kd_loss = self._kd(logits, teacher_logits, labels)
            loss = task_loss
        else:
            kd_loss = self._kd(logits, teacher_logits, labels)
            loss = task_loss + self.lam * kd_loss
        return {"loss": loss, "task_loss": task_loss, "kd_loss": kd_loss, "output": logits}
