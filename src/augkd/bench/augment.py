"""Augmentation throughput: augkd's batched policies against torchvision, timm and kornia, side by side.

All contenders run in one process on the same real images (CIFAR-10 JPEGs at 32x32, or Imagewoof photos resized
and centre-cropped to 224x224), so the ratios are meaningful even on a busy machine; the absolute images/s are not.

What each anchor does differs and the report says so:

- ``augkd``: the spec's policy, per-image ops and levels, sampling included (the real training-time cost).
- ``torchvision``: ``transforms.v2.RandAugment(num_ops=2, magnitude=9)`` on the uint8 batch; one op draw per call,
  so the whole batch gets the same two ops (much less work than per-image augmentation).
- ``timm``: ``rand_augment_transform('rand-m9-n2')`` called per PIL image (its data-loader path); each op fires
  with probability 0.5 there. PIL conversion is not timed.
- ``kornia``: ``augmentation.auto.RandAugment(n=2, m=9)`` on the float batch in [0, 1] (kornia's m is on a 0-30
  scale); one op draw per call, per-image magnitudes. The uint8-to-float conversion is not timed.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from augkd.augment.spec import build_policy

__all__ = ["default_data_dir", "run_augment_benchmark", "sample_images"]

_ANCHORS = ("torchvision", "timm", "kornia")


def default_data_dir() -> Path:
    """The shared data archives: ``$AUGKD_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("AUGKD_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def sample_images(zip_path: str | Path, n: int, *, image_size: int | None = None, split: str = "train") -> torch.Tensor:
    """Decode ``n`` JPEGs spread evenly over an ImageFolder zip's ``split`` (so several classes show up).

    Args:
        zip_path: an ImageFolder archive (``<split>/<class>/<image>.jpg``).
        n: how many images.
        image_size: resize the short side to this and centre-crop a square; ``None`` keeps the size (all the
            chosen images must then share it, as CIFAR's do).
        split: the top folder to read.

    Returns:
        uint8 images (n, 3, H, W).
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as tvf

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(m for m in zf.namelist() if m.startswith(f"{split}/") and m.lower().endswith((".jpg", ".jpeg")))
        if len(names) < n:
            raise ValueError(f"{zip_path} has {len(names)} JPEGs under {split!r}/, fewer than the {n} asked for")
        picks = [names[(i * len(names)) // n] for i in range(n)]
        images = []
        for name in picks:
            data = torch.frombuffer(bytearray(zf.read(name)), dtype=torch.uint8)
            with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_jpeg(data, mode=ImageReadMode.RGB)
            if image_size is not None:
                image = tvf.center_crop(tvf.resize(image, [image_size], antialias=True), [image_size, image_size])
            images.append(image)
    return torch.stack(images)


def _benchmark_images(image_size: int, batch_size: int, data_dir: Path) -> torch.Tensor:
    if image_size == 32:
        return sample_images(data_dir / "cifar10-jpg.zip", batch_size)
    # A few full-size photos, resized and cropped, tiled up to the batch (decoding 128 photos would dominate).
    photos = sample_images(data_dir / "imagewoof320-mini.zip", min(batch_size, 32), image_size=image_size)
    reps = -(-batch_size // photos.shape[0])
    return photos.repeat(reps, 1, 1, 1)[:batch_size].contiguous()


def _time(fn: Callable[[int], Any], repeats: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Median and best wall seconds of ``fn(repeat)`` over ``repeats`` runs after ``warmup`` untimed ones."""
    times = []
    for r in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn(r)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def _entry(images: int, seconds: tuple[float, float], batch_size: int, note: str) -> dict[str, Any]:
    """Report one contender that augmented ``images`` images in (median, best) ``seconds``."""
    median, best = seconds
    return {
        "images_per_s": images / median,
        "images_per_s_best": images / best,
        "seconds_per_batch": median * batch_size / images,
        "note": note,
    }


def run_augment_benchmark(
    image_size: int = 32,
    batch_size: int | None = None,
    device: str = "cpu",
    spec: str = "ra-n2-m9",
    repeats: int = 5,
    *,
    warmup: int = 1,
    anchors: Sequence[str] = _ANCHORS,
    timm_images: int | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Images/s of augkd's ``spec`` policy and of the anchors on the same batch, plus augkd's ratio to each.

    Args:
        image_size: 32 (CIFAR-10 images) or 224 (Imagewoof photos resized and centre-cropped).
        batch_size: images per batch; default 1024 at 32 px and 128 at 224 px.
        device: where augkd, torchvision and kornia run (timm always runs per PIL image on the CPU).
        spec: augkd's policy spec (the anchors are always RandAugment N=2 M=9).
        repeats: timed batches per contender (the median is reported).
        warmup: untimed batches first.
        anchors: which of ``torchvision``, ``timm``, ``kornia`` to run.
        timm_images: how many images timm's per-image loop augments per repeat (default: the batch, at most 256).
        data_dir: folder holding the shared archives; default :func:`default_data_dir`.

    Returns:
        A JSON-ready dict: the settings; per contender ``images_per_s`` (from the median time),
        ``images_per_s_best`` (the fastest repeat, steadier on a shared machine), ``seconds_per_batch`` and a
        ``note``; and ``ratios``, augkd's median images/s over each anchor's.
    """
    if image_size not in (32, 224):
        raise ValueError(f"image_size must be 32 or 224, got {image_size}")
    unknown = set(anchors) - set(_ANCHORS)
    if unknown:
        raise ValueError(f"unknown anchors {sorted(unknown)}; expected some of {list(_ANCHORS)}")
    batch_size = batch_size or (1024 if image_size == 32 else 128)
    dev = torch.device(device)
    images = _benchmark_images(image_size, batch_size, Path(data_dir) if data_dir else default_data_dir()).to(dev)
    indices = torch.arange(batch_size, device=dev)
    report: dict[str, Any] = {
        "image_size": image_size,
        "batch_size": batch_size,
        "device": str(dev),
        "spec": spec,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }

    policy = build_policy(spec, image_size=image_size, seed=0)
    seconds = _time(lambda r: policy(images, indices, r), repeats, warmup, dev)
    report["augkd"] = _entry(batch_size, seconds, batch_size, "per-image ops, levels and signs; sampling included")

    if "torchvision" in anchors:
        from torchvision.transforms import v2

        tv = v2.RandAugment(num_ops=2, magnitude=9, fill=128)
        seconds = _time(lambda r: tv(images), repeats, warmup, dev)
        note = "v2.RandAugment(num_ops=2, magnitude=9) on the uint8 batch: one op choice for the whole batch"
        report["torchvision"] = _entry(batch_size, seconds, batch_size, note)

    if "timm" in anchors:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform

        count = min(timm_images or min(batch_size, 256), batch_size)
        pil = [Image.fromarray(im.permute(1, 2, 0).cpu().numpy()) for im in images[:count]]
        ta = rand_augment_transform("rand-m9-n2", {"img_mean": (128, 128, 128)})
        seconds = _time(lambda r: [ta(im) for im in pil], repeats, warmup, torch.device("cpu"))
        note = f"rand-m9-n2 per PIL image ({count} images per repeat; each op fires with p=0.5)"
        report["timm"] = _entry(count, seconds, batch_size, note)

    if "kornia" in anchors:
        from kornia.augmentation.auto import RandAugment as KorniaRandAugment

        floats = images.float() / 255.0
        ka = KorniaRandAugment(n=2, m=9)
        seconds = _time(lambda r: ka(floats), repeats, warmup, dev)
        note = "augmentation.auto.RandAugment(n=2, m=9) on the float batch: one op choice per batch"
        report["kornia"] = _entry(batch_size, seconds, batch_size, note)

    report["ratios"] = {
        f"augkd_vs_{name}": report["augkd"]["images_per_s"] / report[name]["images_per_s"]
        for name in _ANCHORS
        if name in report
    }
    return report
