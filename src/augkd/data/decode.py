"""Decode image files into one uint8 tensor, with worker processes and a resize rule for odd sizes.

Resize rule (:func:`resize_center_crop`): every image becomes ``size x size``. The shorter side is scaled to

    ``target = max(size, min(shorter, round(size / crop_fraction)))``

with antialiased bilinear resampling, then the centre ``size x size`` is cut out. So

- an image whose shorter side already equals ``size`` is only centre-cropped (32x32 images at size 32 keep
  their exact pixels, whatever ``crop_fraction``);
- a smaller image is upsampled to ``size``;
- a larger image is downsampled so that the centre crop keeps ``crop_fraction`` of the shorter side: the
  ImageNet evaluation convention (resize 256, crop 224) for ``crop_fraction=0.875``. Training splits use
  ``crop_fraction=1.0`` (the largest centred square) so random-resized-crop sees as much of the photo as a
  square store allows.

Decoding uses torchvision's decoders (JPEG, PNG, WebP, GIF; greyscale, palette, RGBA and CMYK all come out as
RGB; 16-bit images are scaled to 8 bits; an animated GIF gives its first frame) and falls back to PIL for other
formats (BMP, TIFF). An image that neither can read is *bad*: decoding never raises for it but returns its path
and the reason, so the caller can stop with one clear message or skip it and report.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

__all__ = [
    "DECODER_FIXTURE_SHA256",
    "DECODER_VERSION",
    "BadFile",
    "decode_files",
    "decode_one",
    "resize_center_crop",
    "target_short_side",
]

#: Version of what decoding gives for the same file: part of the decoded-data cache key, so a cache made by an
#: older decoder is never read back. 1: before 16-bit PNG/TIFF were scaled to 8 bits; 2: scaled.
DECODER_VERSION = 2
#: SHA-256 of the decoder's output on the fixture images of ``tests/data/test_decode.py`` for each version. The
#: test decodes them and requires this version's digest: a change in decoding fails it until it gets a new
#: version (and so a new cache key), with the new digest added here.
DECODER_FIXTURE_SHA256 = {
    2: "ac7cf23e13a4b7694f988e99b0d1a9dda200d27676a4265b1a6a8071d108ff0b",
}

#: (path, reason) of an image that could not be decoded.
BadFile = tuple[str, str]

# torchvision 0.29 warns on every decode that its image IO moves to torchcodec; the decoders still work.
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"
# "decode_jpeg, /path/to/decode_jpeg.cpp:171, Image is incomplete or truncated" -> the last part.
_CPP_PREFIX = re.compile(r"^\w+, \S+:\d+, ")
_MIN_FILES_FOR_WORKERS = 512


def target_short_side(shorter: int, size: int, crop_fraction: float) -> int:
    """Length the shorter side is resized to before the centre crop (see the module docstring)."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction!r}")
    return max(size, min(shorter, round(size / crop_fraction)))


def resize_center_crop(images: torch.Tensor, size: int, crop_fraction: float = 1.0) -> torch.Tensor:
    """Resize (antialiased bilinear) and centre-crop uint8 images ``(..., C, H, W)`` to ``(..., C, size, size)``.

    Returns the input unchanged when it is already ``size x size``.
    """
    h, w = images.shape[-2:]
    if h == w == size:
        return images
    shorter = min(h, w)
    target = target_short_side(shorter, size, crop_fraction)
    if target != shorter:
        new_h, new_w = (target, round(w * target / h)) if h <= w else (round(h * target / w), target)
        images = TF.resize(images, [new_h, new_w], antialias=True)
    return TF.center_crop(images, [size, size]).contiguous()


