"""Parity of the batched ops in augkd.augment.functional with Pillow, on real CIFAR-10 images and photos.

Every op is called once on a batch whose images each get their own argument, and each image is compared with
Pillow's result for that argument (``ImageOps``, ``ImageEnhance``, ``Image.transform(..., NEAREST)``,
``Image.rotate``). The criterion is bit-exact equality for every op, colour and geometric alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from PIL import ImageEnhance as Enhance

from augkd.augment import functional as F

FILL = 128
CIFAR_NAMES = [f"test/{c}/{i:04d}.jpg" for c in ("airplane", "cat", "frog", "ship", "truck") for i in range(3)]
# a portrait (426 x 320) and a landscape (320 x 426) photo
WOOF_NAMES = ["train/n02086240/n02086240_1076.JPEG", "val/n02086240/ILSVRC2012_val_00002701.JPEG"]


@pytest.fixture(scope="module")
def cifar(cifar10_zip: Path, read_jpegs) -> torch.Tensor:
    """15 real CIFAR-10 test images, (15, 3, 32, 32) uint8."""
    return torch.stack(read_jpegs(cifar10_zip, CIFAR_NAMES))


@pytest.fixture(scope="module")
def photos(woof_zip: Path, read_jpegs) -> list[torch.Tensor]:
    """Two full-size photos, (3, 426, 320) and (3, 320, 426) uint8."""
    return read_jpegs(woof_zip, WOOF_NAMES)


def to_pil(image: torch.Tensor) -> Image.Image:
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def from_pil(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image)
    return torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)


def batches(cifar: torch.Tensor, photos: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """Batches of ``n`` images: CIFAR images, and each photo repeated (one argument per copy)."""
    return [cifar[:n], *(p.unsqueeze(0).repeat(n, 1, 1, 1) for p in photos)]


def assert_matches_pillow(
    out: torch.Tensor, images: torch.Tensor, reference: Callable[[Image.Image, float], Image.Image], args: list
) -> None:
    assert out.dtype == torch.uint8 and out.shape[0] == images.shape[0] and out.shape[2:] == images.shape[2:]
    for i, arg in enumerate(args):
        expected = from_pil(reference(to_pil(images[i]), arg))
        if not torch.equal(out[i], expected):
            diff = (out[i].int() - expected.int()).abs()
            pytest.fail(
                f"image {i} ({tuple(images.shape[-2:])}), argument {arg}: {int((diff > 0).sum())} of "
                f"{diff.numel()} values differ from Pillow, max difference {int(diff.max())}"
            )


# op -> (batched function of (images, args), Pillow reference of (image, arg), per-image arguments)
FACTORS = [0.0, 0.1, 0.19, 0.5, 0.73, 1.0, 1.27, 1.81, 1.9, 2.7]
POINTWISE: dict[str, tuple[Callable, Callable, list]] = {
    "invert": (lambda x, a: F.invert(x), lambda im, a: ImageOps.invert(im), [None] * 4),
    "autocontrast": (lambda x, a: F.autocontrast(x), lambda im, a: ImageOps.autocontrast(im), [None] * 4),
    "equalize": (lambda x, a: F.equalize(x), lambda im, a: ImageOps.equalize(im), [None] * 4),
    "solarize": (F.solarize, lambda im, a: ImageOps.solarize(im, a), [0, 1, 26, 128, 179, 230, 255, 256]),
    "posterize": (F.posterize, lambda im, a: ImageOps.posterize(im, a), [0, 1, 2, 3, 4, 5, 7, 8]),
    "brightness": (F.brightness, lambda im, a: Enhance.Brightness(im).enhance(a), FACTORS),
    "contrast": (F.contrast, lambda im, a: Enhance.Contrast(im).enhance(a), FACTORS),
    "color": (F.color, lambda im, a: Enhance.Color(im).enhance(a), FACTORS),
    "sharpness": (F.sharpness, lambda im, a: Enhance.Sharpness(im).enhance(a), FACTORS),
}


def _call(fn: Callable, images: torch.Tensor, args: list) -> torch.Tensor:
    if args[0] is None:
        return fn(images, None)
    dtype = torch.float32 if isinstance(args[0], float) else torch.int64
    return fn(images, torch.tensor(args, dtype=dtype))


@pytest.mark.parametrize("name", sorted(POINTWISE))
def test_pointwise_ops_equal_pillow(name: str, cifar: torch.Tensor, photos: list[torch.Tensor]) -> None:
    fn, reference, args = POINTWISE[name]
    for images in batches(cifar, photos, len(args)):
        assert_matches_pillow(_call(fn, images, args), images, reference, args)


def test_grayscale_equals_pillow_convert_l(cifar: torch.Tensor, photos: list[torch.Tensor]) -> None:
    for images in batches(cifar, photos, 2):
        assert_matches_pillow(F.grayscale(images), images, lambda im, a: im.convert("L"), [None, None])


def _affine(coefficients: Callable[[float], tuple]) -> Callable[[Image.Image, float], Image.Image]:
    return lambda im, a: im.transform(im.size, Image.AFFINE, coefficients(a), Image.NEAREST, fillcolor=(FILL,) * 3)


SHIFTS = [0.0, 0.4, -0.5, 0.5, 3.7, -12.2, 31.0, -45.3, 150.0, -500.0]
SHEARS = [0.0, 0.01, -0.03, 0.17, -0.3, 0.9, -0.99, 2.5, -13.0, 40.0]
GEOMETRIC: dict[str, tuple[Callable, Callable, list]] = {
    "translate_x": (F.translate_x, _affine(lambda a: (1, 0, a, 0, 1, 0)), SHIFTS),
    "translate_y": (F.translate_y, _affine(lambda a: (1, 0, 0, 0, 1, a)), SHIFTS),
    "shear_x": (F.shear_x, _affine(lambda a: (1, a, 0, 0, 1, 0)), SHEARS),
    "shear_y": (F.shear_y, _affine(lambda a: (1, 0, 0, a, 1, 0)), SHEARS),
    "rotate": (
        F.rotate,
        lambda im, a: im.rotate(a, Image.NEAREST, fillcolor=(FILL,) * 3),
        [0.0, 3.0, -27.0, 30.0, 45.0, -90.0, 90.0, 134.9, 180.0, -333.3],
    ),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_geometric_ops_equal_pillow(name: str, cifar: torch.Tensor, photos: list[torch.Tensor]) -> None:
    """Bit-exact, border included: the sampler is Pillow's own 16.16 fixed-point arithmetic."""
    fn, reference, args = GEOMETRIC[name]
    for images in batches(cifar, photos, len(args)):
        out = fn(images, torch.tensor(args, dtype=torch.float32), FILL)
        # the reference gets the float32 value the op saw
        assert_matches_pillow(out, images, reference, [float(np.float32(a)) for a in args])


