"""Base augmentations applied before the policy: pad-and-crop + flip (CIFAR), random-resized-crop + flip (ImageNet).

Every module works on a whole uint8 batch ``(B, C, H, W)`` on its device and draws each image's parameters from
:mod:`augkd.augment.rng` keyed by ``(seed, epoch, sample index)``, so an image's augmentation does not depend on
the batch it sits in. As with the policies, ``sample`` returns the per-image parameters as a dict of ``(B,)``
tensors and ``forward(..., params=...)`` replays them exactly.

=================  ==========================================================================================
kind               module
=================  ==========================================================================================
``crop-flip``      :class:`RandomCropFlip`: zero-pad by ``padding``, random ``size`` crop, horizontal flip
``rrc-flip``       :class:`RandomResizedCropFlip`: torchvision's RandomResizedCrop sampling, bilinear resample
``flip``           :class:`Flip`: horizontal flip with probability 1/2
``none``           :class:`Identity`
``auto``           ``crop-flip`` for images of 64 px or less, ``rrc-flip`` above
=================  ==========================================================================================

:class:`Cutout` is the same kind of module for the stage after the policy (AutoAugment's CIFAR recipe ends
with a 16-px Cutout).

Example:
    >>> aug = build_base_augment("crop-flip", image_size=32, seed=0)
    >>> out = aug(images, indices, epoch)  # doctest: +SKIP
    >>> params = aug.sample(indices, epoch)  # doctest: +SKIP
    >>> assert torch.equal(aug(images, None, params=params), out)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import roi_align

from augkd.augment import functional as F
from augkd.augment import rng
from augkd.registry import Registry

__all__ = [
    "BASE_AUGMENTS",
    "BaseAugment",
    "Cutout",
    "Flip",
    "Identity",
    "RandomCropFlip",
    "RandomResizedCropFlip",
    "build_base_augment",
]

Params = dict[str, torch.Tensor]

#: Random-resized-crop tries are drawn as sample index ``index * _TRY_STRIDE + try`` in the rrc slots, so
#: tries are independent streams; the stride bounds the number of tries and must never change (replay).
_TRY_STRIDE = 16


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def _flip_draw(seed: int, epoch: int, index: torch.Tensor, enabled: bool) -> torch.Tensor:
    if not enabled:
        return torch.zeros(index.shape, dtype=torch.bool, device=index.device)
    return rng.uniform(seed, epoch, index, rng.SLOTS["flip"]) < 0.5


def _apply_flip(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


class BaseAugment(nn.Module):
    """Common interface: ``sample`` draws per-image parameters, ``apply`` uses them, ``forward`` does both.

    Args:
        seed: run seed; the same (seed, epoch, index) always gives the same augmentation.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)

    def sample(self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | None = None) -> Params:
        """Per-image parameters for dataset ``indices`` in ``epoch``, on ``indices``' device.

        Args:
            indices: 1-D tensor of dataset sample ids.
            epoch: epoch number (>= 0).
            image_size: (H, W) of the input images; default: the module's output size.
        """
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Augment uint8 ``images`` (B, C, H, W) with ``params`` from :meth:`sample`."""
        raise NotImplementedError

    def forward(
        self, images: torch.Tensor, indices: torch.Tensor | None = None, epoch: int = 0, params: Params | None = None
    ) -> torch.Tensor:
        """Augment a uint8 batch: sample parameters for ``indices`` in ``epoch`` (or replay ``params``).

        Args:
            images: uint8 images (B, C, H, W).
            indices: sample id of each image (ignored when ``params`` is given); None draws fresh parameters from
                torch's global RNG (``torch.manual_seed`` makes them reproducible), as torchvision's transforms do.
            epoch: epoch number (ignored when ``params`` is given).
            params: parameters from :meth:`sample` to replay exactly.

        Returns:
            uint8 images; the input is never modified.
        """
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (B, C, H, W); got {images.dtype} {tuple(images.shape)}")
        if params is None:
            if indices is None:  # fresh draws (a loop without sample ids): random ids from torch's global RNG
                indices = torch.randint(0, 2**31 - 1, (images.shape[0],))
            params = self.sample(torch.as_tensor(indices).to(images.device), epoch, images.shape[-2:])
        else:
            self.check_params(params, images.shape)
        return self.apply(images, params)

    def check_params(self, params: Params, shape: Sequence[int]) -> None:
        """Raise ValueError when replayed ``params`` do not fit images of ``shape`` (one device sync at most)."""


def _check_indices(indices: torch.Tensor, epoch: int) -> torch.Tensor:
    indices = torch.as_tensor(indices)
    if indices.ndim != 1 or indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ValueError(f"indices must be a 1-D integer tensor; got {indices.dtype} {tuple(indices.shape)}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0; got {epoch}")
    return indices.to(torch.int64)


class Identity(BaseAugment):
    """No augmentation (parameters: none)."""

    def sample(self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | None = None) -> Params:
        _check_indices(indices, epoch)
        return {}

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return images


class Flip(BaseAugment):
    """Horizontal flip with probability 1/2 (parameters: ``flip`` bool)."""

    def sample(self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | None = None) -> Params:
        index = _check_indices(indices, epoch)
        return {"flip": _flip_draw(self.seed, epoch, index, True)}

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        return _apply_flip(images, params["flip"].to(images.device))


class RandomCropFlip(BaseAugment):
    """Pad by ``padding`` with ``fill``, crop a random ``size x size`` window, flip horizontally with p = 1/2.

    The CIFAR convention (torchvision's ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip``), done as one
    gather over the whole batch: each output pixel's source index is computed from the crop offset and flip,
    so no per-image loop and no float conversion.

    Parameters: ``top``, ``left`` (int64, the window's corner in the padded image, in
    ``[0, H + 2 * padding - size]``) and ``flip`` (bool).

    Args:
        size: output side in pixels.
        padding: pixels added on every side before cropping.
        flip: draw horizontal flips (else never flip).
        seed: run seed.
        fill: grey level of the padding.
    """

    def __init__(self, size: int, padding: int = 4, flip: bool = True, seed: int = 0, fill: int = 0) -> None:
        super().__init__(seed)
        if size < 1 or padding < 0:
            raise ValueError(f"need size >= 1 and padding >= 0; got size={size}, padding={padding}")
        if not 0 <= fill <= 255:
            raise ValueError(f"fill must be a grey level in [0, 255]; got {fill}")
        self.size, self.padding, self.flip, self.fill = size, padding, flip, fill

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}, flip={self.flip}, seed={self.seed}, fill={self.fill}"

    def sample(self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | None = None) -> Params:
        index = _check_indices(indices, epoch)
        h, w = _size_hw(self.size if image_size is None else image_size)
        span_y, span_x = h + 2 * self.padding - self.size + 1, w + 2 * self.padding - self.size + 1
        if span_y < 1 or span_x < 1:
            raise ValueError(f"cannot crop {self.size}x{self.size} from {h}x{w} images padded by {self.padding}")
        return {
            "top": rng.randint(self.seed, epoch, index, rng.SLOTS["crop_y"], span_y),
            "left": rng.randint(self.seed, epoch, index, rng.SLOTS["crop_x"], span_x),
            "flip": _flip_draw(self.seed, epoch, index, self.flip),
        }

    def check_params(self, params: Params, shape: Sequence[int]) -> None:
        span_y, span_x = shape[-2] + 2 * self.padding - self.size, shape[-1] + 2 * self.padding - self.size
        top, left = params["top"], params["left"]
        if top.numel() and bool((top.min() < 0) | (top.max() > span_y) | (left.min() < 0) | (left.max() > span_x)):
            raise ValueError(f"crop corners must lie in [0, {span_y}] x [0, {span_x}] for images of {tuple(shape)}")

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        b, c, h, w = images.shape
        s, p, dev = self.size, self.padding, images.device
        top, left, flip = (params[k].to(dev) for k in ("top", "left", "flip"))
        if p:  # a filled canvas plus one copy: several times faster than F.pad on uint8
            padded = images.new_full((b, c, h + 2 * p, w + 2 * p), self.fill)
            padded[:, :, p : p + h, p : p + w] = images
            images, h, w = padded, h + 2 * p, w + 2 * p
        ramp = torch.arange(s, device=dev)
        rows = top.view(b, 1) + ramp  # (B, S) rows of the padded image
        cols = left.view(b, 1) + torch.where(flip.view(b, 1), ramp.flip(0), ramp)  # (B, S), mirrored when flipped
        flat = (rows.view(b, s, 1) * w + cols.view(b, 1, s)).view(b, 1, s * s).expand(b, c, s * s)
        return images.reshape(b, c, h * w).gather(2, flat).view(b, c, s, s)


class RandomResizedCropFlip(BaseAugment):
    """torchvision's RandomResizedCrop sampling from the counter RNG, a bilinear resample, then a random flip.

    Sampling follows ``torchvision.transforms.RandomResizedCrop.get_params``: up to ``tries`` draws of an area
    fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``; the first draw that fits the image
    wins and its corner is uniform; when none fits, the centre crop of the whole image clamped to ``ratio``.
    All tries are drawn at once and the first fit is picked with tensor ops (no per-image loop).

    Resampling is :func:`torchvision.ops.roi_align` (aligned, adaptive sampling ratio) on the whole batch: bilinear
    when enlarging, an average over a grid of bilinear samples when shrinking (so little aliasing), and the
    exact pixels when the crop is the whole image at the output size. Output is rounded back to uint8.

    Parameters: ``top``, ``left``, ``height``, ``width`` (int64, the crop in input pixels) and ``flip`` (bool).

    Args:
        size: output side in pixels.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
        flip: draw horizontal flips.
        seed: run seed.
        tries: sampling attempts before the fallback (torchvision uses 10; at most 16).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        seed: int = 0,
        tries: int = 10,
    ) -> None:
        super().__init__(seed)
        if size < 1:
            raise ValueError(f"size must be >= 1; got {size}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1; got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max; got {ratio}")
        if not 1 <= tries <= _TRY_STRIDE:
            raise ValueError(f"tries must be in [1, {_TRY_STRIDE}]; got {tries}")
        self.size, self.scale, self.ratio, self.flip, self.tries = size, tuple(scale), tuple(ratio), flip, tries

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}, flip={self.flip}, seed={self.seed}"

    def _fallback(self, h: int, w: int) -> tuple[int, int]:
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            return round(w / self.ratio[0]), w
        if in_ratio > self.ratio[1]:
            return h, round(h * self.ratio[1])
        return h, w

    def _fallback_sizes(self, h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_fallback` per image (float64, rounding half to even like Python's ``round``)."""
        in_ratio = w.double() / h.double()
        fb_h = torch.where(in_ratio < self.ratio[0], torch.round(w.double() / self.ratio[0]).long(), h)
        fb_w = torch.where(in_ratio > self.ratio[1], torch.round(h.double() * self.ratio[1]).long(), w)
        return fb_h, fb_w

    def sample(
        self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | torch.Tensor | None = None
    ) -> Params:
        """Per-image crop boxes and flips; ``image_size`` may also be an int tensor ``(B, 2)`` of each image's
        ``(H, W)`` (photos of different sizes), giving for every image what a call with its own size gives."""
        index = _check_indices(indices, epoch)
        if isinstance(image_size, torch.Tensor):
            hw = image_size.to(device=index.device, dtype=torch.int64).view(-1, 2)
            h, w = hw[:, 0], hw[:, 1]
            hc, wc = h.view(-1, 1), w.view(-1, 1)  # against the (B, T) tries
            fb_h, fb_w = self._fallback_sizes(h, w)
        else:
            h, w = hc, wc = _size_hw(self.size if image_size is None else image_size)
            fb_h, fb_w = self._fallback(h, w)
        tries = index.view(-1, 1) * _TRY_STRIDE + torch.arange(self.tries, device=index.device)  # (B, T)
        u_scale = rng.uniform(self.seed, epoch, tries, rng.SLOTS["rrc_scale"])
        u_ratio = rng.uniform(self.seed, epoch, tries, rng.SLOTS["rrc_ratio"])
        area = (hc * wc) * (self.scale[0] + u_scale * (self.scale[1] - self.scale[0]))
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(log_lo + u_ratio * (log_hi - log_lo))
        cw = torch.round(torch.sqrt(area * aspect)).to(torch.int64)
        ch = torch.round(torch.sqrt(area / aspect)).to(torch.int64)
        fits = (cw > 0) & (cw <= wc) & (ch > 0) & (ch <= hc)
        first = fits.to(torch.int8).argmax(dim=1, keepdim=True)  # first fitting try (0 when none fits)
        found = fits.any(dim=1)
        height = torch.where(found, ch.gather(1, first).squeeze(1), fb_h)
        width = torch.where(found, cw.gather(1, first).squeeze(1), fb_w)
        top = rng.randint(self.seed, epoch, index, rng.SLOTS["crop_y"], h - height + 1)
        left = rng.randint(self.seed, epoch, index, rng.SLOTS["crop_x"], w - width + 1)
        return {
            "top": torch.where(found, top, (h - fb_h) // 2),
            "left": torch.where(found, left, (w - fb_w) // 2),
            "height": height,
            "width": width,
            "flip": _flip_draw(self.seed, epoch, index, self.flip),
        }

    def check_params(self, params: Params, shape: Sequence[int]) -> None:
        h, w = shape[-2], shape[-1]
        top, left, height, width = (params[k] for k in ("top", "left", "height", "width"))
        if top.numel() and bool(
            (top.min() < 0)
            | (left.min() < 0)
            | (height.min() < 1)
            | (width.min() < 1)
            | ((top + height).max() > h)
            | ((left + width).max() > w)
        ):
            raise ValueError(f"crop boxes must lie inside the {h}x{w} images")

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        b, dev = images.shape[0], images.device
        top, left, height, width = (params[k].to(dev) for k in ("top", "left", "height", "width"))
        boxes = torch.stack([torch.arange(b, device=dev), left, top, left + width, top + height], dim=1)
        # aligned=True puts pixel k's centre at k + 0.5, so a whole-image box at the output size is the identity.
        out = roi_align(images.float(), boxes.float(), output_size=self.size, sampling_ratio=-1, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        return _apply_flip(out, params["flip"].to(dev))


class Cutout(BaseAugment):
    """One ``size x size`` square per image filled with ``fill``, centred on a uniformly drawn pixel and clipped
    at the border (DeVries & Taylor's Cutout as AutoAugment's CIFAR trainer applies it after the policy, 16 px;
    AutoAugment fills with zeros after normalization, i.e. the mean colour, for which ``fill=128`` stands).

    Parameters: ``cy``, ``cx`` int64, the centre pixel.
    """

    def __init__(self, size: int, seed: int = 0, fill: int = 128) -> None:
        super().__init__(seed)
        if size < 1:
            raise ValueError(f"cutout size must be >= 1 pixel; got {size!r}")
        self.size, self.fill = int(size), int(fill)

    def sample(self, indices: torch.Tensor, epoch: int, image_size: int | Sequence[int] | None = None) -> Params:
        index = _check_indices(indices, epoch)
        if image_size is None:
            raise ValueError("Cutout.sample needs the image size")
        h, w = _size_hw(image_size)
        return {
            "cy": rng.randint(self.seed, epoch, index, rng.SLOTS["cutout_y"], h),
            "cx": rng.randint(self.seed, epoch, index, rng.SLOTS["cutout_x"], w),
        }

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        centers = torch.stack([params["cy"], params["cx"]], dim=1).to(images.device)
        sizes = torch.full_like(centers, self.size)
        return F.cutout(images, sizes, centers, self.fill)


def _auto(image_size: int, seed: int, padding: int, scale_min: float) -> BaseAugment:
    kind = "crop-flip" if image_size <= 64 else "rrc-flip"
    return BASE_AUGMENTS[kind](image_size, seed, padding, scale_min)


#: kind -> builder ``(image_size, seed, padding, scale_min) -> module``.
BASE_AUGMENTS: Registry[Callable[[int, int, int, float], BaseAugment]] = Registry(
    "base augmentation",
    {
        "auto": _auto,
        "crop-flip": lambda size, seed, padding, scale_min: RandomCropFlip(size, padding=padding, seed=seed),
        "rrc-flip": lambda size, seed, padding, scale_min: RandomResizedCropFlip(
            size, scale=(scale_min, 1.0), seed=seed
        ),
        "flip": lambda size, seed, padding, scale_min: Flip(seed),
        "none": lambda size, seed, padding, scale_min: Identity(seed),
    },
)


def build_base_augment(
    kind: str, image_size: int, seed: int = 0, padding: int = 4, scale_min: float = 0.08
) -> BaseAugment:
    """The base augmentation ``kind`` (``auto``, ``crop-flip``, ``rrc-flip``, ``flip``, ``none``).

    Args:
        kind: see the table in the module docstring.
        image_size: output side in pixels (crop size).
        seed: run seed.
        padding: padding of ``crop-flip``.
        scale_min: smallest area fraction of ``rrc-flip``.
    """
    BASE_AUGMENTS.check(kind, "base augmentation")
    return BASE_AUGMENTS[kind](image_size, seed, padding, scale_min)
