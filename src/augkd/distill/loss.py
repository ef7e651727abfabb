"""KL divergence over the teacher's top-K classes (the paper's Eqn 3).

For each image the teacher's K highest-scoring classes form the set C_K, and the distillation term compares
teacher and student on those classes only, at temperature T. The paper's text supports two readings:

``renorm`` (default)
    Both distributions are renormalized over C_K (a softmax of the K gathered logits), and the loss is the
    KL divergence between the two K-class distributions. It is a true divergence: never negative, zero with
    zero gradient exactly when the student ranks the K classes like the teacher, and it leaves the mass
    outside C_K to the cross-entropy term. This matches "the KL-divergence between the distributions of top-K
    classes" in section 4.1, and it is the reading the loss is named after.
``partial``
    The full-softmax probabilities are kept at the K classes: ``sum_{c in C_K} p_T(c) (log p_T(c) - log p_S(c))``.
    The teacher's confidence on C_K weights the term (an ambiguous image, whose top-K mass is small, counts
    less), but it is not a divergence: it can go below zero and its minimum is not at ``p_S = p_T``, because it
    rewards the student for moving mass into C_K.

With ``K = C`` both readings equal Hinton's knowledge distillation ``KL(p_T || p_S)``. The result is scaled by
``T^2`` by default, as in Hinton et al., so that gradient magnitudes do not shrink with the temperature.

The loss is computed from a :class:`TeacherTopK` summary of the teacher (:func:`teacher_top_k`): its top-K classes
and logits, plus ``logsumexp(z / T)`` over all classes for ``partial``. A live teacher is summarized on the fly; the
soft-label cache (:mod:`augkd.distill.cache`) stores the same summary, so both paths run the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from augkd.registry import Registry

__all__ = [
    "AGREEMENT_KEYS",
    "KD_MODES",
    "TeacherTopK",
    "TopKKL",
    "agreement",
    "teacher_top_k",
    "top_k_kl",
    "top_k_kl_from_teacher",
]


class TeacherTopK(NamedTuple):
    """Everything the KD loss and the per-image weights need from the teacher, per image.

    A live teacher's logits are summarized by :func:`teacher_top_k`; the soft-label cache
    (:mod:`augkd.distill.cache`) stores exactly these fields, so a cached and a live run compute the loss from
    the very same numbers.

    Attributes:
        indices: int64 ``(B, K)`` the teacher's K highest classes, highest first.
        logits: ``(B, K)`` the teacher's logits at those classes (temperature 1).
        lse: ``(B,)`` ``logsumexp(z / T)`` over all classes at the loss's temperature (``partial`` mode needs it),
            or None when it is not known at that temperature.
        entropy: ``(B,)`` entropy (nats) of the teacher's full softmax at T = 1, or None.
        log_p_label: ``(B,)`` the teacher's log-probability of the true label at T = 1, or None.
    """

    indices: torch.Tensor
    logits: torch.Tensor
    lse: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    log_p_label: torch.Tensor | None = None


def logsumexp_at(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logsumexp(logits / T)`` over the classes (one function, so live and cached values agree bit for bit)."""
    return torch.logsumexp(logits / temperature, dim=1)


def teacher_top_k(
    teacher_logits: torch.Tensor, k: int, temperature: float = 1.0, labels: torch.Tensor | None = None
) -> TeacherTopK:
    """Summarize full teacher logits into a :class:`TeacherTopK` (no gradient, float32 or wider, no autocast).

    Args:
        teacher_logits: (B, C) logits of the teacher.
        k: number of top classes to keep, 1 <= k <= C.
        temperature: the temperature ``lse`` is taken at.
        labels: (B,) true labels; when given, ``entropy`` and ``log_p_label`` are filled in too.
    """
    dtype = torch.promote_types(teacher_logits.dtype, torch.float32)
    with torch.no_grad(), torch.autocast(teacher_logits.device.type, enabled=False):
        z = teacher_logits.detach().to(dtype)
        values, indices = z.topk(k, dim=1)
        lse = logsumexp_at(z, temperature)
        entropy = log_p_label = None
        if labels is not None:
            log_p = F.log_softmax(z, dim=1)
            entropy = -(log_p.exp() * log_p).sum(dim=1)
            log_p_label = log_p.gather(1, labels[:, None]).squeeze(1)
    return TeacherTopK(indices, values, lse, entropy, log_p_label)