def _cutout_reference(image: torch.Tensor, size: tuple[int, int], center: tuple[int, int], inside: bool):
    out = image.clone()
    h, w = image.shape[-2:]
    y0, x0 = center[0] - size[0] // 2, center[1] - size[1] // 2
    if inside:
        y0, x0 = max(0, min(y0, h - size[0])), max(0, min(x0, w - size[1]))
    out[:, max(0, y0) : max(0, y0 + size[0]), max(0, x0) : max(0, x0 + size[1])] = FILL
    return out


@pytest.mark.parametrize("inside", [False, True])
def test_cutout_fills_the_rectangle_around_the_centre(inside: bool, cifar: torch.Tensor) -> None:
    images = cifar[:6]
    sizes = torch.tensor([[0, 0], [8, 8], [20, 20], [5, 12], [32, 32], [40, 7]])
    centers = torch.tensor([[16, 16], [0, 0], [31, 30], [10, 2], [3, 28], [20, 31]])
    out = F.cutout(images, sizes, centers, FILL, inside=inside)
    for i in range(len(images)):
        expected = _cutout_reference(images[i], tuple(sizes[i].tolist()), tuple(centers[i].tolist()), inside)
        assert torch.equal(out[i], expected), f"image {i}"


def test_cutout_default_centre_is_the_image_centre(cifar: torch.Tensor) -> None:
    out = F.cutout(cifar[:1], torch.tensor([[4, 6]]), None, 0)
    assert torch.equal(out, F.cutout(cifar[:1], torch.tensor([[4, 6]]), torch.tensor([[16, 16]]), 0))
    assert torch.equal(out[0], _cutout_reference(cifar[0], (4, 6), (16, 16), False).masked_fill(out[0] == 0, 0))
    assert (out[0, :, 14:18, 13:19] == 0).all()


