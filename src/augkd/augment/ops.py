"""The op tables and :func:`apply_op`: one augmentation op on a batch, with a level per image.

An op is a row of a table keyed by name: the batched function of :mod:`augkd.augment.functional` and the
function that turns levels into its argument, side by side (adding an op is adding a row). Two level scales
exist, as two tables:

``OPS`` (space ``"autoaugment"``)
    AutoAugment's levels: 0-10 map linearly onto each op's range, as in the reference implementations
    (AutoAugment's ``augmentation_transforms.py``, timm's ``auto_augment.py``). RandAugment levels above 10
    (up to 30) extrapolate the same lines; an argument is clamped only where the op stops making sense.

``GEO_OPS`` (space ``"geometric"``)
    The paper's own space (§4.1): shear, translate and cutout on 10 levels where level 0 changes nothing and
    level 10 destroys the whole image. Each op hides ``10 * L`` percent of the image at level ``L``: translate
    moves the image by ``L/10`` of its side, cutout blanks a rectangle of area ``L/10`` of the image (kept
    inside it), shear slants the rows (columns) so that ``L/10`` of the pixels leave the field. Levels are
    clamped to [-10, 10].

Level → argument (``L`` the level, ``t = |L| / 10``, ``W x H`` the image; signed ops take the sign of ``L``,
the others use ``|L|``):

============ ====== ======================================================== =====================================
op           signed ``"autoaugment"`` argument                               ``"geometric"`` argument
============ ====== ======================================================== =====================================
identity     no     none
invert       no     none (level ignored)
autocontrast no     none (level ignored)
equalize     no     none (level ignored)
rotate       yes    ``3 * L`` degrees, counter-clockwise (30 at level 10)
solarize     no     threshold ``256 - floor(25.6 * |L|)``, clamped to [0, 256]
posterize    no     bits kept ``4 - floor(0.4 * |L|)``, clamped to [0, 8]
color        yes    factor ``max(0, 1 + 0.09 * L)`` (0.1-1.9 for -10..10)
contrast     yes    as color
brightness   yes    as color
sharpness    yes    as color
shear_x      yes    factor ``0.03 * L`` (0.3 at level 10)                    ``u * W / H``, see below
shear_y      yes    factor ``0.03 * L``                                      ``u * H / W``
translate_x  yes    ``(150/331) * W * L / 10`` pixels (0.45 W at level 10)   ``W * L / 10`` pixels
translate_y  yes    ``(150/331) * H * L / 10`` pixels                        ``H * L / 10`` pixels
cutout       no     square, side ``round(0.625 * min(H, W) * t)``, clipped   rectangle ``round(sqrt(t) * (H, W))``
============ ====== ======================================================== =====================================

The geometric shear: a shear of factor ``s`` about the top-left corner moves row ``y`` by ``s * y`` pixels, so
with ``u = s * H / W`` (the bottom row's shift in image widths) it hides ``u / 2`` of the image for ``u <= 1``
and ``1 - 1 / (2u)`` beyond. Solving for a hidden fraction of ``t`` gives ``u = 2t`` (``t <= 1/2``) and
``u = 1 / (2 (1 - t))`` above, capped at ``u = 2H`` where even the top row (centre ``y = 0.5``) moves a whole
width: level 10 leaves nothing of the image.

Conventions, and where they differ from the references:

- translate uses AutoAugment's ImageNet range, 150 px of 331 (timm's ``translate_pct`` 0.45; TensorFlow
  EfficientNet's 100 px of 224), relative to the image side so that it works at any size. AutoAugment's
  CIFAR code used 10 px of 32 (0.3125) instead.
- cutout uses AutoAugment's CIFAR range, a square of 20 px of 32 at level 10, relative to the shorter side;
  the centre is an input (``centers``, drawn by the policy), default the image centre.
- posterize and solarize follow AutoAugment's CIFAR code and timm's ``*Increasing`` ops: level 0 keeps 4 bits
  (posterize is not the identity at level 0), level 10 keeps none; solarize is the identity at 0.
- the enhance ops follow timm/RandAugment (``1 +- 0.9 * L / 10`` with a random sign) rather than AutoAugment's
  unsigned ``0.1 + 1.8 * L / 10``.
- rotate, shear and translate take float arguments (the references round some to integers); nearest
  neighbour sampling makes translate an integer shift ``floor(dx + 0.5)`` anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from augkd.augment import functional as F

__all__ = [
    "CUTOUT_FRACTION",
    "GEO_MAX_LEVEL",
    "GEO_OPS",
    "OPS",
    "SPACES",
    "TRANSLATE_FRACTION",
    "OpSpec",
    "apply_op",
    "level_to_arg",
]

#: Translate at AutoAugment level 10, as a fraction of the image side (AutoAugment ImageNet: 150 px of 331).
TRANSLATE_FRACTION = 150.0 / 331.0
#: Cutout square side at AutoAugment level 10, as a fraction of the shorter side (AutoAugment CIFAR: 20 of 32).
CUTOUT_FRACTION = 0.625
#: Highest level of the geometric space; larger magnitudes are clamped to it.
GEO_MAX_LEVEL = 10.0

OpFn = Callable[[torch.Tensor, "torch.Tensor | None", int, "torch.Tensor | None"], torch.Tensor]
LevelFn = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]


@dataclass(frozen=True)
class OpSpec:
    """One row of an op table.

    Attributes:
        op: ``op(images, arg, fill, centers) -> images``, a batched function of :mod:`~augkd.augment.functional`.
        level_to_arg: ``level_to_arg(levels, (H, W)) -> arg``; receives signed levels for signed ops and
            ``|level|`` for the others, already clamped to ``max_level``; ``None`` for ops without an argument.
        signed: whether a negative level means the opposite direction; unsigned ops use ``|level|``.
        max_level: magnitudes above it are clamped to it (``None``: extrapolate, clamping the argument).
        mapping: the level → argument rule in words, for tables and docs.
    """

    op: OpFn
    level_to_arg: LevelFn | None
    signed: bool
    max_level: float | None
    mapping: str


# --------------------------------------------------------------------------------------- level -> argument
# Each takes float32 (B,) levels (signed for signed ops, |L| for the others) and the image size (H, W).
def _rotate_degrees(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return m * 3.0


def _solarize_threshold(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    # m * 256 is exact, so the division rounds to the exact integer where there is one.
    return (256 - torch.floor(m * 256.0 / 10.0)).clamp_(0, 256).to(torch.int64)


def _posterize_bits(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return (4 - torch.floor(m * 4.0 / 10.0)).clamp_(0, 8).to(torch.int64)


def _enhance_factor(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return (1.0 + m * (0.9 / 10.0)).clamp_(min=0.0)


def _shear_factor(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return m * (0.3 / 10.0)


def _translate_x_pixels(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return m * (TRANSLATE_FRACTION / 10.0 * hw[1])


def _translate_y_pixels(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return m * (TRANSLATE_FRACTION / 10.0 * hw[0])


def _cutout_square(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    side = torch.floor(m * (CUTOUT_FRACTION / 10.0 * min(hw)) + 0.5).to(torch.int64)
    return torch.stack([side, side], dim=1)


def _geo_translate_x_pixels(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return m * (hw[1] / GEO_MAX_LEVEL)


def _geo_translate_y_pixels(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return m * (hw[0] / GEO_MAX_LEVEL)


def _geo_hidden_shift(m: torch.Tensor, length: int) -> torch.Tensor:
    """``u(t)``: the shift of the last row in image widths that hides a fraction ``t = m / 10`` of the image."""
    t = m / GEO_MAX_LEVEL
    far = torch.full_like(t, 0.5).div_(torch.clamp(1.0 - t, min=1.0 / (4.0 * length)))  # capped at u = 2 * length
    return torch.where(t <= 0.5, 2.0 * t, far)


def _geo_shear_x_factor(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    h, w = hw
    return torch.sign(m) * _geo_hidden_shift(m.abs(), h) * (w / h)


def _geo_shear_y_factor(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    h, w = hw
    return torch.sign(m) * _geo_hidden_shift(m.abs(), w) * (h / w)


def _geo_cutout_rect(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    scale = torch.sqrt(m / GEO_MAX_LEVEL)
    sides = torch.tensor(hw, device=m.device, dtype=torch.float32)
    return torch.floor(scale.unsqueeze(1) * sides + 0.5).to(torch.int64)


# --------------------------------------------------------------------------------------- op adapters
# Uniform signature op(images, arg, fill, centers); the functional layer keeps its own natural signatures.
def _identity(images: torch.Tensor, arg: torch.Tensor | None, fill: int, centers: torch.Tensor | None) -> torch.Tensor:
    return images.clone()


def _no_arg(fn: Callable[[torch.Tensor], torch.Tensor]) -> OpFn:
    def op(images: torch.Tensor, arg: torch.Tensor | None, fill: int, centers: torch.Tensor | None) -> torch.Tensor:
        return fn(images)

    return op


def _with_arg(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> OpFn:
    def op(images: torch.Tensor, arg: torch.Tensor | None, fill: int, centers: torch.Tensor | None) -> torch.Tensor:
        return fn(images, arg)

    return op


def _with_fill(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> OpFn:
    def op(images: torch.Tensor, arg: torch.Tensor | None, fill: int, centers: torch.Tensor | None) -> torch.Tensor:
        return fn(images, arg, fill)

    return op


def _cutout(inside: bool) -> OpFn:
    def op(images: torch.Tensor, arg: torch.Tensor | None, fill: int, centers: torch.Tensor | None) -> torch.Tensor:
        return F.cutout(images, arg, centers, fill, inside=inside)

    return op


_ENHANCE_RULE = "factor max(0, 1 + 0.09 L)"

#: AutoAugment's op table (space ``"autoaugment"``): name -> OpSpec.
OPS: dict[str, OpSpec] = {
    "identity": OpSpec(_identity, None, False, None, "no change"),
    "invert": OpSpec(_no_arg(F.invert), None, False, None, "255 - x (level ignored)"),
    "autocontrast": OpSpec(_no_arg(F.autocontrast), None, False, None, "per-channel min/max stretch (level ignored)"),
    "equalize": OpSpec(_no_arg(F.equalize), None, False, None, "per-channel histogram equalisation (level ignored)"),
    "rotate": OpSpec(_with_fill(F.rotate), _rotate_degrees, True, None, "3 L degrees counter-clockwise"),
    "solarize": OpSpec(_with_arg(F.solarize), _solarize_threshold, False, None, "threshold 256 - floor(25.6 |L|)"),
    "posterize": OpSpec(_with_arg(F.posterize), _posterize_bits, False, None, "bits kept 4 - floor(0.4 |L|)"),
    "color": OpSpec(_with_arg(F.color), _enhance_factor, True, None, _ENHANCE_RULE),
    "contrast": OpSpec(_with_arg(F.contrast), _enhance_factor, True, None, _ENHANCE_RULE),
    "brightness": OpSpec(_with_arg(F.brightness), _enhance_factor, True, None, _ENHANCE_RULE),
    "sharpness": OpSpec(_with_arg(F.sharpness), _enhance_factor, True, None, _ENHANCE_RULE),
    "shear_x": OpSpec(_with_fill(F.shear_x), _shear_factor, True, None, "factor 0.03 L"),
    "shear_y": OpSpec(_with_fill(F.shear_y), _shear_factor, True, None, "factor 0.03 L"),
    "translate_x": OpSpec(_with_fill(F.translate_x), _translate_x_pixels, True, None, "(150/331) W L / 10 pixels"),
    "translate_y": OpSpec(_with_fill(F.translate_y), _translate_y_pixels, True, None, "(150/331) H L / 10 pixels"),
    "cutout": OpSpec(_cutout(False), _cutout_square, False, None, "square side round(0.0625 min(H, W) L)"),
}

#: The paper's geometric space (space ``"geometric"``, §4.1): level 10 destroys the image.
GEO_OPS: dict[str, OpSpec] = {
    "shear_x": OpSpec(_with_fill(F.shear_x), _geo_shear_x_factor, True, GEO_MAX_LEVEL, "hides L/10 of the image"),
    "shear_y": OpSpec(_with_fill(F.shear_y), _geo_shear_y_factor, True, GEO_MAX_LEVEL, "hides L/10 of the image"),
    "translate_x": OpSpec(_with_fill(F.translate_x), _geo_translate_x_pixels, True, GEO_MAX_LEVEL, "W L / 10 pixels"),
    "translate_y": OpSpec(_with_fill(F.translate_y), _geo_translate_y_pixels, True, GEO_MAX_LEVEL, "H L / 10 pixels"),
    "cutout": OpSpec(_cutout(True), _geo_cutout_rect, False, GEO_MAX_LEVEL, "rectangle round(sqrt(L/10) (H, W))"),
}

#: Level scales by name. ``"identity"`` is accepted in every space.
SPACES: dict[str, dict[str, OpSpec]] = {"autoaugment": OPS, "geometric": GEO_OPS}


def _lookup(name: str, space: str) -> OpSpec:
    if space not in SPACES:
        raise ValueError(f"unknown augmentation space {space!r}; expected one of {sorted(SPACES)}")
    table = SPACES[space]
    if name in table:
        return table[name]
    if name == "identity":
        return OPS["identity"]
    raise ValueError(f"unknown augmentation op {name!r} in the {space} space; expected one of {sorted(table)}")


def _levels_tensor(levels: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    levels = torch.as_tensor(levels, dtype=torch.float32).to(device)
    if levels.ndim == 0:
        levels = levels.expand(batch)
    if levels.shape != (batch,):
        raise ValueError(f"levels must have shape ({batch},), one per image, got {tuple(levels.shape)}")
    return levels


def _arg(spec: OpSpec, levels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor | None:
    if spec.level_to_arg is None:
        return None
    if not spec.signed:
        levels = levels.abs()
    if spec.max_level is not None:
        levels = levels.clamp(-spec.max_level, spec.max_level)
    return spec.level_to_arg(levels, hw)


def level_to_arg(
    name: str,
    levels: torch.Tensor | float,
    image_size: int | tuple[int, int],
    space: str = "autoaugment",
) -> torch.Tensor | None:
    """The argument each image's op receives for its level (the table in this module's docstring).

    Args:
        name: op name, a key of the space's table (``OPS`` or ``GEO_OPS``).
        levels: float (B,) levels, signed for signed ops (a scalar applies to a batch of one).
        image_size: H (square) or (H, W).
        space: ``"autoaugment"`` or ``"geometric"``.

    Returns:
        (B,) degrees, factor, pixels, bits (int64) or threshold (int64); (B, 2) int64 (height, width) for
        cutout; ``None`` for ops without an argument. Enhance ops return the factor (``max(0, 1 + 0.09 L)``).
    """
    spec = _lookup(name, space)
    hw = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    levels = torch.as_tensor(levels, dtype=torch.float32)
    return _arg(spec, levels.reshape(-1) if levels.ndim == 0 else levels, hw)


def apply_op(
    images: torch.Tensor,
    name: str,
    levels: torch.Tensor | float,
    fill: int = 128,
    *,
    space: str = "autoaugment",
    centers: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply op ``name`` to every image of a batch, each at its own level.

    Args:
        images: uint8 (B, C, H, W) on any device; C = 3 (RGB) or 1 for the colour ops that need a greyscale.
        name: op name (``sorted(OPS)`` or, in the geometric space, ``sorted(GEO_OPS)``; ``"identity"`` always).
        levels: float (B,) levels, one per image; negative = the opposite direction for signed ops.
        fill: grey value (0-255) of pixels uncovered by geometric ops and of the cutout rectangle.
        space: level scale, ``"autoaugment"`` (:data:`OPS`) or ``"geometric"`` (:data:`GEO_OPS`, paper §4.1).
        centers: cutout centre pixels (B, 2) as (y, x); default the image centre. Ignored by other ops.

    Returns:
        A new uint8 tensor of the same shape and device.

    Raises:
        ValueError: unknown op or space, images not uint8 (B, C, H, W), wrong number of levels, bad fill.

    Example:
        >>> x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> apply_op(x, "rotate", torch.tensor([0.0, 5.0, -5.0, 30.0])).shape
        torch.Size([4, 3, 32, 32])
    """
    spec = _lookup(name, space)
    images = F._batch(images)
    fill = F._fill_value(fill)
    b, _, h, w = images.shape
    levels = _levels_tensor(levels, b, images.device)
    if b == 0:
        return images.clone()
    return spec.op(images, _arg(spec, levels, (h, w)), fill, centers)
