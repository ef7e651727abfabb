from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from augkd.augment.base import (
    BaseAugment,
    Flip,
    Identity,
    RandomCropFlip,
    RandomResizedCropFlip,
    build_base_augment,
)


def _images(b: int = 24, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


MODULES = {
    "crop-flip": lambda: RandomCropFlip(32, padding=4, seed=7),
    "rrc-flip": lambda: RandomResizedCropFlip(32, seed=7),
    "flip": lambda: Flip(seed=7),
    "none": lambda: Identity(seed=7),
}


@pytest.mark.parametrize("kind", list(MODULES))
def test_per_image_output_ignores_batch_split_and_order(kind):
    aug = MODULES[kind]()
    images, ids = _images(), torch.arange(100, 124)
    whole = aug(images, ids, 3)
    assert whole.dtype == torch.uint8 and whole.shape == images.shape
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    shuffled = aug(images[perm], ids[perm], 3)
    assert torch.equal(shuffled, whole[perm])
    halves = torch.cat([aug(images[:10], ids[:10], 3), aug(images[10:], ids[10:], 3)])
    assert torch.equal(halves, whole)


@pytest.mark.parametrize("kind", list(MODULES))
def test_params_replay(kind):
    aug = MODULES[kind]()
    images, ids = _images(), torch.arange(24)
    params = aug.sample(ids, 5, images.shape[-2:])
    assert all(v.shape[0] == 24 for v in params.values())
    assert torch.equal(aug(images, None, params=params), aug(images, ids, 5))
    assert torch.equal(aug(images, ids, 5), aug(images, ids, 5))
    original = images.clone()
    aug(images, ids, 5)
    assert torch.equal(images, original)  # the input is never modified


@pytest.mark.parametrize("kind", ["crop-flip", "rrc-flip", "flip"])
def test_epochs_and_seeds_draw_afresh(kind):
    aug = MODULES[kind]()
    images, ids = _images(), torch.arange(24)
    assert not torch.equal(aug(images, ids, 0), aug(images, ids, 1))
    other = type(aug)(**({"size": 32} if kind != "flip" else {}), seed=8)
    assert not torch.equal(aug(images, ids, 0), other(images, ids, 0))


def _reference_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool, size: int, pad: int, fill: int):
    padded = F.pad(image, (pad, pad, pad, pad), value=fill)
    out = padded[:, top : top + size, left : left + size]
    return out.flip(-1) if flip else out


@pytest.mark.parametrize(("h", "size", "pad", "fill"), [(32, 32, 4, 0), (32, 32, 0, 0), (40, 32, 2, 128)])
def test_crop_flip_matches_pad_then_slice(h, size, pad, fill):
    aug = RandomCropFlip(size, padding=pad, seed=1, fill=fill)
    images, ids = _images(64, h, h), torch.arange(64)
    out = aug(images, ids, 2)
    params = aug.sample(ids, 2, (h, h))
    assert out.shape == (64, 3, size, size)
    for i in range(64):
        top, left, flip = int(params["top"][i]), int(params["left"][i]), bool(params["flip"][i])
        assert torch.equal(out[i], _reference_crop_flip(images[i], top, left, flip, size, pad, fill))


def test_crop_flip_draws_cover_the_range():
    params = RandomCropFlip(32, padding=4, seed=0).sample(torch.arange(4000), 0)
    assert set(params["top"].tolist()) == set(range(9)) and set(params["left"].tolist()) == set(range(9))
    assert 0.45 < params["flip"].float().mean() < 0.55
    assert not RandomCropFlip(32, flip=False).sample(torch.arange(100), 0)["flip"].any()
    with pytest.raises(ValueError, match="cannot crop 32x32 from 16x16"):
        RandomCropFlip(32, padding=4).sample(torch.arange(3), 0, (16, 16))


def test_flip_applies_the_drawn_flips():
    images, ids = _images(), torch.arange(24)
    aug = Flip(seed=3)
    out, flip = aug(images, ids, 0), aug.sample(ids, 0)["flip"]
    assert 0 < int(flip.sum()) < 24
    assert torch.equal(out[flip], images[flip].flip(-1)) and torch.equal(out[~flip], images[~flip])


