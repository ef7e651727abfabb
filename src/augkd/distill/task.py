"""Training tasks: turn a model and a batch into a dict of losses, so the loop stays ignorant of how.

A task returns ``{"loss": total to backpropagate, "task_loss": ..., "output": logits}`` plus any extra terms
(the distillation task adds ``kd_loss`` and the student's agreement with the teacher, ``agree_top1``,
``agree_top5``, ``teacher_kl``: batch means, see :func:`~augkd.distill.loss.agreement`). Every ``*_loss`` entry
and the agreement figures are logged to ``metrics.jsonl``.

With soft ``targets`` (a mixing stage's, :class:`~augkd.data.loader.Batch`) the cross-entropy is taken against them,
with the label smoothing applied to them as timm composes Mixup with smoothing
(``targets * (1 - smoothing) + smoothing / C``); ``labels`` are then the dominant labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from augkd.distill.cache import TeacherCache
from augkd.distill.loss import TeacherTopK, TopKKL, agreement, teacher_top_k
from augkd.registry import Registry

__all__ = [
    "KD_WEIGHTINGS",
    "CachedDistillationTask",
    "ClassificationTask",
    "DistillationTask",
    "Distiller",
    "kd_weights",
    "task_cross_entropy",
    "top_k_weights",
]


class ClassificationTask(nn.Module):
    """Cross-entropy on the ground-truth labels (with optional label smoothing)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        epoch: int,
        targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        logits = model(images)
        task_loss = task_cross_entropy(logits, labels, targets, self.label_smoothing)
        return {"loss": task_loss, "task_loss": task_loss, "output": logits}


