"""The op tables and apply_op: level -> argument mapping, Pillow parity through the tables, the geometric space."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from PIL import ImageEnhance as Enhance

from augkd.augment.ops import GEO_OPS, OPS, SPACES, apply_op, level_to_arg

FILL = 128
LEVELS = [0.0, 1.0, 2.5, 5.0, 9.0, 10.0, -1.0, -5.0, -9.0, -10.0, 13.0, 21.7, 30.0, -30.0]
SIGNED = {"rotate", "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y"}


@pytest.fixture(scope="module")
def cifar(cifar10_zip: Path, read_jpegs) -> torch.Tensor:
    """14 real CIFAR-10 test images (one per level in LEVELS), (14, 3, 32, 32) uint8."""
    classes = ("bird", "deer", "dog", "horse", "automobile", "ship", "cat")
    names = [f"test/{c}/{i:04d}.jpg" for c in classes for i in (5, 6)]
    return torch.stack(read_jpegs(cifar10_zip, names))


@pytest.fixture(scope="module")
def photo(woof_zip: Path, read_jpegs) -> torch.Tensor:
    """A full-size (426 x 320, portrait) photo, repeated once per level: (14, 3, 426, 320) uint8."""
    image = read_jpegs(woof_zip, ["train/n02086240/n02086240_1076.JPEG"])[0]
    return image.unsqueeze(0).repeat(len(LEVELS), 1, 1, 1)


def to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def from_pil(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def _transform(coefficients: Callable[[float], tuple]) -> Callable[[Image.Image, float], Image.Image]:
    return lambda im, a: im.transform(im.size, Image.AFFINE, coefficients(a), Image.NEAREST, fillcolor=(FILL,) * 3)


# op name -> Pillow with the argument level_to_arg gives (reference implementations' calls, as in timm)
PILLOW: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "identity": lambda im, a: im,
    "invert": lambda im, a: ImageOps.invert(im),
    "autocontrast": lambda im, a: ImageOps.autocontrast(im),
    "equalize": lambda im, a: ImageOps.equalize(im),
    "rotate": lambda im, a: im.rotate(a, Image.NEAREST, fillcolor=(FILL,) * 3),
    "solarize": lambda im, a: ImageOps.solarize(im, int(a)),
    "posterize": lambda im, a: ImageOps.posterize(im, int(a)),
    "color": lambda im, a: Enhance.Color(im).enhance(a),
    "contrast": lambda im, a: Enhance.Contrast(im).enhance(a),
    "brightness": lambda im, a: Enhance.Brightness(im).enhance(a),
    "sharpness": lambda im, a: Enhance.Sharpness(im).enhance(a),
    "shear_x": _transform(lambda a: (1, a, 0, 0, 1, 0)),
    "shear_y": _transform(lambda a: (1, 0, 0, a, 1, 0)),
    "translate_x": _transform(lambda a: (1, 0, a, 0, 1, 0)),
    "translate_y": _transform(lambda a: (1, 0, 0, 0, 1, a)),
}


@pytest.mark.parametrize(
    ("space", "name"), [("autoaugment", n) for n in sorted(PILLOW)] + [("geometric", n) for n in sorted(GEO_OPS)]
)
def test_apply_op_equals_pillow_at_the_mapped_argument(
    space: str, name: str, cifar: torch.Tensor, photo: torch.Tensor
) -> None:
    """One call per batch, a different level per image (signed, and above 10), each image equal to Pillow's."""
    levels = torch.tensor(LEVELS)
    for images in (cifar, photo):
        out = apply_op(images, name, levels, FILL, space=space)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        args = level_to_arg(name, levels, tuple(images.shape[-2:]), space=space)
        for i, level in enumerate(LEVELS):
            if name == "cutout":
                expected = _cutout_reference(images[i], args[i].tolist(), space == "geometric")
            else:
                expected = from_pil(PILLOW[name](to_pil(images[i]), None if args is None else args[i].item()))
            assert torch.equal(out[i], expected), f"{name} level {level} on {tuple(images.shape[-2:])}"


def _cutout_reference(image: torch.Tensor, size: list[int], inside: bool) -> torch.Tensor:
    """Cutout centred on the image centre pixel (the default centre)."""
    h, w = image.shape[-2:]
    y0, x0 = h // 2 - size[0] // 2, w // 2 - size[1] // 2
    if inside:
        y0, x0 = max(0, min(y0, h - size[0])), max(0, min(x0, w - size[1]))
    out = image.clone()
    out[:, max(0, y0) : max(0, y0 + size[0]), max(0, x0) : max(0, x0 + size[1])] = FILL
    return out