def test_rrc_whole_image_is_identity_or_resize():
    exact = RandomResizedCropFlip(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    images, ids = _images(), torch.arange(24)
    assert torch.equal(exact(images, ids, 0), images)
    # A 64 px image to 32 px: each output pixel averages a 2x2 block (roi_align's adaptive sampling).
    big = _images(4, 64, 64)
    out = exact(big, torch.arange(4), 0)
    assert out.shape == (4, 3, 32, 32)
    assert (out.float() - F.avg_pool2d(big.float(), 2).round()).abs().max() <= 1
    # Wider than tall: no square crop of the whole area fits, so the fallback takes the centred square.
    wide = _images(2, 32, 48)
    params = exact.sample(torch.arange(2), 0, (32, 48))
    assert params["height"].tolist() == [32, 32] and params["width"].tolist() == [32, 32]
    assert params["left"].tolist() == [8, 8] and params["top"].tolist() == [0, 0]
    assert torch.equal(exact(wide, torch.arange(2), 0), wide[:, :, :, 8:40])


def test_rrc_params_follow_torchvision_semantics():
    aug = RandomResizedCropFlip(32, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed=2)
    h, w = 48, 64
    p = aug.sample(torch.arange(5000), 4, (h, w))
    top, left, ch, cw = p["top"], p["left"], p["height"], p["width"]
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    assert (ch >= 1).all() and (cw >= 1).all()
    area = (ch * cw).float() / (h * w)
    ratio = cw.float() / ch.float()
    # Rounding to whole pixels moves area and ratio a little past their ranges on small crops.
    assert area.min() > 0.06 and area.max() <= 1.0
    assert ratio.min() > 3 / 4 * 0.85 and ratio.max() < 4 / 3 * 1.15
    # Log-uniform aspect ratios: about half the crops are wider than tall.
    assert 0.4 < (ratio > 1).float().mean() < 0.6
    # Mean area fraction as in torchvision's sampler on a 48x64 image (0.44 measured over 5000 draws there).
    assert 0.41 < area.mean() < 0.47
    assert 0.45 < p["flip"].float().mean() < 0.55


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.9, 1.0)])
def test_rrc_per_image_sizes_equal_one_call_per_image(scale):
    # Photos of different sizes in one call (the stream loader's workers): each gets its own-size draws.
    aug = RandomResizedCropFlip(32, scale=scale, seed=3)
    sizes = [(48, 64), (320, 480), (500, 333), (40, 400), (400, 40), (33, 33), (7, 300), (300, 7)] * 4
    ids = torch.arange(100, 100 + len(sizes))
    batched = aug.sample(ids, 2, torch.tensor(sizes))
    for i, (sid, hw) in enumerate(zip(ids, sizes)):
        one = aug.sample(sid.view(1), 2, hw)
        assert {k: int(v[i]) for k, v in batched.items()} == {k: int(v[0]) for k, v in one.items()}, hw
    # No crop of a 7x300 strip has an aspect ratio in [3/4, 4/3] and the area: the centred fallback, both ways.
    for i in (6, 7):
        box = [int(batched[k][i]) for k in ("top", "left", "height", "width")]
        assert box == ([0, (300 - 9) // 2, 7, 9] if i == 6 else [(300 - 9) // 2, 0, 9, 7])


def test_rrc_output_is_uint8_at_size():
    aug = RandomResizedCropFlip(24, seed=0)
    out = aug(_images(8, 40, 56), torch.arange(8), 0)
    assert out.dtype == torch.uint8 and out.shape == (8, 3, 24, 24)
    with pytest.raises(ValueError, match="uint8"):
        aug(_images(2).float(), torch.arange(2), 0)
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCropFlip(24, scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="tries"):
        RandomResizedCropFlip(24, tries=17)


def test_build_base_augment_table():
    assert isinstance(build_base_augment("auto", 32), RandomCropFlip)
    assert isinstance(build_base_augment("auto", 224), RandomResizedCropFlip)
    crop = build_base_augment("crop-flip", 32, seed=3, padding=2)
    assert isinstance(crop, RandomCropFlip) and crop.padding == 2 and crop.seed == 3
    rrc = build_base_augment("rrc-flip", 224, scale_min=0.25)
    assert rrc.scale == (0.25, 1.0) and rrc.size == 224
    assert isinstance(build_base_augment("flip", 32), Flip) and isinstance(build_base_augment("none", 32), Identity)
    assert all(isinstance(build_base_augment(k, 32), BaseAugment) for k in MODULES)
    with pytest.raises(ValueError, match="crop-flip"):
        build_base_augment("cutmix", 32)


def test_indices_must_be_integers():
    with pytest.raises(ValueError, match="1-D integer"):
        RandomCropFlip(32).sample(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="epoch"):
        Flip().sample(torch.arange(3), -1)
    assert math.isclose(RandomResizedCropFlip(8).ratio[1], 4 / 3)


def test_replayed_params_must_fit_the_images():
    crop = RandomCropFlip(32, padding=4)
    params = crop.sample(torch.arange(4), 0, (40, 40))  # drawn for larger images
    params["top"][0] = 16
    with pytest.raises(ValueError, match=r"crop corners must lie in \[0, 8\]"):
        crop(_images(4), None, params=params)
    rrc = RandomResizedCropFlip(16)
    params = rrc.sample(torch.arange(4), 0, (64, 64))
    params["height"][:] = 64
    params["top"][:] = 1
    with pytest.raises(ValueError, match="inside the 64x64 images"):
        rrc(_images(4, 64, 64), None, params=params)


def test_cutout_blanks_one_clipped_square_per_image_replayably():
    from augkd.augment.base import Cutout

    images = torch.full((64, 3, 32, 32), 7, dtype=torch.uint8)
    cut = Cutout(16, seed=3, fill=128)
    idx = torch.arange(64)
    out = cut(images, idx, epoch=2)
    params = cut.sample(idx, 2, (32, 32))
    torch.testing.assert_close(cut(images, None, params=params), out)
    torch.testing.assert_close(cut(images[10:20], idx[10:20], epoch=2), out[10:20])  # per image, not per batch
    for i in range(64):
        cy, cx = int(params["cy"][i]), int(params["cx"][i])
        rows = slice(max(0, cy - 8), min(32, cy + 8))
        cols = slice(max(0, cx - 8), min(32, cx + 8))
        assert bool((out[i, :, rows, cols] == 128).all())
        blanked = int((out[i, 0] == 128).sum())
        assert blanked == (rows.stop - rows.start) * (cols.stop - cols.start)  # clipped at the border, never moved
    centres = torch.stack([params["cy"], params["cx"]])
    assert centres.min() >= 0 and centres.max() <= 31 and len(set(params["cy"].tolist())) > 10
    assert not torch.equal(cut.sample(idx, 3, (32, 32))["cy"], params["cy"])  # a new draw each epoch
    with pytest.raises(ValueError, match="cutout size"):
        Cutout(0)
