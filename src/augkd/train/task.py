"""Training tasks: turn a model and a batch into a dict of losses, so the loop stays ignorant of how.

A task returns ``{"loss": total to backpropagate, "task_loss": ..., "output": logits}`` plus any extra terms
(the distillation task adds ``kd_loss``). Every ``*_loss`` entry is logged to ``metrics.jsonl``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationTask", "DistillationTask"]


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
    """

    def __init__(self, teacher: nn.Module, kd_loss: nn.Module, lam: float, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.teacher = teacher
        self.kd_loss = kd_loss
        self.lam = lam
        self.label_smoothing = label_smoothing

    def forward(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int
    ) -> dict[str, torch.Tensor]:
        logits = model(images)
        task_loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        teacher_logits = self.teacher(images)
        if self.lam == 0:
            with torch.no_grad():
                kd_loss = self.kd_loss(logits.float(), teacher_logits.float())
            loss = task_loss
        else:
            kd_loss = self.kd_loss(logits.float(), teacher_logits.float())
            loss = task_loss + self.lam * kd_loss
        return {"loss": loss, "task_loss": task_loss, "kd_loss": kd_loss, "output": logits}
