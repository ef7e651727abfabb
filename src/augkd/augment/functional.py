"""Batched per-image augmentation primitives on uint8 image tensors, bit-exact with Pillow.

Every function takes a batch of uint8 images ``(B, C, H, W)`` and per-image parameters of shape ``(B,)`` and
returns a new uint8 batch (the input is never modified). There is no Python loop over images: per-image
parameters enter as broadcast tensors, lookup tables or index arithmetic, so one call costs a few passes over
the batch whatever the parameters are, on CPU and CUDA alike.

The functions reproduce what the AutoAugment reference implementations compute with Pillow (``ImageOps``,
``ImageEnhance``, ``Image.transform(..., NEAREST, fillcolor=fill)`` and ``Image.rotate``):

- colour ops follow Pillow's integer and ``float32`` arithmetic step by step (the 16-bit luma of
  ``convert("L")``, the ``float32`` blend and truncation of ``Image.blend``, the ``float64`` lookup table of
  ``autocontrast``, the integer histogram walk of ``equalize``), so the results are identical;
- geometric ops use Pillow's nearest-neighbour sampler: the source pixel of output pixel ``(x, y)`` is
  ``floor(a*(x + 0.5) + b*(y + 0.5) + c)`` evaluated in the same 16.16 fixed point Pillow uses
  (``affine_fixed`` in ``Geometry.c``), and uncovered pixels take ``fill``.

Work stays in uint8/int16 where possible: invert, posterize and solarize are uint8/int16 bit tricks,
autocontrast and equalize one gather through a per-image 256-entry lookup table, the four enhance ops one
float32 blend, translate and shear_x copies of whole (windows of) rows, shear_y one gather with an index row
per image, rotate one gather with per-image integer index arithmetic on the ``(H, W)`` grid (not ``C*H*W``).
On CPU, work runs in blocks of images sized to the L2 cache (:data:`BLOCK_ELEMENTS`), which halves the time
of multi-pass ops on large images.

Argument conventions (levels are mapped to these in :mod:`augkd.augment.ops`):

- translation in pixels, shear as the factor of Pillow's affine matrix, rotation in degrees counter-clockwise
  about the image centre; for ``translate_x(dx)`` output pixel ``x`` reads input ``x + dx`` (content moves left
  for positive ``dx``), for ``shear_x(s)`` it reads ``x + s*y`` (shear about the top-left corner, as timm);
- enhance factors as in ``ImageEnhance`` (1 = unchanged, 0 = the degenerate image);
- posterize in bits kept (0-8), solarize in a threshold (0-256; pixels ``>= threshold`` are inverted).
"""

from __future__ import annotations

import functools
import math
import operator

import torch
import torch.nn.functional as F

__all__ = [
    "apply_lut",
    "autocontrast",
    "brightness",
    "color",
    "contrast",
    "cutout",
    "equalize",
    "grayscale",
    "invert",
    "posterize",
    "rotate",
    "sharpness",
    "shear_x",
    "shear_y",
    "solarize",
    "translate_x",
    "translate_y",
]

_FIX_ONE = 65536  # 1.0 in Pillow's 16.16 fixed point
#: CPU cache blocking: images are processed in blocks of about this many uint8 elements per intra-op thread, so
#: that the int/float temporaries of one block stay in the threads' L2 caches. Other devices take the whole batch.
BLOCK_ELEMENTS = 1 << 18


