"""Mixup and CutMix on uint8 batches, every draw a pure function of (seed, epoch, sample id).

The semantics are timm's ``Mixup`` in its per-element mode (``mode="elem"``), which fits augkd's per-sample draws:
each image, on its own,

1. is mixed with probability ``prob`` (else ``lam = 1``, the image and its label stay as they are);
2. uses CutMix with probability ``switch_prob`` when both ``mixup_alpha`` and ``cutmix_alpha`` are > 0 (only the
   enabled one otherwise);
3. draws ``lam ~ Beta(alpha, alpha)`` with that method's alpha;
4. Mixup: ``x = lam * x + (1 - lam) * partner`` (rounded back to uint8, as timm's ``FastCollateMixup``);
   CutMix: a box of side ``int(size * sqrt(1 - lam))`` centred on a uniform pixel, clipped at the border, is
   pasted from the partner, and ``lam`` becomes the uncovered fraction (timm's ``correct_lam=True``);
5. gets the soft target ``lam * onehot(y) + (1 - lam) * onehot(y_partner)``, smoothed as timm's
   ``mixup_target`` does: ``target * (1 - smoothing) + smoothing / C``.

Who the partner is is the caller's choice. :class:`Mixer` used on its own (your training loop) pairs image ``i``
with image ``B - 1 - i`` of the batch, as timm does; the trainer's batch stage
(:class:`augkd.data.pipeline.MixStage`) draws the partner by sample id from the whole training set, so a mixed
image never depends on the batch it sits in.

The draws (slots in :data:`augkd.augment.rng.SLOTS`): ``mix_apply`` and ``mix_switch`` uniforms, ``lam`` from two
Gamma variates (Marsaglia and Tsang's method on counter-based uniforms and Box-Muller normals, 8 tries, so a
Beta draw needs no sequential generator), the box centre from ``mix_box_y`` / ``mix_box_x``. They are computed on
the CPU in float64, so every device mixes the same way.

Example:
    >>> mixer = Mixer(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10, seed=0)
    >>> images, targets = mixer(images, labels, indices, epoch)  # uint8, float (B, 10)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from augkd.augment import rng

__all__ = ["Mixer", "beta", "mix_targets"]

Params = dict[str, torch.Tensor]

#: Tries of the Gamma rejection sampler; all 8 fail with probability below 1e-9 (the last candidate is kept then).
_GAMMA_TRIES = 8


def _gamma(u: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Gamma(alpha, 1) variates (float64) from uniforms ``u`` of shape ``(3 * tries + 1, B)``: Marsaglia and Tsang's
    rejection method, all tries at once, the first accepted one kept (the last when none is)."""
    tries = (u.shape[0] - 1) // 3
    boost = alpha < 1  # Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia and Tsang, section 6)
    a = torch.where(boost, alpha + 1.0, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    u1, u2, u3 = u[0 : 3 * tries : 3], u[1 : 3 * tries : 3], u[2 : 3 * tries : 3]
    z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log1p(-u3) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
    ok[-1] = True
    first = ok.to(torch.uint8).argmax(dim=0, keepdim=True)  # the first accepted try
    out = (d * v.clamp_min(0.0)).gather(0, first).squeeze(0)
    return torch.where(boost, out * (1.0 - u[-1]) ** (1.0 / alpha), out)


def beta(seed: int, epoch: int, index: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """``Beta(alpha, alpha)`` draws (float64, on the CPU), one per sample id in ``index``.

    Args:
        seed: run seed.
        epoch: epoch (>= 0).
        index: 1-D int tensor of sample ids.
        alpha: > 0, one value or one per sample.
    """
    index = index.detach().to("cpu", torch.int64)
    alpha = torch.as_tensor(alpha, dtype=torch.float64).expand(index.shape)
    n = 3 * _GAMMA_TRIES + 1
    slots = [rng.SLOTS["mix_gamma_x"] + j for j in range(n)] + [rng.SLOTS["mix_gamma_y"] + j for j in range(n)]
    u = rng.key_to_uniform(rng.keys(seed, epoch, index, slots)).to(torch.float64)  # one hash pass for all draws
    x, y = _gamma(u[:n], alpha), _gamma(u[n:], alpha)
    total = x + y
    return torch.where(total > 0, x / total.clamp_min(1e-300), torch.full_like(x, 0.5))


def mix_targets(
    labels: torch.Tensor, partner_labels: torch.Tensor, lam: torch.Tensor, num_classes: int, smoothing: float = 0.0
) -> torch.Tensor:
    """Soft targets ``lam * onehot(labels) + (1 - lam) * onehot(partner_labels)`` smoothed as timm's
    ``mixup_target`` (float32 ``(B, num_classes)``)."""
    lam = lam.to(device=labels.device, dtype=torch.float32)[:, None]
    out = torch.zeros(len(labels), num_classes, dtype=torch.float32, device=labels.device)
    out.scatter_add_(1, labels[:, None], lam)
    out.scatter_add_(1, partner_labels[:, None].to(labels.device), 1.0 - lam)
    if smoothing:
        out = out * (1.0 - smoothing) + smoothing / num_classes
    return out


class Mixer(nn.Module):
    """Mixup and/or CutMix with per-image draws keyed by (seed, epoch, sample id) (see the module docstring).

    Args:
        mixup_alpha: Beta parameter of Mixup; 0 disables it (timm's default: 1.0).
        cutmix_alpha: Beta parameter of CutMix; 0 disables it.
        prob: probability that an image is mixed at all.
        switch_prob: probability of CutMix rather than Mixup when both are enabled.
        num_classes: classes of the soft targets ``forward`` returns (not needed by ``sample`` / ``apply``).
        label_smoothing: smoothing of the targets ``forward`` returns (timm's default: 0.1).
        seed: seed of the draws.
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        num_classes: int | None = None,
        label_smoothing: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not (mixup_alpha >= 0 and cutmix_alpha >= 0 and mixup_alpha + cutmix_alpha > 0):
            raise ValueError(
                f"mixup_alpha and cutmix_alpha must be >= 0 and one of them > 0; got {mixup_alpha}, {cutmix_alpha}"
            )
        if not (0 <= prob <= 1 and 0 <= switch_prob <= 1):
            raise ValueError(f"prob and switch_prob must be in [0, 1]; got {prob}, {switch_prob}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob = float(prob), float(switch_prob)
        self.seed = int(seed)
        self._num_classes, self._label_smoothing = num_classes, float(label_smoothing)  # targets only: not keyed

    def sample(
        self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int], seed: int | None = None
    ) -> Params:
        """Per-image parameters for sample ids ``indices`` in ``epoch`` (on the CPU; ``seed`` replaces the
        module's):

        ``lam`` float32 (weight of the image itself, 1 when not mixed, the uncovered fraction for CutMix),
        ``cutmix`` bool, ``box`` int64 ``(B, 4)`` ``(top, bottom, left, right)`` of the pasted CutMix box (empty
        otherwise).
        """
        index = torch.as_tensor(indices).detach().to("cpu", torch.int64)
        if index.ndim != 1:
            raise ValueError(f"indices must be a 1-D integer tensor; got shape {tuple(index.shape)}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0; got {epoch}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else (int(s) for s in image_size)
        seed = self.seed if seed is None else int(seed)
        names = ("mix_apply", "mix_switch", "mix_box_y", "mix_box_x")
        k = rng.keys(seed, epoch, index, [rng.SLOTS[name] for name in names])
        u = rng.key_to_uniform(k[:2])
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = u[1] < self.switch_prob
        else:
            cutmix = torch.full(index.shape, self.cutmix_alpha > 0)
        alphas = torch.tensor([self.mixup_alpha, self.cutmix_alpha], dtype=torch.float64)
        alpha = alphas[cutmix.long()]
        lam = torch.where(u[0] < self.prob, beta(seed, epoch, index, alpha), torch.ones_like(alpha))
        cutmix &= lam < 1
        cy, cx = rng.key_to_randint(k[2], h), rng.key_to_randint(k[3], w)
        box = torch.where(cutmix[:, None], self._box(cy, cx, lam, h, w), 0)
        area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
        lam = torch.where(cutmix, 1.0 - area.double() / (h * w), lam)
        return {"lam": lam.float(), "cutmix": cutmix, "box": box}

    @staticmethod
    def _box(cy: torch.Tensor, cx: torch.Tensor, lam: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """CutMix boxes ``(top, bottom, left, right)`` of side ``int(size * sqrt(1 - lam))`` centred on
        ``(cy, cx)``, clipped at the border (timm's ``rand_bbox``)."""
        ratio = torch.sqrt(1.0 - lam.double())
        cut_h, cut_w = (h * ratio).floor().long(), (w * ratio).floor().long()
        return torch.stack(
            [
                (cy - cut_h // 2).clamp(0, h),
                (cy + (cut_h + 1) // 2).clamp(0, h),
                (cx - cut_w // 2).clamp(0, w),
                (cx + (cut_w + 1) // 2).clamp(0, w),
            ],
            dim=1,
        )

    def apply(self, images: torch.Tensor, partners: torch.Tensor, params: Params) -> torch.Tensor:
        """Mix uint8 ``images`` with ``partners`` (same shape: the partner of each image) by ``params``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or partners.shape != images.shape:
            raise ValueError(
                f"images and partners must be uint8 (B, C, H, W) of one shape; got {tuple(images.shape)}, "
                f"{tuple(partners.shape)}"
            )
        dev = images.device
        lam, cutmix = params["lam"].to(dev), params["cutmix"].to(dev)
        out = images.clone()
        rows = ((lam < 1) & ~cutmix).nonzero().squeeze(1)  # Mixup rows only: the others need no float pass
        if len(rows):
            w = lam[rows].view(-1, 1, 1, 1)
            blend = images[rows].float() * w + partners[rows].float() * (1.0 - w)
            out[rows] = blend.round_().clamp_(0, 255).to(torch.uint8)
        rows = cutmix.nonzero().squeeze(1)
        if len(rows):
            box = params["box"].to(dev)[rows]
            h, w = images.shape[-2:]
            ys = torch.arange(h, device=dev).view(1, h, 1)
            xs = torch.arange(w, device=dev).view(1, 1, w)
            inside = (ys >= box[:, 0, None, None]) & (ys < box[:, 1, None, None])
            inside = inside & (xs >= box[:, 2, None, None]) & (xs < box[:, 3, None, None])
            out[rows] = torch.where(inside.unsqueeze(1), partners[rows], out[rows])
        return out

    def forward(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor | None = None,
        epoch: int = 0,
        num_classes: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a uint8 batch, image ``i`` with image ``B - 1 - i``; returns ``(images, soft targets)``.

        Without ``indices`` the draws are fresh (keyed by a seed from torch's global RNG), as timm's are.
        """
        num_classes = num_classes or self._num_classes
        if not num_classes:
            raise ValueError("Mixer needs num_classes (at construction or in the call) to build soft targets")
        seed = None
        if indices is None:
            seed, indices, epoch = int(torch.randint(0, 2**31 - 1, ()).item()), torch.arange(len(images)), 0
        params = self.sample(indices, epoch, images.shape[-2:], seed)
        flipped = torch.arange(len(images) - 1, -1, -1, device=images.device)
        mixed = self.apply(images, images[flipped], params)
        targets = mix_targets(labels, labels[flipped], params["lam"], num_classes, self._label_smoothing)
        return mixed, targets

    def _settings(self) -> dict[str, float]:
        return {
            "mixup_alpha": self.mixup_alpha,
            "cutmix_alpha": self.cutmix_alpha,
            "prob": self.prob,
            "switch_prob": self.switch_prob,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self._settings().items()) + f", seed={self.seed}"