def _reason(err: Exception) -> str:
    return _CPP_PREFIX.sub("", str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """16-bit images (PNG, TIFF) scaled to 8 bits (65535 -> 255), not cut off: a plain cast would wrap around."""
    if image.dtype == torch.uint8:
        return image
    if image.dtype not in (torch.uint16, torch.int32):
        raise ValueError(f"unsupported pixel type {image.dtype}")
    return (image.to(torch.int32).clamp_(0, 65535) * 255 + 32767).div_(65535, rounding_mode="floor").to(torch.uint8)


def _decode_pil(path: str) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode.startswith("I;16"):  # 16-bit greyscale: PIL's RGB conversion would clip at 255
            grey = torch.from_numpy(np.asarray(im).astype(np.int32))
            return _to_uint8(grey).expand(3, -1, -1).contiguous()
        rgb = np.asarray(im.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def _decode(path: str) -> torch.Tensor:
    data = read_file(path)
    if data[:2].tolist() == [0xFF, 0xD8]:  # JPEG: skip decode_image's format sniffing (a third of the time)
        return decode_jpeg(data, mode=ImageReadMode.RGB)
    try:
        image = _to_uint8(decode_image(data, mode=ImageReadMode.RGB))  # 16-bit PNGs come out as uint16
        return image[0] if image.ndim == 4 else image  # an animated GIF: its first frame, as PIL shows it
    except RuntimeError as err:
        if "Unsupported image file" not in str(err):
            raise
        return _decode_pil(path)  # formats torchvision does not read (BMP, TIFF)


def decode_one(path: str | Path, size: int | None = None, crop_fraction: float = 1.0) -> torch.Tensor:
    """Decode one image file to uint8 RGB ``(3, H, W)``; with ``size``, resize and crop to ``(3, size, size)``.

    Raises:
        ValueError: the file cannot be read or decoded (the message names the path and the reason).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION)
        return _decode_or_raise(str(path), size, crop_fraction)


def _decode_or_raise(path: str, size: int | None, crop_fraction: float) -> torch.Tensor:
    try:
        image = _decode(path)
    except Exception as err:  # any failure of a third-party decoder is a bad file, reported by path
        raise ValueError(f"unreadable image {path}: {_reason(err)}") from err
    return image if size is None else resize_center_crop(image, size, crop_fraction)


class _ChunkDecoder(Dataset):
    """Chunks of files as dataset items, so a DataLoader's worker processes decode them in parallel."""

    def __init__(self, paths: Sequence[str], size: int, crop_fraction: float, chunk: int) -> None:
        self.paths, self.size, self.crop_fraction, self.chunk = list(paths), size, crop_fraction, chunk

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.chunk)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor, list[BadFile]]:
        paths = self.paths[i * self.chunk : (i + 1) * self.chunk]
        out = torch.zeros((len(paths), 3, self.size, self.size), dtype=torch.uint8)
        ok = torch.ones(len(paths), dtype=torch.bool)
        bad: list[BadFile] = []
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_DEPRECATION)
            for j, path in enumerate(paths):
                try:
                    out[j] = _decode_or_raise(path, self.size, self.crop_fraction)
                except ValueError as err:
                    ok[j] = False
                    bad.append((path, _reason(err.__cause__ or err)))
        return i, out, ok, bad


def decode_files(
    paths: Sequence[str | Path],
    size: int,
    crop_fraction: float = 1.0,
    *,
    workers: int = 1,
    bad_files: str = "error",
    quiet: bool = False,
    desc: str = "decode",
) -> tuple[torch.Tensor, torch.Tensor, list[BadFile]]:
    """Decode ``paths`` into one uint8 tensor ``(N, 3, size, size)``.

    Args:
        paths: image files, in the order of the output.
        size: output side in pixels (see :func:`resize_center_crop` for the rule).
        crop_fraction: fraction of the shorter side kept by the centre crop of large images.
        workers: decoding processes (1 decodes in this process).
        bad_files: ``error`` raises at the first unreadable file; ``skip`` leaves bad files out.
        quiet: no progress bar.
        desc: progress bar label.

    Returns:
        ``(images, kept, bad)``: the decoded images of the readable files, a bool mask over ``paths`` of the
        files kept, and ``(path, reason)`` of every unreadable file.

    Raises:
        ValueError: with ``bad_files="error"``, the first unreadable file (path and reason).
    """
    if bad_files not in ("error", "skip"):
        raise ValueError(f"bad_files must be 'error' or 'skip'; got {bad_files!r}")
    paths = [str(p) for p in paths]
    n = len(paths)
    # Enough chunks to balance the workers and move the progress bar, few enough to keep the overhead low.
    chunk = max(16, min(1024, math.ceil(n / max(1, workers * 16))))
    decoder = _ChunkDecoder(paths, size, crop_fraction, chunk)
    # Starting worker processes costs a fraction of a second: only worth it for a few hundred files or more.
    num_workers = workers if workers > 1 and n >= _MIN_FILES_FOR_WORKERS else 0
    # Its own generator: a DataLoader draws its workers' base seed from it, and must not touch torch's global RNG.
    loader = DataLoader(decoder, batch_size=None, shuffle=False, num_workers=num_workers, generator=torch.Generator())
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    kept = torch.ones(n, dtype=torch.bool)
    bad: list[BadFile] = []
    with tqdm(total=n, desc=desc, unit="img", disable=quiet or n < 1000, leave=False) as bar:
        for i, out, ok, chunk_bad in loader:
            start = i * chunk
            images[start : start + len(out)] = out
            kept[start : start + len(out)] = ok
            if chunk_bad and bad_files == "error":
                path, reason = chunk_bad[0]
                raise ValueError(f"unreadable image {path}: {reason} (set data.bad_files=skip to leave such files out)")
            bad.extend((str(path), str(reason)) for path, reason in chunk_bad)  # workers' tuples arrive as lists
            bar.update(len(out))
    if bad:
        images = images[kept]
    return images, kept, bad
