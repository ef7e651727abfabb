"""A frozen teacher that looks at the student's exact input batch (the paper's section 3.3).

The teacher is any registered model trained by augkd, loaded from its checkpoint with ``weights_only=True``.
It is frozen (no parameter requires a gradient), stays in eval mode whatever ``train()`` is called with, and
runs without autograd. It sees the very same augmented images as the student: when its normalization differs
from the student's, the normalized batch is converted with one per-channel affine map.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.models import create_model
from augkd.train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["Teacher", "TeacherError", "load_teacher"]


class TeacherError(ValueError):
    """A teacher checkpoint that cannot serve this student (wrong classes, not an augkd checkpoint)."""


class Teacher(nn.Module):
    """Frozen, eval-mode wrapper around a model.

    Args:
        model: the teacher network.
        student_norm: (mean, std) the student's inputs were normalized with.
        teacher_norm: (mean, std) the teacher was trained with; None means the same as the student's.
    """

    def __init__(
        self,
        model: nn.Module,
        student_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        teacher_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()
        scale = shift = None
        if student_norm is not None and teacher_norm is not None:
            ms, ss = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in student_norm)
            mt, st = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in teacher_norm)
            if not (torch.equal(ms, mt) and torch.equal(ss, st)):
                # x_t = ((x_s * s_s + m_s) - m_t) / s_t
                scale, shift = ss / st, (ms - mt) / st
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def train(self, mode: bool = True) -> Teacher:
        """The teacher always stays in eval mode (BN statistics and dropout frozen)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a batch normalized for the student (no gradient)."""
        if self.scale is not None:
            images = torch.addcmul(self.shift, images, self.scale)
        return self.model(images)


def load_teacher(
    path: str | Path,
    num_classes: int,
    device: torch.device | str = "cpu",
    student_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    channels_last: bool = False,
    state: dict[str, Any] | None = None,
) -> Teacher:
    """Load a teacher from an augkd checkpoint (``best.pt`` or ``last.pt``) for a student with ``num_classes``.

    ``state``: the checkpoint already read from ``path`` (by :func:`~augkd.train.checkpoint.load_checkpoint`), so a
    caller that needs its entries too reads the file once.

    Raises:
        CheckpointError: missing, corrupt or unsafe file.
        TeacherError: not an augkd checkpoint, or a class count that differs from the student's.
    """
    if state is None:
        state = load_checkpoint(path, map_location="cpu")
    if "model" not in state or "config" not in state:
        raise TeacherError(f"{path}: not an augkd checkpoint (no model/config entries)")
    model_cfg = state["config"].get("model", {})
    classes = state.get("classes") or []
    if len(classes) != num_classes:
        raise TeacherError(
            f"teacher {path} predicts {len(classes)} classes but the student's data has {num_classes}; "
            "a teacher must be trained on the same classes"
        )
    kwargs = dict(model_cfg.get("kwargs") or {})
    if model_cfg.get("drop_rate") is not None:
        kwargs["drop_rate"] = model_cfg["drop_rate"]
    model = create_model(model_cfg["name"], num_classes=num_classes, **kwargs)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {model_cfg['name']!r}: {str(exc).splitlines()[0]}") from None
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    norm = state.get("normalize")
    teacher_norm = (norm["mean"], norm["std"]) if norm else None
    return Teacher(model, student_norm, teacher_norm).to(device)
