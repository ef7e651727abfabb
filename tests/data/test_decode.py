from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from augkd.data.decode import (
    DECODER_FIXTURE_SHA256,
    DECODER_VERSION,
    decode_files,
    decode_one,
    resize_center_crop,
    target_short_side,
)


def _pattern(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("mode", "ext"),
    [("L", "png"), ("L", "jpg"), ("RGBA", "png"), ("CMYK", "jpg"), ("P", "png"), ("RGB", "bmp"), ("RGB", "webp")],
)
def test_any_colour_mode_decodes_to_rgb(tmp_path, mode, ext):
    path = tmp_path / f"image.{ext}"
    Image.fromarray(_pattern(20, 30)).convert(mode).save(path, **({"lossless": True} if ext == "webp" else {}))
    image = decode_one(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 30)
    with Image.open(path) as im:
        expected = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    if ext == "jpg":  # libjpeg builds may differ by a level or two
        assert (image.int() - expected.int()).abs().max() <= 2
    else:
        assert torch.equal(image, expected)


def test_real_jpeg_matches_pil(real_jpegs, tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_bytes(real_jpegs["cat"][0])
    image = decode_one(path, size=32)
    expected = torch.from_numpy(np.asarray(Image.open(io.BytesIO(real_jpegs["cat"][0])).convert("RGB")).copy())
    assert image.shape == (3, 32, 32)
    assert (image.int() - expected.permute(2, 0, 1).int()).abs().max() <= 2


def test_resize_rule():
    # Shorter side already at the size: centre crop only, whatever the crop fraction.
    assert target_short_side(32, 32, 0.875) == 32
    assert target_short_side(320, 224, 0.875) == 256  # ImageNet evaluation: resize 256, crop 224
    assert target_short_side(320, 224, 1.0) == 224  # training: the largest centred square
    assert target_short_side(240, 224, 0.875) == 240  # between: crop without resizing
    assert target_short_side(16, 32, 0.875) == 32  # smaller: upsample
    images = torch.from_numpy(_pattern(32, 32)).permute(2, 0, 1)
    assert resize_center_crop(images, 32, 0.875) is images  # exact pixels kept
    wide = torch.from_numpy(_pattern(32, 48)).permute(2, 0, 1)
    assert torch.equal(resize_center_crop(wide, 32, 0.875), wide[:, :, 8:40])
    big = torch.from_numpy(_pattern(320, 480)).permute(2, 0, 1).contiguous()
    out = resize_center_crop(big[None], 64, 0.875)
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="crop_fraction"):
        target_short_side(32, 32, 0.0)


def test_unreadable_files_error_or_skip(tmp_path, real_jpegs):
    good = tmp_path / "good.jpg"
    good.write_bytes(real_jpegs["dog"][0])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    data = _big_jpeg()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG not really")

    with pytest.raises(ValueError, match=r"unreadable image .*empty\.jpg: .*empty"):
        decode_files([good, empty], 32, quiet=True)
    with pytest.raises(ValueError, match=r"unreadable image .*truncated\.jpg: .*truncated"):
        decode_files([good, truncated], 32, quiet=True)
    with pytest.raises(ValueError, match=r"unreadable image .*garbage\.png"):
        decode_one(garbage)

    images, kept, bad = decode_files([empty, good, truncated, garbage], 32, bad_files="skip", quiet=True)
    assert images.shape == (1, 3, 32, 32) and kept.tolist() == [False, True, False, False]
    assert torch.equal(images[0], decode_one(good, 32))
    assert [p for p, _ in bad] == [str(empty), str(truncated), str(garbage)]
    assert all(reason and "\n" not in reason for _, reason in bad)


