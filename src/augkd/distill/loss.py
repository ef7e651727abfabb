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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KD_MODES", "TopKKL", "top_k_kl"]

KD_MODES = ("renorm", "partial")


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
    if mode not in KD_MODES:
        raise ValueError(f"mode must be one of {', '.join(KD_MODES)}; got {mode!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none; got {reduction!r}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float64 stays float64 (gradcheck)
    s = student_logits.to(dtype) / temperature
    t = teacher_logits.detach().to(dtype) / temperature
    top = t.topk(k, dim=1).indices
    if mode == "renorm":
        log_t = F.log_softmax(t.gather(1, top), dim=1)
        log_s = F.log_softmax(s.gather(1, top), dim=1)
    else:
        log_t = F.log_softmax(t, dim=1).gather(1, top)
        log_s = F.log_softmax(s, dim=1).gather(1, top)
    per_image = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    if t2_scale:
        per_image = per_image * (temperature * temperature)
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


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
        if mode not in KD_MODES:
            raise ValueError(f"mode must be one of {', '.join(KD_MODES)}; got {mode!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.k, self.temperature, self.mode, self.t2_scale = k, temperature, mode, t2_scale

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        return top_k_kl(student_logits, teacher_logits, self.k, self.temperature, self.mode, self.t2_scale, reduction)

    def extra_repr(self) -> str:
        return f"k={self.k}, temperature={self.temperature}, mode={self.mode!r}, t2_scale={self.t2_scale}"
