"""A frozen teacher that looks at the student's exact input batch (the paper's section 3.3).

The teacher is any registered model trained by augkd, loaded from its run checkpoint with ``weights_only=True``
(other sources register in :data:`TEACHER_SOURCES`).
It is frozen (no parameter requires a gradient), stays in eval mode whatever ``train()`` is called with, and
runs without autograd. It sees the very same augmented images as the student: when its normalization differs
from the student's, the normalized batch is converted with one per-channel affine map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from augkd.distill.cache import file_sha256
from augkd.models.checkpoint import RunCheckpoint, read_run_checkpoint
from augkd.registry import Registry

__all__ = [
    "TEACHER_SOURCES",
    "Teacher",
    "TeacherError",
    "TeacherSource",
    "load_teacher",
    "parse_teacher",
    "teacher_fingerprint",
]


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


def _load_checkpoint_teacher(
    ref: str,
    num_classes: int,
    device: torch.device | str,
    student_norm: tuple[Sequence[float], Sequence[float]] | None,
    channels_last: bool,
    checkpoint: RunCheckpoint | None = None,
) -> Teacher:
    ckpt = checkpoint or read_run_checkpoint(ref)
    if ckpt.num_classes != num_classes:
        raise TeacherError(
            f"teacher {ref} predicts {ckpt.num_classes} classes but the student's data has {num_classes}; "
            "a teacher must be trained on the same classes"
        )
    model = ckpt.build_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Teacher(model, student_norm, ckpt.normalize).to(device)


@dataclass(frozen=True)
class TeacherSource:
    """Where teachers of one kind come from.

    Attributes:
        load: ``(ref, num_classes, device, student_norm, channels_last) -> Teacher``.
        fingerprint: ``ref -> str`` that changes whenever the teacher's outputs may (a teacher cache's key).
    """

    load: Callable[..., Teacher]
    fingerprint: Callable[[str], str]


#: ``kd.teacher`` values: ``<source>:<ref>`` for a registered source, else a path to an augkd run checkpoint.
TEACHER_SOURCES: Registry[TeacherSource] = Registry(
    "teacher source", {"checkpoint": TeacherSource(_load_checkpoint_teacher, file_sha256)}
)


def parse_teacher(spec: str | Path) -> tuple[str, str]:
    """``(source, ref)`` of a ``kd.teacher`` value: ``<source>:<ref>`` names a registered source, anything else is
    the path of an augkd run checkpoint (source ``checkpoint``)."""
    source, sep, ref = str(spec).partition(":")
    if sep and source in TEACHER_SOURCES:
        return source, ref
    return "checkpoint", str(spec)


def teacher_fingerprint(spec: str | Path) -> str:
    """What identifies the teacher ``spec`` names (a checkpoint's sha256)."""
    source, ref = parse_teacher(spec)
    return TEACHER_SOURCES[source].fingerprint(ref)


def load_teacher(
    path: str | Path,
    num_classes: int,
    device: torch.device | str = "cpu",
    student_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    channels_last: bool = False,
    checkpoint: RunCheckpoint | None = None,
) -> Teacher:
    """Load the teacher ``path`` names (an augkd run checkpoint, or ``<source>:<ref>``) for a student with
    ``num_classes``.

    ``checkpoint``: the run checkpoint already read from ``path`` (by
    :func:`~augkd.models.checkpoint.read_run_checkpoint`), so a caller that needs its entries too reads it once.

    Raises:
        CheckpointError: missing, corrupt or unsafe file, not an augkd run checkpoint, weights that do not fit.
        TeacherError: a class count that differs from the student's.
    """
    source, ref = parse_teacher(path)
    if source == "checkpoint":
        return _load_checkpoint_teacher(ref, num_classes, device, student_norm, channels_last, checkpoint)
    return TEACHER_SOURCES[source].load(ref, num_classes, device, student_norm, channels_last)