def test_level_to_arg_table() -> None:
    def arg(name: str, level: float, size: int | tuple[int, int] = 32, space: str = "autoaugment") -> list:
        return level_to_arg(name, torch.tensor([level]), size, space=space)[0].tolist()

    assert arg("rotate", 10) == pytest.approx(30.0) and arg("rotate", -5) == pytest.approx(-15.0)
    assert arg("shear_x", 10) == pytest.approx(0.3) and arg("shear_y", -30) == pytest.approx(-0.9)
    assert arg("translate_x", 10, 331) == pytest.approx(150.0)
    assert arg("translate_y", -10, (331, 7)) == pytest.approx(-150.0)
    assert arg("brightness", 10) == pytest.approx(1.9) and arg("color", -10) == pytest.approx(0.1)
    assert arg("contrast", 0) == 1.0 and arg("sharpness", -20) == 0.0  # clamped at 0
    assert [arg("posterize", m) for m in (0, 2.4, 2.5, 5, 10, 30)] == [4, 4, 3, 2, 0, 0]
    assert [arg("solarize", m) for m in (0, 1, 5, 10, 30)] == [256, 231, 128, 0, 0]
    assert arg("posterize", -5) == arg("posterize", 5)  # unsigned ops use |level|
    assert arg("cutout", 10) == [20, 20] and arg("cutout", 5, (224, 300)) == [70, 70]
    assert level_to_arg("invert", torch.tensor([3.0]), 32) is None
    # geometric space: translate by L/10 of the side, cutout of area L/10, clamped at level 10
    assert arg("translate_x", 5, (20, 32), "geometric") == pytest.approx(16.0)
    assert arg("translate_y", -30, (20, 32), "geometric") == pytest.approx(-20.0)
    assert arg("cutout", 2.5, (32, 64), "geometric") == [16, 32] and arg("cutout", 12, 32, "geometric") == [32, 32]
    assert arg("shear_x", 5, 32, "geometric") == pytest.approx(1.0)  # u = 1: the bottom row moves one width
    assert arg("shear_x", 10, 32, "geometric") == pytest.approx(64.0)  # the top row's centre moves one width


def _hidden_fraction(name: str, level: float, size: tuple[int, int], centers: torch.Tensor | None = None) -> float:
    white = torch.full((1, 1, *size), 255, dtype=torch.uint8)
    out = apply_op(white, name, torch.tensor([level]), 0, space="geometric", centers=centers)
    return float((out == 0).float().mean())


@pytest.mark.parametrize("size", [(32, 32), (224, 224), (426, 320)])
@pytest.mark.parametrize("name", sorted(GEO_OPS))
def test_geometric_space_hides_a_tenth_per_level(name: str, size: tuple[int, int]) -> None:
    """Level L hides L/10 of the image (to a pixel or two), level 10 and beyond all of it, either sign."""
    h, w = size
    tolerance = {"shear_x": 1.0 / h, "shear_y": 1.0 / w}.get(name, 0.0) + 2.5 / min(h, w)
    for level in (1.0, 2.0, 3.5, 5.0, 7.0, 9.0):
        for sign in (1, -1) if GEO_OPS[name].signed else (1,):
            assert _hidden_fraction(name, sign * level, size) == pytest.approx(level / 10, abs=tolerance)
    for level in (10.0, -10.0, 10.5, 30.0):
        corner = torch.tensor([[0, 0]])
        assert _hidden_fraction(name, level, size) == 1.0
        assert _hidden_fraction(name, level, size, centers=corner) == 1.0


ALL_OPS = [(space, name) for space, table in SPACES.items() for name in table]


@pytest.mark.parametrize(("space", "name"), [*ALL_OPS, ("geometric", "identity")])
def test_level_zero_is_identity_where_the_op_has_a_neutral_level(space: str, name: str, cifar: torch.Tensor) -> None:
    out = apply_op(cifar, name, torch.zeros(len(cifar)), FILL, space=space)
    if name in ("invert", "autocontrast", "equalize", "posterize"):
        assert not torch.equal(out, cifar)  # no neutral level: posterize keeps 4 bits at level 0
    else:
        assert torch.equal(out, cifar)


@pytest.mark.parametrize(("space", "name"), ALL_OPS)
def test_per_image_levels_in_one_call_equal_separate_calls(space: str, name: str, cifar: torch.Tensor) -> None:
    levels = torch.tensor(LEVELS)
    centers = torch.stack([torch.arange(14) * 2, 31 - torch.arange(14)], dim=1)
    together = apply_op(cifar, name, levels, 7, space=space, centers=centers)
    for i in range(len(cifar)):
        alone = apply_op(cifar[i : i + 1], name, levels[i : i + 1], 7, space=space, centers=centers[i : i + 1])
        assert torch.equal(together[i : i + 1], alone), f"image {i}, level {LEVELS[i]}"