# ------------------------------------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=512)
def _arange(start: int, end: int, step: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A cached ``torch.arange`` (read-only: never modify the result in place); saves a launch per op call."""
    return torch.arange(start, end, step, device=device, dtype=dtype)


def _blocks(images: torch.Tensor, scale: int = 1) -> list[slice]:
    """Batch slices to process one after another: cache-sized blocks on CPU (``scale`` times
    :data:`BLOCK_ELEMENTS` per thread), the whole batch elsewhere."""
    b = images.shape[0]
    if images.device.type != "cpu" or b == 0:
        return [slice(0, b)]
    per = max(1, scale * BLOCK_ELEMENTS * torch.get_num_threads() // max(1, images[0].numel()))
    return [slice(i, min(b, i + per)) for i in range(0, b, per)]


def _per_image(values: torch.Tensor, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``values`` (B,) as ``dtype`` on the images' device, checked against the batch size."""
    values = torch.as_tensor(values).to(device=images.device, dtype=dtype)
    if values.shape != (images.shape[0],):
        raise ValueError(f"expected one value per image, shape ({images.shape[0]},), got {tuple(values.shape)}")
    return values


def _batch(images: torch.Tensor) -> torch.Tensor:
    """Check that ``images`` is a uint8 (B, C, H, W) tensor and return it contiguous (the ops use flat views)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else repr(images)
        raise ValueError(f"images must be a uint8 tensor (B, C, H, W), got {got}")
    return images.contiguous()


def _check_rgb(images: torch.Tensor) -> None:
    if images.shape[1] != 3:
        raise ValueError(f"expected RGB (3 channels) or greyscale (1 channel) images, got {images.shape[1]} channels")


def _store_floor_(out: torch.Tensor, x: torch.Tensor) -> None:
    """Write float ``x`` clamped to [0, 255] and truncated (= floored, as Pillow's blend) into uint8 ``out``.

    float -> int16 -> uint8 is two vectorised conversions, several times faster on CPU than float -> uint8.
    """
    out.copy_(x.clamp_(0.0, 255.0).to(torch.int16))


def apply_lut(images: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Map every pixel through a per-image (or per-image-and-channel) 256-entry lookup table.

    Args:
        images: uint8 (B, C, H, W).
        lut: uint8 (B, 256), one table for all channels of an image, or (B, C, 256), one per channel.

    Returns:
        uint8 (B, C, H, W) with ``out[b, c, y, x] = lut[b, (c,) images[b, c, y, x]]``.
    """
    images = _batch(images)
    b, c, h, w = images.shape
    per_channel = lut.ndim == 3
    rows_per_image = c if per_channel else 1
    if lut.shape[-1] != 256 or lut.numel() != b * rows_per_image * 256:
        raise ValueError(
            f"lut must be (B, 256) or (B, C, 256) for images {tuple(images.shape)}, got {tuple(lut.shape)}"
        )
    table = lut.to(torch.uint8).reshape(-1)
    # index = table row * 256 + value, as int32: one index_select, cheaper than gather's int64 index.
    offsets = _arange(0, b * rows_per_image * 256, 256, images.device, torch.int32).view(b, rows_per_image, 1)
    out = torch.empty_like(images)
    blocks = _blocks(images)
    buffer = torch.empty(
        (blocks[0].stop - blocks[0].start, rows_per_image, c * h * w // rows_per_image),
        device=images.device,
        dtype=torch.int32,
    )
    for block in blocks:
        n = block.stop - block.start
        index = buffer[:n]
        index.copy_(images[block].view(n, rows_per_image, -1))
        index += offsets[block]
        torch.index_select(table, 0, index.view(-1), out=out[block].view(-1))
    return out


def _blend_into(out: torch.Tensor, image: torch.Tensor, degenerate: torch.Tensor | None, factor: torch.Tensor) -> None:
    """Pillow's ``Image.blend(degenerate, image, factor)`` of float32 pixel values, written into uint8 ``out``.

    Pillow computes ``(uint8)(d + factor * (x - d))`` in float32 and clips to [0, 255]. The same float32
    operations, each rounded on its own (product, then sum; never fused), then truncation, give the same bytes.
    ``image`` is overwritten; ``degenerate`` broadcasts against it (``None`` = black, as for brightness).
    """
    if degenerate is not None:
        image.sub_(degenerate)
    image.mul_(factor)
    if degenerate is not None:
        image.add_(degenerate)
    _store_floor_(out, image)


def _luma(xf: torch.Tensor) -> torch.Tensor:
    """Pillow's ``convert("L")`` of float32 RGB values (B, 3, H, W) as float32 (B, 1, H, W).

    Pillow computes ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``. Every partial sum is an integer below
    2**24, so float32 holds it exactly (fused or not) and the power-of-two scaling plus floor is the shift.
    """
    luma = xf[:, 1:2] * 38470.0
    luma.add_(xf[:, 0:1], alpha=19595.0).add_(xf[:, 2:3], alpha=7471.0)
    return luma.add_(32768.0).mul_(1.0 / 65536.0).floor_()


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Pillow's greyscale (``convert("L")``) of RGB images, exactly; single-channel images are returned as is.

    Args:
        images: uint8 (B, 3, H, W) or (B, 1, H, W).

    Returns:
        uint8 (B, 1, H, W).
    """
    images = _batch(images)
    if images.shape[1] == 1:
        return images.clone()
    _check_rgb(images)
    b, _, h, w = images.shape
    out = images.new_empty(b, 1, h, w)
    for block in _blocks(images):
        _store_floor_(out[block], _luma(images[block].to(torch.float32)))
    return out


# ------------------------------------------------------------------------------------------------ point-wise ops
def invert(images: torch.Tensor) -> torch.Tensor:
    """``ImageOps.invert``: ``255 - x``."""
    images = _batch(images)
    return images.bitwise_not()


def posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``ImageOps.posterize``: keep the ``bits`` (B,) most significant bits (0-8) of every channel value."""
    images = _batch(images)
    bits = _per_image(bits, images, torch.int32).clamp(0, 8)
    mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8).view(-1, 1, 1, 1)
    return images & mask


def solarize(images: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``ImageOps.solarize``: invert every value ``>= threshold``; thresholds (B,) in [0, 256] (256 = no change)."""
    images = _batch(images)
    below = _per_image(thresholds, images, torch.int16).clamp(0, 256).sub_(1).view(-1, 1, 1, 1)
    out = torch.empty_like(images)
    for block in _blocks(images):
        x = images[block]
        # (t - 1 - x) >> 8 is -1 (0xFF) where x >= t and 0 below: an xor mask without a (slow) bool compare.
        mask = torch.sub(below[block], x).bitwise_right_shift_(8)
        torch.bitwise_xor(x, mask.to(torch.uint8), out=out[block])
    return out


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """``ImageOps.autocontrast`` (cutoff 0): stretch each channel so its minimum maps to 0 and maximum to 255.

    The table is Pillow's: ``int(v * scale + offset)`` in float64 with ``scale = 255 / (hi - lo)`` and
    ``offset = -lo * scale`` (which maps ``hi`` to 254 for some ranges; kept for parity); a constant channel
    is left unchanged.
    """
    images = _batch(images)
    b, c = images.shape[:2]
    flat = images.reshape(b, c, -1)
    lo = flat.amin(dim=2).to(torch.float64)
    hi = flat.amax(dim=2).to(torch.float64)
    # A true division: ``255.0 / tensor`` would be computed as ``255.0 * (1 / tensor)`` and round differently.
    scale = torch.full_like(lo, 255.0).div_((hi - lo).clamp_min(1.0))
    offset = -lo * scale
    values = _arange(0, 256, 1, images.device, torch.float64)
    lut = (values * scale.unsqueeze(2) + offset.unsqueeze(2)).trunc_().clamp_(0.0, 255.0)
    lut = torch.where((hi > lo).unsqueeze(2), lut, values)
    return apply_lut(images, lut.to(torch.uint8))


def _equalize_lut(hist: torch.Tensor, pixels: int) -> torch.Tensor:
    """Pillow's equalize table (rows, 256) uint8 from per-row histograms (rows, 256) of ``pixels`` pixels each.

    With ``before[i]`` the pixels below value ``i`` (non-decreasing), the pixels outside the last non-empty bin
    are ``before[last] = max(before[i] for non-empty i)``, so ``step = before[last] // 255``, and a row with
    a single non-empty bin has ``before[last] = 0``: ``step == 0`` covers both of Pillow's identity cases.
    The division ``(before + step // 2) // step`` runs in float: all values are integers below 2**24 (float32)
    or 2**53 (float64), and a quotient that is not an integer lies at least ``1 / pixels`` from one, far above
    the rounding error, so ``floor`` of the float quotient is the integer one (and much faster than ``//``).
    """
    dtype = torch.float32 if pixels < (1 << 22) else torch.float64
    counts = hist.to(dtype)
    before = counts.cumsum(dim=1).sub_(counts)
    # counts clamped to 1 is the 0/1 mask of non-empty bins (float arithmetic: cheaper than a bool mask)
    step = (before * counts.clamp_(max=1.0)).amax(dim=1, keepdim=True).div_(255.0).floor_()
    identity = step == 0
    # identity rows: ``before`` zeroed, divided by 1, plus the bin values (exact integer arithmetic); other
    # rows add 0 * bins. Cheaper than a ``where`` broadcasting a (rows, 1) mask.
    lut = before.mul_((~identity).to(dtype)).add_(torch.floor(step * 0.5)).div_(step.clamp(min=1.0)).floor_()
    lut.addcmul_(identity.to(dtype), _arange(0, 256, 1, hist.device, dtype)).clamp_(max=255.0)
    return lut.to(torch.int16).to(torch.uint8)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """``ImageOps.equalize``: per-channel histogram equalisation with Pillow's integer table.

    For each channel with histogram ``h``: ``step = (sum(h) - h[last non-empty bin]) // 255``; if fewer than
    two bins are used or ``step`` is 0 the channel is unchanged, otherwise value ``i`` maps to
    ``(step // 2 + sum(h[:i])) // step`` (clipped to 255).
    """
    images = _batch(images)
    c, h, w = images.shape[1:]
    out = torch.empty_like(images)
    # Two passes only (histogram, lookup), each cheaper per call on bigger blocks: 4x the usual block size.
    for block in _blocks(images, 4):
        rows = (block.stop - block.start) * c
        # one int32 index (channel row * 256 + value) serves the histogram and the table lookup
        index = images[block].reshape(rows, -1).to(torch.int32)
        index += _arange(0, rows * 256, 256, images.device, torch.int32).unsqueeze(1)
        index = index.view(-1)
        lut = _equalize_lut(torch.bincount(index, minlength=rows * 256).view(rows, 256), h * w)
        torch.index_select(lut.view(-1), 0, index, out=out[block].view(-1))
    return out


def _exact_sum(values: torch.Tensor) -> torch.Tensor:
    """Per-image sums (n,) float64 of float32 integers in [0, 255] (n, 1, H, W), exact whatever the order.

    A row of fewer than 65793 such values sums below 2**24, so float32 (ten times faster than float64 on CPU)
    adds it exactly; the row sums then add up exactly in float64 (all below 2**53).
    """
    n, _, h, w = values.shape
    if 255 * w < (1 << 24):
        return values.view(n, h, w).sum(dim=2).sum(dim=1, dtype=torch.float64)
    return values.sum(dim=(1, 2, 3), dtype=torch.float64)


def brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Brightness(img).enhance(factor)``: blend with black; factors (B,), 1 = unchanged."""
    images = _batch(images)
    factors = _per_image(factors, images, torch.float32).view(-1, 1, 1, 1)
    out = torch.empty_like(images)
    for block in _blocks(images):
        _blend_into(out[block], images[block].to(torch.float32), None, factors[block])
    return out


def contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Contrast(img).enhance(factor)``: blend with the image's mean grey level.

    The mean is Pillow's: ``int(mean(convert("L")) + 0.5)``, computed exactly in integers.
    """
    images = _batch(images)
    factors = _per_image(factors, images, torch.float32).view(-1, 1, 1, 1)
    c, h, w = images.shape[1:]
    if c != 1:
        _check_rgb(images)
    n = h * w
    out = torch.empty_like(images)
    for block in _blocks(images):
        xf = images[block].to(torch.float32)
        luma = xf if c == 1 else _luma(xf)
        luma_sum = _exact_sum(luma).to(torch.int64)
        mean = ((2 * luma_sum + n) // (2 * n)).to(torch.float32).view(-1, 1, 1, 1)  # int(sum / n + 0.5)
        _blend_into(out[block], xf, mean, factors[block])
    return out


def color(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Color(img).enhance(factor)``: blend with the greyscale image; factors (B,).

    Single-channel images are returned unchanged (their greyscale is themselves).
    """
    images = _batch(images)
    factors = _per_image(factors, images, torch.float32).view(-1, 1, 1, 1)
    if images.shape[1] == 1:
        return images.clone()
    _check_rgb(images)
    out = torch.empty_like(images)
    for block in _blocks(images):
        xf = images[block].to(torch.float32)
        _blend_into(out[block], xf, _luma(xf), factors[block])
    return out


def sharpness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``ImageEnhance.Sharpness(img).enhance(factor)``: blend with Pillow's ``SMOOTH`` filter of the image.

    ``SMOOTH`` is the 3x3 kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` rounded to nearest; Pillow leaves
    the one-pixel border unfiltered, so the border never changes. The integer neighbourhood sum ``S`` (at most
    13 * 255) is exact in int16, and as 13 is odd ``S / 13`` is never within 0.038 of a tie, so float32
    rounding of ``S * (1 / 13)`` cannot change ``round(S / 13)``.
    """
    images = _batch(images)
    factors = _per_image(factors, images, torch.float32).view(-1, 1, 1, 1)
    h, w = images.shape[2:]
    if h < 3 or w < 3:
        return images.clone()
    out = torch.empty_like(images)
    out[..., 0, :] = images[..., 0, :]
    out[..., -1, :] = images[..., -1, :]
    out[..., :, 0] = images[..., :, 0]
    out[..., :, -1] = images[..., :, -1]
    for block in _blocks(images):
        x = images[block].to(torch.int16)  # neighbourhood sums below 13 * 255 fit int16: half the bytes of float
        rows = x[..., :, :-2] + x[..., :, 1:-1]
        rows += x[..., :, 2:]
        smooth = rows[..., :-2, :] + rows[..., 1:-1, :]
        smooth += rows[..., 2:, :]
        centre = x[..., 1:-1, 1:-1]
        smooth = smooth.add_(centre, alpha=4).to(torch.float32).mul_(1.0 / 13.0).round_()
        _blend_into(out[block][..., 1:-1, 1:-1], centre.to(torch.float32), smooth, factors[block])
    return out


# ------------------------------------------------------------------------------------------------ geometric ops
def _fix(values: torch.Tensor) -> torch.Tensor:
    """float64 -> Pillow's 16.16 fixed point: ``floor(v * 65536 + 0.5)`` as int64."""
    return torch.floor(values * 65536.0 + 0.5).to(torch.int64)


def _fill_value(fill: int) -> int:
    """``fill`` as a Python int, checked to be an integer in [0, 255]."""
    try:
        value = None if isinstance(fill, bool) else operator.index(fill)
    except TypeError:
        value = None
    if value is None or not 0 <= value <= 255:
        raise ValueError(f"fill must be an int in [0, 255], got {fill!r}")
    return value


def _pad_rows(x: torch.Tensor, fill: int, pad: int = 1) -> torch.Tensor:
    """``x`` (n, C, H, W) with ``pad`` rows of ``fill`` added above and below: (n, C, H + 2 pad, W)."""
    n, c, h, w = x.shape
    padded = x.new_empty(n, c, h + 2 * pad, w)
    padded[:, :, :pad] = fill
    padded[:, :, pad + h :] = fill
    padded[:, :, pad : pad + h] = x
    return padded


def _max_shift(shifts: torch.Tensor, limit: int) -> int:
    """Padding for shifts already clamped to [-limit, limit]: their largest magnitude on CPU (known on the host),
    ``limit`` on other devices (no device-to-host sync)."""
    if shifts.device.type != "cpu" or shifts.numel() == 0:
        return limit
    return int(shifts.abs().max())


def _shift_rows(images: torch.Tensor, shifts: torch.Tensor, fill: int) -> torch.Tensor:
    """``out[b, c, y, x] = images[b, c, y, x + shifts[b, y]]``, ``fill`` where ``x + shift`` leaves [0, W).

    Every output row is one contiguous window of a fill-padded copy of its input row, so the whole op is a
    single ``index_select`` of rows from an overlapping strided view (a row copy each, no per-pixel index).
    """
    c, h, w = images.shape[1:]
    if images.numel() == 0:
        return images.clone()
    shifts = shifts.clamp(-w, w)
    pad = _max_shift(shifts, w)
    length = w + 2 * pad
    out = torch.empty_like(images)
    for block in _blocks(images):
        x = images[block]
        n = x.shape[0]
        padded = x.new_empty(n, c, h, length)
        padded[..., :pad] = fill
        padded[..., pad + w :] = fill
        padded[..., pad : pad + w] = x
        flat = padded.view(-1)
        windows = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
        rows = _arange(0, n * c * h * length, length, images.device, torch.int64).view(n, c, h)
        starts = rows + (shifts[block].view(n, 1, h) + pad)
        torch.index_select(windows, 0, starts.view(-1), out=out[block].view(-1, w))
    return out


def translate_x(images: torch.Tensor, pixels: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """Pillow ``transform(AFFINE, (1, 0, dx, 0, 1, 0), NEAREST)``: output ``x`` reads input ``x + dx``.

    Args:
        images: uint8 (B, C, H, W).
        pixels: (B,) float shifts ``dx``; Pillow samples ``floor(x + 0.5 + dx)``, an integer shift.
        fill: value of uncovered pixels.
    """
    images = _batch(images)
    fill = _fill_value(fill)
    b, _, h, w = images.shape
    shift = torch.floor(_per_image(pixels, images, torch.float64) + 0.5).clamp_(-w, w).to(torch.int64)
    return _shift_rows(images, shift.view(b, 1).expand(b, h), fill)


def translate_y(images: torch.Tensor, pixels: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """Pillow ``transform(AFFINE, (1, 0, 0, 0, 1, dy), NEAREST)``: output ``y`` reads input ``y + dy``.

    A row permutation: one ``index_select`` of whole rows from a copy padded by one ``fill`` row.
    """
    images = _batch(images)
    fill = _fill_value(fill)
    b, c, h, w = images.shape
    shift = torch.floor(_per_image(pixels, images, torch.float64) + 0.5).clamp_(-h - 1, h + 1).to(torch.int64)
    source = (_arange(0, h, 1, images.device, torch.int64) + shift.view(b, 1) + 1).clamp_(0, h + 1)  # padded row
    out = torch.empty_like(images)
    for block in _blocks(images):
        x = images[block]
        n = x.shape[0]
        plane_rows = _arange(0, n * c * (h + 2), h + 2, images.device, torch.int64).view(n, c, 1)
        rows = plane_rows + source[block].view(n, 1, h)
        torch.index_select(_pad_rows(x, fill).view(-1, w), 0, rows.view(-1), out=out[block].view(-1, w))
    return out


def _shear_fixed(factors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's 16.16 fixed-point ``(FIX(0.5 + s * 0.5), FIX(s))`` of shear factors (B,): the source coordinate
    of row/column ``i``, position ``j`` is ``j + ((base + i * step) >> 16)``."""
    s = factors.to(torch.float64)
    return _fix(0.5 + s * 0.5), _fix(s)


def _shear_shifts(factors: torch.Tensor, length: int, limit: int) -> torch.Tensor:
    """Integer shift of each row (shear_x) or column (shear_y), (B, length), in Pillow's 16.16 fixed point.

    Pillow's source coordinate is ``(FIX(0.5 + s * 0.5) + i * FIX(s) + j * 65536) >> 16`` for row/column ``i``
    and position ``j`` along it, i.e. position ``j`` plus a shift that depends on ``i`` only.
    """
    base, step = _shear_fixed(factors)
    i = _arange(0, length, 1, factors.device, torch.int64)
    shift = (base.unsqueeze(1) + i * step.unsqueeze(1)) >> 16
    return shift.clamp_(-limit - 1, limit + 1)


def shear_x(images: torch.Tensor, factors: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """Pillow ``transform(AFFINE, (1, s, 0, 0, 1, 0), NEAREST)``: output ``(x, y)`` reads ``(x + s*y, y)``."""
    images = _batch(images)
    fill = _fill_value(fill)
    h, w = images.shape[2:]
    return _shift_rows(images, _shear_shifts(_per_image(factors, images, torch.float64), h, w), fill)


def shear_y(images: torch.Tensor, factors: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """Pillow ``transform(AFFINE, (1, 0, 0, s, 1, 0), NEAREST)``: output ``(x, y)`` reads ``(x, y + s*x)``.

    Column ``x`` moves by ``k[x]`` rows, so output ``(x, y)`` is element ``x + (k[x] + P) * W`` of the
    ``(2P + 1) * W`` values that start at row ``y`` of a copy padded by ``P`` fill rows: a gather along the last
    dimension of an overlapping strided view, with one index row per image shared by all rows and channels.
    """
    images = _batch(images)
    fill = _fill_value(fill)
    b, c, h, w = images.shape
    shifts = _shear_shifts(_per_image(factors, images, torch.float64), w, h).clamp_(-h, h)
    pad = _max_shift(shifts, h)
    span = (2 * pad + 1) * w
    index = (shifts + pad).mul_(w).add_(_arange(0, w, 1, images.device, torch.int64)).view(b, 1, 1, w)
    out = torch.empty_like(images)
    for block in _blocks(images):
        x = images[block]
        n = x.shape[0]
        padded = _pad_rows(x, fill, pad)
        plane = (h + 2 * pad) * w
        rows = padded.as_strided((n, c, h, span), (c * plane, plane, w, 1))
        torch.gather(rows, 3, index[block].expand(n, c, h, w), out=out[block])
    return out


def _rotate_fixed(degrees: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pillow's fixed-point rotation of (B,) float64 degrees: ``base`` (B, 2) and ``step`` (B, 2, 2) int64.

    The source of output pixel ``(x, y)``, in a copy padded by a one-pixel border, is
    ``(base[k] + x * step[k, 0] + y * step[k, 1]) >> 16`` for ``k`` = 0 (x) and 1 (y). The matrix is built as
    Pillow builds it (angle taken modulo 360, cos/sin rounded to 15 decimals).
    """
    angle = -(torch.remainder(degrees, 360.0) * (math.pi / 180.0))
    cos = torch.round(torch.cos(angle), decimals=15)
    sin = torch.round(torch.sin(angle), decimals=15)
    # [[a, b], [d, e]] per image; Pillow's offsets c, f = (a * -cx + b * -cy) + cx, in this order of roundings
    matrix = torch.stack([torch.stack([cos, sin], dim=1), torch.stack([-sin, cos], dim=1)], dim=1)
    centre = torch.tensor([w / 2.0, h / 2.0], device=degrees.device, dtype=torch.float64)
    offset = (matrix[..., 0] * -centre[0] + matrix[..., 1] * -centre[1]) + centre
    step = _fix(matrix)  # per output column (..., 0) and per output row (..., 1)
    # + 65536 = one pixel after the shift: the index into a copy padded by a one-pixel fill border
    base = _fix(offset + matrix[..., 0] * 0.5 + matrix[..., 1] * 0.5) + _FIX_ONE  # (B, 2): x, y
    return base, step


def rotate(images: torch.Tensor, degrees: torch.Tensor, fill: int = 128) -> torch.Tensor:
    """``Image.rotate(deg, NEAREST, fillcolor=fill)``: counter-clockwise about the image centre ``(W/2, H/2)``.

    The matrix is built as Pillow builds it (angle taken modulo 360, cos/sin rounded to 15 decimals) and
    sampled with Pillow's 16.16 fixed-point nearest-neighbour loop: output ``(x, y)`` reads input
    ``(FIX(c') + y*FIX(b) + x*FIX(a)) >> 16`` (and likewise for the row), ``c'`` the offset at pixel centres.
    """
    images = _batch(images)
    fill = _fill_value(fill)
    c, h, w = images.shape[1:]
    device = images.device
    base, step = _rotate_fixed(_per_image(degrees, images, torch.float64), h, w)
    rows = base.unsqueeze(2) + step[..., 1:] * _arange(0, h, 1, device, torch.int64)  # (B, 2, H)
    cols = step[..., :1] * _arange(0, w, 1, device, torch.int64)  # (B, 2, W)
    # int32 halves the per-pixel memory traffic; the sums stay below 2**31 for images under 16k px a side
    small = torch.int32 if max(h, w) < 16384 else torch.int64
    rows, cols = rows.to(small).unsqueeze(3), cols.to(small).unsqueeze(2)
    high = torch.tensor([w + 1, h + 1], device=device, dtype=small).view(1, 2, 1, 1)
    out = torch.empty_like(images)
    for block in _blocks(images):
        x = images[block]
        n = x.shape[0]
        source = torch.add(rows[block], cols[block]).bitwise_right_shift_(16).clamp_(min=0)  # (n, 2, H, W)
        torch.minimum(source, high, out=source)  # (clamp with tensor bounds is several times slower)
        index = source[:, 1].mul_(w + 2).add_(source[:, 0]).view(n, 1, h * w).to(torch.int64)
        padded = F.pad(x, (1, 1, 1, 1), value=float(fill)).view(n, c, -1)
        torch.gather(padded, 2, index.expand(n, c, h * w), out=out[block].view(n, c, h * w))
    return out


def _cutout_box(
    sizes: torch.Tensor, centers: torch.Tensor, h: int, w: int, inside: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last pixel (y, x) of each cutout rectangle, (B, 2) int64 each (before clipping)."""
    if centers.dtype.is_floating_point:
        centers = centers.floor()
    centers = centers.to(torch.int64)
    sizes = sizes.clamp(min=0)
    start = centers - sizes // 2
    if inside:
        limit = torch.tensor([h, w], device=sizes.device) - sizes
        start = torch.minimum(start, limit).clamp_(min=0)
    return start, start + sizes


def cutout(
    images: torch.Tensor,
    sizes: torch.Tensor,
    centers: torch.Tensor | None = None,
    fill: int = 128,
    inside: bool = False,
) -> torch.Tensor:
    """Fill a per-image rectangle with ``fill``.

    The rectangle of ``sizes[i] = (height, width)`` pixels spans rows ``[cy - height // 2, cy - height // 2 +
    height)`` (columns likewise) around the centre pixel ``(cy, cx)``, as AutoAugment's cutout does.

    Args:
        images: uint8 (B, C, H, W).
        sizes: int (B, 2) rectangle (height, width) in pixels; 0 = no change.
        centers: (B, 2) centre pixels (y, x), e.g. drawn uniformly from [0, H) x [0, W); default: the image
            centre ``(H // 2, W // 2)``. Float values are floored.
        fill: value written into the rectangle.
        inside: False clips the rectangle at the image border (AutoAugment); True first moves it inside the
            image so its whole area is covered (used by the geometric space, where size measures damage).
    """
    images = _batch(images)
    fill = _fill_value(fill)
    b, _, h, w = images.shape
    device = images.device
    sizes = torch.as_tensor(sizes).to(device=device, dtype=torch.int64)
    if sizes.shape != (b, 2):
        raise ValueError(f"sizes must be (B, 2) = ({b}, 2) (height, width), got {tuple(sizes.shape)}")
    if centers is None:
        centers = torch.tensor([[h // 2, w // 2]], device=device).expand(b, 2)
    centers = torch.as_tensor(centers).to(device)
    if centers.shape != (b, 2):
        raise ValueError(f"centers must be (B, 2) = ({b}, 2) pixel (y, x), got {tuple(centers.shape)}")
    start, stop = _cutout_box(sizes, centers, h, w, inside)
    ys = _arange(0, h, 1, device, torch.int64).view(1, h)
    xs = _arange(0, w, 1, device, torch.int64).view(1, w)
    rows = ((ys >= start[:, :1]) & (ys < stop[:, :1])).to(torch.uint8)  # (B, H)
    cols = ((xs >= start[:, 1:]) & (xs < stop[:, 1:])).to(torch.uint8)  # (B, W)
    # uint8 arithmetic with a 0/1 mask is far cheaper than masked_fill with a broadcast bool mask.
    inside_mask = (rows.unsqueeze(2) * cols.unsqueeze(1)).unsqueeze(1)  # (B, 1, H, W)
    keep = 1 - inside_mask
    filled = inside_mask * fill
    out = torch.empty_like(images)
    for block in _blocks(images):
        torch.mul(images[block], keep[block], out=out[block]).add_(filled[block])
    return out