def task_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy against the soft ``targets`` when a mixing stage made them, else against ``labels``; label
    smoothing applies to either (torch smooths probability targets as timm's ``mixup_target`` does)."""
    return F.cross_entropy(logits.float(), labels if targets is None else targets, label_smoothing=label_smoothing)


def _entropy_weights(teacher: TeacherTopK, num_classes: int) -> torch.Tensor:
    return teacher.entropy / math.log(num_classes)


def _doubt_weights(teacher: TeacherTopK, num_classes: int) -> torch.Tensor:
    return 1.0 - teacher.log_p_label.exp()


#: Per-image KD weights (beyond the paper, whose conclusion names a constant lambda as a limitation): name ->
#: ``(teacher summary, num_classes) -> weights in [0, 1]``, or None for ``constant`` (every image weighs 1).
KD_WEIGHTINGS: Registry[Callable[[TeacherTopK, int], torch.Tensor] | None] = Registry(
    "KD weighting", {"constant": None, "entropy": _entropy_weights, "doubt": _doubt_weights}
)


def top_k_weights(teacher: TeacherTopK, num_classes: int, weighting: str) -> torch.Tensor | None:
    """Per-image multipliers of lambda in [0, 1] from the teacher's summary (see :func:`kd_weights`).

    Raises:
        ValueError: unknown weighting, or a summary without the entropy / true-label log-probability it needs.
    """
    KD_WEIGHTINGS.check(weighting, "kd weighting")
    weights = KD_WEIGHTINGS[weighting]
    if weights is None:
        return None
    if teacher.entropy is None or teacher.log_p_label is None:
        raise ValueError(f"kd weighting {weighting!r} needs the teacher's entropy and true-label probability")
    return weights(teacher, num_classes)


def kd_weights(teacher_logits: torch.Tensor, labels: torch.Tensor, weighting: str) -> torch.Tensor | None:
    """Per-image multipliers of lambda in [0, 1], from the teacher's view of the augmented image (no gradient).

    ``constant``: None (every image weighs 1). ``entropy``: the teacher's normalized entropy ``H / log C``, so an
    image the teacher finds ambiguous leans more on the soft labels. ``doubt``: ``1 - p_T(true class)``, the
    teacher's doubt that the augmented image still shows its label.
    """
    KD_WEIGHTINGS.check(weighting, "kd weighting")
    summary = teacher_top_k(teacher_logits, 1, labels=labels)
    return top_k_weights(summary, teacher_logits.shape[1], weighting)


class DistillationTask(nn.Module):
    """``CE(student, labels) + lambda * TopKKL(student, teacher)`` on the very same (augmented) batch.

    The teacher runs under the same autocast settings as the student (the loop's context), without gradients.
    Its logits are first summarized into a :class:`~augkd.distill.loss.TeacherTopK` (top-K classes and logits,
    log-sum-exp, entropy, true-label log-probability), and the loss is computed from that summary: the cached
    task (:class:`CachedDistillationTask`) reads the same summary from disk, so both compute the same numbers.
    With ``lam = 0`` the loss is exactly the cross-entropy (the KD term is still computed and logged, outside
    autograd), so training follows the plain task step for step.

    Args:
        teacher: a frozen :class:`~augkd.distill.teacher.Teacher` (None in a cached task).
        kd_loss: the top-K KL (:class:`~augkd.distill.loss.TopKKL`).
        lam: weight of the KD term.
        label_smoothing: label smoothing of the cross-entropy.
        weighting: per-image weights of the KD term (:func:`kd_weights`); ``constant`` is the paper's.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        kd_loss: TopKKL,
        lam: float,
        label_smoothing: float = 0.0,
        weighting: str = "constant",
    ) -> None:
        super().__init__()
        KD_WEIGHTINGS.check(weighting, "kd weighting")
        self.teacher = teacher
        self.kd_loss = kd_loss
        self.lam = lam
        self.label_smoothing = label_smoothing
        self.weighting = weighting

    def teacher_top_k(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int
    ) -> TeacherTopK:
        """The teacher's summary of the batch: here from a live forward pass."""
        return self.teacher_views(images, labels, indices, epoch)[0]

    def teacher_views(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int
    ) -> tuple[TeacherTopK, torch.Tensor]:
        """The teacher's summary for the loss, and the log-sum-exp of its logits at T = 1 (for
        :func:`~augkd.distill.loss.agreement`), from one live forward pass."""
        if self.teacher is None:
            raise RuntimeError("this distillation task has no live teacher")
        needs_labels = self.weighting != "constant"  # entropy and log p(label) only feed the weights
        logits = self.teacher(images)
        summary = teacher_top_k(logits, self.kd_loss.k, self.kd_loss.temperature, labels if needs_labels else None)
        return summary, teacher_top_k(logits, 1, 1.0).lse  # the cache builder's lse_1, computed the same way

    def _kd(self, logits: torch.Tensor, teacher: TeacherTopK) -> torch.Tensor:
        weights = top_k_weights(teacher, logits.shape[1], self.weighting)
        if weights is None:
            return self.kd_loss.from_teacher(logits.float(), teacher)
        return (weights * self.kd_loss.from_teacher(logits.float(), teacher, reduction="none")).mean()

    def forward(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        epoch: int,
        targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.losses(model(images), images, labels, indices, epoch, targets)

    def losses(
        self,
        logits: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None,
        epoch: int,
        targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward` from the student's ``logits`` on ``images`` (what :class:`Distiller` calls)."""
        task_loss = task_cross_entropy(logits, labels, targets, self.label_smoothing)
        teacher, lse_1 = self.teacher_views(images, labels, indices, epoch)
        if self.lam == 0:
            with torch.no_grad():
                kd_loss = self._kd(logits, teacher)
            loss = task_loss
        else:
            kd_loss = self._kd(logits, teacher)
            loss = task_loss + self.lam * kd_loss
        agree = agreement(logits, TeacherTopK(teacher.indices, teacher.logits, lse_1))
        out = {"loss": loss, "task_loss": task_loss, "kd_loss": kd_loss, "output": logits}
        return out | {key: value.mean() for key, value in agree.items()}


class CachedDistillationTask(DistillationTask):
    """:class:`DistillationTask` whose teacher summaries come from a soft-label cache instead of a forward pass.

    The cache (:class:`~augkd.distill.cache.TeacherCache`) is keyed by (epoch, sample index); with the same
    augmentation, data and teacher it holds what the live teacher would compute, so the losses are the same.

    Args:
        cache: an opened (and checked) teacher cache.
        kd_loss, lam, label_smoothing, weighting: as :class:`DistillationTask`.
    """

    def __init__(
        self,
        cache: TeacherCache,
        kd_loss: TopKKL,
        lam: float,
        label_smoothing: float = 0.0,
        weighting: str = "constant",
    ) -> None:
        super().__init__(None, kd_loss, lam, label_smoothing, weighting)
        self.cache = cache

    def teacher_views(
        self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, epoch: int
    ) -> tuple[TeacherTopK, torch.Tensor]:
        """The teacher's summary of the batch and its log-sum-exp at T = 1, read from the cache by (epoch, sample
        index)."""
        summary = self.cache.lookup(epoch, indices, self.kd_loss.k, self.kd_loss.temperature)
        return summary, self.cache.lookup(epoch, indices, 1, 1.0).lse


class Distiller(nn.Module):
    """Top-K knowledge distillation for a training loop of your own: ``loss = distiller(student_logits, images,
    labels)``.

    The teacher sees ``images`` (the very batch the student saw, normalized the student's way) in eval mode without
    gradients; the loss is ``CE(student, labels) + lam * TopKKL(student, teacher)``. ``labels`` may be int class
    indices or soft targets ``(B, C)`` (from :class:`~augkd.augment.mix.Mixer`); the last call's terms and the
    student's agreement with the teacher are kept in :attr:`last`.

    Args:
        teacher: a model taking the student's normalized images (frozen here), or None with ``cache``.
        k, temperature, mode, t2_scale: the top-K KL (:class:`~augkd.distill.loss.TopKKL`); the paper's CIFAR-10
            values K = 3, T = 2 by default.
        lam: weight of the KD term.
        label_smoothing: of the cross-entropy (soft targets from a ``Mixer`` usually carry their own already).
        cache: a teacher soft-label cache (folder or :class:`~augkd.distill.cache.TeacherCache`) to read the
            teacher's view from instead; calls then need the batch's sample ``indices`` and ``epoch``.

    Example:
        >>> distiller = Distiller(teacher, k=3, temperature=2.0)
        >>> loss = distiller(student(x), x, y)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
    """

    def __init__(
        self,
        teacher: nn.Module | None = None,
        k: int = 3,
        temperature: float = 2.0,
        lam: float = 1.0,
        mode: str = "renorm",
        t2_scale: bool = True,
        label_smoothing: float = 0.0,
        cache: TeacherCache | str | None = None,
    ) -> None:
        super().__init__()
        if (teacher is None) == (cache is None):
            raise ValueError("Distiller needs a teacher or a cache (exactly one)")
        kd_loss = TopKKL(k, temperature, mode, t2_scale)
        if cache is not None:
            reader = cache if isinstance(cache, TeacherCache) else TeacherCache(cache)
            self.task: DistillationTask = CachedDistillationTask(reader, kd_loss, lam, label_smoothing)
        else:
            teacher.requires_grad_(False)
            self.task = DistillationTask(_Frozen(teacher), kd_loss, lam, label_smoothing)
        self.last: dict[str, torch.Tensor] = {}

    def forward(
        self,
        student_logits: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> torch.Tensor:
        if isinstance(self.task, CachedDistillationTask) and indices is None:
            raise ValueError("a cache-backed Distiller needs the batch's sample indices (and epoch)")
        targets = labels if labels.is_floating_point() else None
        hard = labels.argmax(1) if targets is not None else labels
        out = self.task.losses(student_logits, images, hard, indices, epoch, targets)
        self.last = {k: v.detach() for k, v in out.items() if k not in ("output", "loss")}
        return out["loss"]


class _Frozen(nn.Module):
    """A teacher in eval mode whatever ``train()`` says, run without gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)
