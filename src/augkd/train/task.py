"""Training tasks: turn a model and a batch into a dict of losses, so the loop stays ignorant of how.

A task returns ``{"loss": total to backpropagate, "task_loss": ..., "output": logits}`` plus any extra terms
(the distillation task adds ``kd_loss``). Every ``*_loss`` entry is logged to ``metrics.jsonl``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationTask"]


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