def test_output_is_a_new_tensor_of_the_same_dtype_shape_and_device(cifar: torch.Tensor) -> None:
    """Also for inputs that are not contiguous (channels-last, strided views): same values as a contiguous copy."""
    before = cifar.clone()
    for name in OPS:
        out = apply_op(cifar, name, torch.full((len(cifar),), 7.0))
        assert out.dtype == torch.uint8 and out.shape == cifar.shape and out.device == cifar.device
        assert out.data_ptr() != cifar.data_ptr()
    assert torch.equal(cifar, before)
    channels_last = cifar.contiguous(memory_format=torch.channels_last)
    strided = torch.cat([cifar, cifar], dim=3)[..., ::2]
    for name in OPS:
        levels = torch.full((len(cifar),), -7.0)
        expected = apply_op(cifar, name, levels)
        assert torch.equal(apply_op(channels_last, name, levels), expected), name
        assert torch.equal(apply_op(strided, name, levels), apply_op(strided.contiguous(), name, levels)), name
    assert apply_op(cifar[:0], "rotate", torch.zeros(0)).shape == (0, 3, 32, 32)
    assert torch.equal(apply_op(cifar[:2], "rotate", 5.0), apply_op(cifar[:2], "rotate", torch.tensor([5.0, 5.0])))


def test_unsigned_ops_ignore_the_sign_and_signed_ops_flip(cifar: torch.Tensor) -> None:
    for name, spec in OPS.items():
        assert spec.signed == (name in SIGNED), name
        plus = apply_op(cifar, name, torch.full((len(cifar),), 6.0))
        minus = apply_op(cifar, name, torch.full((len(cifar),), -6.0))
        assert torch.equal(plus, minus) != spec.signed or name == "identity", name
    assert {n for n, s in GEO_OPS.items() if s.signed} == {"shear_x", "shear_y", "translate_x", "translate_y"}


def test_cutout_centres_are_pixel_y_x(cifar: torch.Tensor) -> None:
    white = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = apply_op(white, "cutout", torch.tensor([2.0, 2.0]), 0, centers=torch.tensor([[0, 31], [31.9, 0.5]]))
    assert level_to_arg("cutout", torch.tensor([2.0]), 32)[0].tolist() == [4, 4]
    # a 4 x 4 square spans [c - 2, c + 2), clipped at the border; float centres are floored
    expected = torch.zeros(2, 32, 32, dtype=torch.bool)
    expected[0, 0:2, 29:32] = True
    expected[1, 29:32, 0:2] = True
    assert torch.equal(out[:, 0] == 0, expected)


def test_errors_name_the_bad_value_and_the_allowed_ones(cifar: torch.Tensor) -> None:
    levels = torch.zeros(len(cifar))
    with pytest.raises(ValueError, match=r"'rotat'.*expected one of \['autocontrast', 'brightness'"):
        apply_op(cifar, "rotat", levels)
    with pytest.raises(ValueError, match=r"'rotate' in the geometric space.*\['cutout', 'shear_x'"):
        apply_op(cifar, "rotate", levels, space="geometric")
    with pytest.raises(ValueError, match=r"'geo'.*\['autoaugment', 'geometric'\]"):
        apply_op(cifar, "rotate", levels, space="geo")
    with pytest.raises(ValueError, match="uint8 tensor .* got torch.float32"):
        apply_op(cifar.float(), "invert", levels)
    with pytest.raises(ValueError, match="uint8 tensor .* got torch.uint8 of shape \\(3, 32, 32\\)"):
        apply_op(cifar[0], "invert", levels[:1])
    with pytest.raises(ValueError, match=r"levels must have shape \(14,\)"):
        apply_op(cifar, "invert", levels[:3])
    with pytest.raises(ValueError, match="fill must be an int in"):
        apply_op(cifar, "rotate", levels, fill=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("space", "name"), ALL_OPS)
def test_cuda_equals_cpu(space: str, name: str, cifar: torch.Tensor, photo: torch.Tensor) -> None:
    levels = torch.tensor(LEVELS)
    centers = torch.stack([torch.arange(14) * 2, 31 - torch.arange(14)], dim=1)
    for images in (cifar, photo):
        cpu = apply_op(images, name, levels, FILL, space=space, centers=centers)
        cuda = apply_op(images.cuda(), name, levels.cuda(), FILL, space=space, centers=centers.cuda())
        assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu)


def test_tables_have_every_op_of_the_paper() -> None:
    paper = {"invert", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast"}
    paper |= {"brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y"}
    assert set(OPS) == paper | {"cutout", "identity"}
    assert set(GEO_OPS) == {"shear_x", "shear_y", "translate_x", "translate_y", "cutout"}
    assert all(spec.max_level is None for spec in OPS.values())
    assert all(spec.max_level == 10.0 and spec.mapping for spec in GEO_OPS.values())
    assert math.isclose(level_to_arg("translate_x", torch.tensor([10.0]), 331)[0].item(), 150.0, rel_tol=1e-6)