def test_apply_lut_per_image_and_per_channel(cifar: torch.Tensor) -> None:
    images = cifar[:3]
    g = torch.Generator().manual_seed(0)
    lut = torch.randint(0, 256, (3, 256), generator=g, dtype=torch.uint8)
    expected = torch.stack([lut[i][images[i].long()] for i in range(3)])
    assert torch.equal(F.apply_lut(images, lut), expected)
    lut_c = torch.randint(0, 256, (3, 3, 256), generator=g, dtype=torch.uint8)
    expected_c = torch.stack([torch.stack([lut_c[i, c][images[i, c].long()] for c in range(3)]) for i in range(3)])
    assert torch.equal(F.apply_lut(images, lut_c), expected_c)
    with pytest.raises(ValueError, match="lut must be"):
        F.apply_lut(images, lut[:2])


OPS_WITH_ARGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "invert": F.invert,
    "autocontrast": F.autocontrast,
    "equalize": F.equalize,
    "grayscale": F.grayscale,
    "solarize": lambda x: F.solarize(x, torch.arange(len(x)) * 20),
    "posterize": lambda x: F.posterize(x, torch.arange(len(x)) % 9),
    "brightness": lambda x: F.brightness(x, torch.linspace(0, 2, len(x))),
    "contrast": lambda x: F.contrast(x, torch.linspace(0, 2, len(x))),
    "color": lambda x: F.color(x, torch.linspace(0, 2, len(x))),
    "sharpness": lambda x: F.sharpness(x, torch.linspace(0, 2, len(x))),
    "translate_x": lambda x: F.translate_x(x, torch.linspace(-20, 20, len(x)), FILL),
    "translate_y": lambda x: F.translate_y(x, torch.linspace(-20, 20, len(x)), FILL),
    "shear_x": lambda x: F.shear_x(x, torch.linspace(-1, 1, len(x)), FILL),
    "shear_y": lambda x: F.shear_y(x, torch.linspace(-1, 1, len(x)), FILL),
    "rotate": lambda x: F.rotate(x, torch.linspace(-90, 90, len(x)), FILL),
    "cutout": lambda x: F.cutout(x, torch.full((len(x), 2), 9), None, FILL),
}


@pytest.mark.parametrize("name", sorted(OPS_WITH_ARGS))
def test_cache_blocking_does_not_change_results(name: str, cifar: torch.Tensor, monkeypatch) -> None:
    """CPU blocks of one image (and of several) give the whole-batch result; the input is left untouched."""
    images = cifar[:10]
    before = images.clone()
    whole = OPS_WITH_ARGS[name](images)
    for block_elements in (1, 3 * 32 * 32 * 4):
        monkeypatch.setattr(F, "BLOCK_ELEMENTS", block_elements)
        assert torch.equal(OPS_WITH_ARGS[name](images), whole)
    assert torch.equal(images, before)


def test_edge_cases_of_the_tables() -> None:
    constant = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(F.autocontrast(constant), constant)
    assert torch.equal(F.equalize(constant), constant)
    two_values = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    two_values[..., :2, :] = 200
    assert torch.equal(F.equalize(two_values), from_pil(ImageOps.equalize(to_pil(two_values[0])))[None])
    tiny = torch.randint(0, 256, (2, 3, 2, 5), dtype=torch.uint8)
    assert torch.equal(F.sharpness(tiny, torch.tensor([0.0, 2.0])), tiny)


def test_single_channel_images(cifar: torch.Tensor) -> None:
    grey = F.grayscale(cifar[:4])
    assert grey.shape == (4, 1, 32, 32)
    assert torch.equal(F.color(grey, torch.full((4,), 0.3)), grey)
    factors = [0.0, 0.5, 1.3, 1.9]
    out = F.contrast(grey, torch.tensor(factors))
    assert_matches_pillow(out, grey, lambda im, a: Enhance.Contrast(im).enhance(a), factors)


def test_bad_arguments_raise_value_error(cifar: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"one value per image, shape \(4,\)"):
        F.brightness(cifar[:4], torch.ones(3))
    with pytest.raises(ValueError, match="fill must be an int in"):
        F.translate_x(cifar[:1], torch.zeros(1), fill=300)
    with pytest.raises(ValueError, match="sizes must be"):
        F.cutout(cifar[:2], torch.zeros(2), None, FILL)
    with pytest.raises(ValueError, match="RGB"):
        F.color(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), torch.ones(1))