def _big_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pattern(64, 64)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_worker_processes_give_the_same_tensor(tmp_path, real_jpegs):
    paths = []
    for cls, images in real_jpegs.items():
        for i, data in enumerate(images):
            paths.append(tmp_path / f"{cls}{i}.jpg")
            paths[-1].write_bytes(data)
    many = paths * 24  # enough files for worker processes to start
    one, _, _ = decode_files(many, 32, quiet=True, workers=1)
    two, kept, bad = decode_files(many, 32, quiet=True, workers=2)
    assert torch.equal(one, two) and bool(kept.all()) and bad == []
    assert torch.equal(one[0], decode_one(paths[0]))


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16_bit_images_are_scaled_to_8_bits(tmp_path, ext):
    values = np.array([[0, 257, 32896, 65535, 1000, 65534]], dtype=np.uint16)  # v * 257 is the 8-bit v
    Image.fromarray(values).save(tmp_path / f"deep.{ext}")  # mode I;16 (torchvision reads the PNG, PIL the TIFF)
    image = decode_one(tmp_path / f"deep.{ext}")
    expected = torch.tensor([[0, 1, 128, 255, 4, 255]], dtype=torch.uint8)  # round(v / 257), not v mod 256
    assert image.dtype == torch.uint8 and all(torch.equal(image[c], expected) for c in range(3))


def _fixture_images(folder, real_jpegs) -> list:
    """Images of every kind the decoder treats differently, from fixed bytes or lossless encodings of fixed
    pixels (so only the decoder can change what they decode to)."""
    pattern = _pattern(30, 40)
    deep = (np.arange(20 * 24, dtype=np.uint32).reshape(20, 24) * 137 % 65536).astype(np.uint16)
    made = {
        "rgb.png": Image.fromarray(pattern),
        "grey.png": Image.fromarray(pattern).convert("L").resize((20, 20)),
        "palette.png": Image.fromarray(pattern).convert("P"),
        "rgba.png": Image.fromarray(pattern).convert("RGBA"),
        "rgb.bmp": Image.fromarray(pattern),
        "cmyk.tif": Image.fromarray(pattern).convert("CMYK"),
        "lossless.webp": Image.fromarray(pattern),
        "deep.png": Image.fromarray(deep),
        "deep.tif": Image.fromarray(deep),
    }
    paths = []
    for name, image in made.items():
        image.save(folder / name, **({"lossless": True} if name.endswith("webp") else {}))
        paths.append(folder / name)
    for i, data in enumerate(real_jpegs["cat"][:3]):  # JPEG: fixed bytes from the shared archive
        (folder / f"cat{i}.jpg").write_bytes(data)
        paths.append(folder / f"cat{i}.jpg")
    return paths


def test_the_decoder_version_is_tied_to_what_decoding_gives(tmp_path, real_jpegs):
    """A change in decoding (a decoder, a colour conversion, the 16-bit rule, the resize rule) changes this digest,
    and the test then demands a new DECODER_VERSION: the decoded-data cache key, so no stale cache is read."""
    h = hashlib.sha256()
    for path in _fixture_images(tmp_path, real_jpegs):
        for size, crop in ((None, 1.0), (32, 1.0), (24, 0.875)):
            h.update(decode_one(path, size, crop).contiguous().numpy().tobytes())
    digest = h.hexdigest()
    assert DECODER_FIXTURE_SHA256.get(DECODER_VERSION) == digest, (
        f"decoding changed (fixture digest {digest}): add DECODER_VERSION = {DECODER_VERSION + 1} with this digest to "
        "DECODER_FIXTURE_SHA256 in augkd/data/decode.py"
    )
    versions = list(DECODER_FIXTURE_SHA256.values())
    assert len(set(versions)) == len(versions)  # one version per behaviour: an old digest is never reused


def test_a_new_decoder_version_gives_a_new_cache_key(monkeypatch):
    from augkd.data import cache

    before = cache.fingerprint_files("/", [], {"size": 32})
    monkeypatch.setattr(cache, "DECODER_VERSION", DECODER_VERSION + 1)
    assert cache.fingerprint_files("/", [], {"size": 32}) != before


def test_an_animated_gif_gives_its_first_frame(tmp_path):
    """torchvision decodes every frame of an animated GIF into a 4-D tensor, which used to crash the store."""
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], loop=0)
    with Image.open(tmp_path / "anim.gif") as im:
        first = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
    image = decode_one(tmp_path / "anim.gif")
    assert image.shape == (3, 20, 30) and torch.equal(image, first)
    images, ok, bad = decode_files([tmp_path / "anim.gif"], 16)
    assert images.shape == (1, 3, 16, 16) and ok.all() and not bad
