"""Input-pipeline throughput: augkd's in-memory path against torchvision's per-image transforms, side by side.

Both contenders serve the same real CIFAR-10 training images (the shared JPEG archive, decoded once into the
in-memory cache) in batches of 512 with pad-4 random crop and horizontal flip, in one process, so their ratio
means something even on a busy machine; the absolute images/s do not.

- ``augkd``: :class:`~augkd.data.DeviceLoader` (one index_select per batch) +
  :class:`~augkd.augment.base.RandomCropFlip` (one gather per batch, parameters from the counter RNG).
- ``torchvision`` (the anchor): ``transforms.RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` applied per
  image tensor by a ``DataLoader(num_workers=0)`` over the same uint8 tensor, collated into batches.
- ``augkd_loader_only``: the loader without augmentation, to show what the augmentation costs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from augkd.augment.base import RandomCropFlip
from augkd.data import DataConfig, DeviceLoader, build_datasets

__all__ = ["default_archive", "run_data_benchmark"]


def default_archive() -> Path:
    """The shared CIFAR-10 archive: ``$AUGKD_SHARED_DATA/cifar10-jpg.zip``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("AUGKD_SHARED_DATA")
    data_dir = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return data_dir / "cifar10-jpg.zip"


class _PerImage(Dataset):
    """A uint8 tensor dataset that transforms each image on access, as a torchvision pipeline does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(batches: Any, max_batches: int, device: torch.device, step: Any = None) -> dict[str, float]:
    """Images/s over up to ``max_batches`` batches of an iterator (after one untimed warm-up batch)."""
    it = iter(batches)
    first = next(it)
    if step is not None:
        step(first)
    _sync(device)
    images, start = 0, time.perf_counter()
    for i, batch in enumerate(it):
        if i >= max_batches:
            break
        out = step(batch) if step is not None else batch[0]
        images += out.shape[0]
    _sync(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "images": images, "seconds": seconds}


def run_data_benchmark(
    root: str | Path | None = None,
    batch_size: int = 512,
    device: str = "cpu",
    *,
    cache_dir: str = ".cache/augkd",
    quick: bool = False,
    augkd_batches: int | None = None,
    anchor_batches: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Images/s of augkd's in-memory loader + RandomCropFlip and of torchvision's per-image pipeline, and their ratio.

    Args:
        root: an ImageFolder of 32x32 images (folder or zip); default the shared ``cifar10-jpg.zip``.
        batch_size: images per batch for both contenders.
        device: where augkd's batches go (the anchor always runs on the CPU, as a DataLoader would).
        cache_dir: the decode cache (the first run decodes the 50,000 training images; later runs load them).
        quick: a 10,000-image subset and fewer batches.
        augkd_batches: timed batches for augkd (default: one epoch; 20 when quick).
        anchor_batches: timed batches for the anchor (default 20; 5 when quick).
        threads: torch intra-op threads for the run (default: leave torch's setting).

    Returns:
        A JSON-ready dict: settings, the load time and whether it hit the cache, ``{contender: {"images_per_s",
        "images", "seconds"}}`` and ``ratio`` (augkd over the anchor).
    """
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cfg = DataConfig(
        root=str(root or default_archive()),
        cache_dir=cache_dir,
        image_size=32,
        subset_per_class=1000 if quick else 0,
        test_subset_per_class=10,
    )
    start = time.perf_counter()
    train, _ = build_datasets(cfg, quiet=True)
    load_seconds = time.perf_counter() - start

    loader = DeviceLoader(train, batch_size, shuffle=True, drop_last=True, seed=0, device=dev)
    augment = RandomCropFlip(32, padding=4, seed=0).to(dev)
    epoch_batches = len(loader) - 1  # the first batch is the warm-up
    augkd_batches = augkd_batches or (20 if quick else epoch_batches)
    anchor_batches = anchor_batches or (5 if quick else 20)

    report: dict[str, Any] = {
        "dataset": cfg.root,
        "train_images": len(train),
        "image_size": 32,
        "batch_size": batch_size,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "load_seconds": load_seconds,
        "cache_hit": train.cache_hit,
    }
    loader.set_epoch(1)
    report["augkd"] = _throughput(loader, augkd_batches, dev, lambda b: augment(b.images, b.indices, 1))
    loader.set_epoch(2)
    report["augkd_loader_only"] = _throughput(loader, augkd_batches, dev)

    from torchvision import transforms

    per_image = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])
    anchor = DataLoader(
        _PerImage(train.images, train.labels, per_image), batch_size=batch_size, shuffle=True, num_workers=0
    )
    report["torchvision"] = _throughput(anchor, anchor_batches, torch.device("cpu"))
    report["ratio"] = report["augkd"]["images_per_s"] / report["torchvision"]["images_per_s"]
    report["notes"] = (
        "augkd: DeviceLoader + RandomCropFlip (batched gather, counter RNG); torchvision: RandomCrop(32, padding=4) "
        "+ RandomHorizontalFlip per image tensor through DataLoader(num_workers=0). Same process, same images; "
        "absolute numbers depend on the machine's load, the ratio less so."
    )
    return report