def _renorm(
    s: torch.Tensor, s_top: torch.Tensor, t_top: torch.Tensor, teacher: TeacherTopK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both distributions renormalized over the teacher's K classes."""
    return F.log_softmax(t_top, dim=1), F.log_softmax(s_top, dim=1)


def _partial(
    s: torch.Tensor, s_top: torch.Tensor, t_top: torch.Tensor, teacher: TeacherTopK
) -> tuple[torch.Tensor, torch.Tensor]:
    """The full softmax probabilities at the teacher's K classes."""
    if teacher.lse is None:
        raise ValueError("mode=partial needs the teacher's log-sum-exp over all classes at this temperature")
    log_t = t_top - teacher.lse.detach().to(s.dtype)[:, None]
    return log_t, s_top - torch.logsumexp(s, dim=1, keepdim=True)


#: The two readings of Eqn (3), name -> ``(student/T, student top-K/T, teacher top-K/T, summary) -> (log p_T,
#: log p_S)`` over the K classes (see the module docstring for why ``renorm`` is the default).
KD_MODES: Registry[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = Registry(
    "KD mode", {"renorm": _renorm, "partial": _partial}
)


def top_k_kl_from_teacher(
    student_logits: torch.Tensor,
    teacher: TeacherTopK,
    temperature: float = 1.0,
    mode: str = "renorm",
    t2_scale: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """:func:`top_k_kl` from the teacher's top-K summary instead of its full logits (the K is ``teacher``'s).

    ``renorm`` needs only the top-K logits, so it works at any temperature; ``partial`` also needs
    ``teacher.lse`` taken at this very temperature.

    Raises:
        ValueError: ``partial`` without ``teacher.lse``, a bad mode or reduction.
    """
    KD_MODES.check(mode, "mode")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none; got {reduction!r}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float64 stays float64 (gradcheck)
    s = student_logits.to(dtype) / temperature
    t_top = teacher.logits.detach().to(dtype) / temperature
    s_top = s.gather(1, teacher.indices)
    log_t, log_s = KD_MODES[mode](s, s_top, t_top, teacher)
    per_image = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    if t2_scale:
        per_image = per_image * (temperature * temperature)
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


def top_k_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    k: int,
    temperature: float = 1.0,
    mode: str = "renorm",
    t2_scale: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Top-K KL divergence from the teacher to the student (see the module docstring for the modes).

    Args:
        student_logits: (B, C) logits of the student.
        teacher_logits: (B, C) logits of the teacher (treated as constants: no gradient flows into them).
        k: number of the teacher's top classes, 1 <= k <= C.
        temperature: softmax temperature T > 0.
        mode: ``renorm`` or ``partial``.
        t2_scale: multiply by T^2.
        reduction: ``mean`` over the batch, ``sum``, or ``none`` for one value per image.

    Raises:
        ValueError: shape mismatch, k outside [1, C], a bad temperature, mode or reduction.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must both be (B, C); got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}"
        )
    num_classes = student_logits.shape[1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"k must be in [1, {num_classes}] (the number of classes); got k={k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    teacher = teacher_top_k(teacher_logits, k, temperature)
    return top_k_kl_from_teacher(student_logits, teacher, temperature, mode, t2_scale, reduction)


class TopKKL(nn.Module):
    """:func:`top_k_kl` as a module with fixed ``k``, ``temperature``, ``mode`` and ``t2_scale``.

    Example:
        >>> loss_fn = TopKKL(k=3, temperature=2.0)
        >>> loss = loss_fn(student_logits, teacher_logits)  # batch mean  # doctest: +SKIP
    """

    def __init__(self, k: int, temperature: float = 1.0, mode: str = "renorm", t2_scale: bool = True) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        KD_MODES.check(mode, "mode")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.k, self.temperature, self.mode, self.t2_scale = k, temperature, mode, t2_scale

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        return top_k_kl(student_logits, teacher_logits, self.k, self.temperature, self.mode, self.t2_scale, reduction)

    def from_teacher(self, student_logits: torch.Tensor, teacher: TeacherTopK, reduction: str = "mean") -> torch.Tensor:
        """The same loss from the teacher's top-K summary (its first ``k`` classes are used)."""
        if teacher.indices.shape[1] < self.k:
            raise ValueError(f"the teacher summary holds {teacher.indices.shape[1]} classes; the loss needs k={self.k}")
        if teacher.indices.shape[1] > self.k:
            teacher = teacher._replace(indices=teacher.indices[:, : self.k], logits=teacher.logits[:, : self.k])
        return top_k_kl_from_teacher(student_logits, teacher, self.temperature, self.mode, self.t2_scale, reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}, mode={self.mode!r}, t2_scale={self.t2_scale}"


#: The per-image figures of :func:`agreement`, as the training loop and the evaluation log them.
AGREEMENT_KEYS = ("agree_top1", "agree_top5", "teacher_kl")


def agreement(student_logits: torch.Tensor, teacher: TeacherTopK) -> dict[str, torch.Tensor]:
    """How far the student agrees with the teacher, per image (no gradient; big_vision's "patient teacher" logs
    the like while it distils).

    ``agree_top1``: 100 when the student's top class is the teacher's, else 0. ``agree_top5``: 100 when the
    teacher's top class is among the student's 5 highest. ``teacher_kl``: ``KL(p_T || p_S)`` at temperature 1
    between the two distributions coarsened to the teacher's K classes plus one bin for all other classes: what a
    top-K summary (the soft-label cache) allows; it is the full KL when K = C and a lower bound of it otherwise.

    Args:
        student_logits: (B, C).
        teacher: the teacher's summary whose ``lse`` is ``logsumexp`` of its logits at T = 1 (over all classes).
    """
    if teacher.lse is None:
        raise ValueError("agreement needs the teacher's log-sum-exp at T = 1")
    with torch.no_grad(), torch.autocast(student_logits.device.type, enabled=False):
        s = student_logits.detach().double()
        idx = teacher.indices
        num_classes, k = s.shape[1], idx.shape[1]
        top5 = s.topk(min(5, num_classes), dim=1).indices
        log_s = F.log_softmax(s, dim=1)
        log_t_k = teacher.logits.double() - teacher.lse.double()[:, None]
        log_s_k = log_s.gather(1, idx)
        p_t_k = log_t_k.exp()
        kl = (p_t_k * (log_t_k - log_s_k)).sum(dim=1)
        if k < num_classes:
            rest_t = (1.0 - p_t_k.sum(dim=1)).clamp_min(0.0)
            log_rest_s = torch.logsumexp(log_s.scatter(1, idx, float("-inf")), dim=1)
            kl = kl + torch.where(rest_t > 0, rest_t * (rest_t.clamp_min(1e-300).log() - log_rest_s), 0.0)
        return {
            "agree_top1": 100.0 * (s.argmax(dim=1) == idx[:, 0]).float(),
            "agree_top5": 100.0 * (top5 == idx[:, :1]).any(dim=1).float(),
            "teacher_kl": kl.float(),
        }
