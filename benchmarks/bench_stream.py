"""Throughput of the stream loader (data.loader=stream) against torchvision's ImageFolder pipeline; prints JSON.

Both contenders read the same JPEGs with the same number of DataLoader workers and make the same uint8 training
crops (random resized crop, antialiased bilinear, horizontal flip) in batches of the config's size:

- ``augkd_stream``: :class:`augkd.data.stream.StreamLoader` (crops replayable from (seed, epoch, sample id));
- ``torchvision``: ``datasets.ImageFolder`` with ``torchvision.io.decode_image`` and ``transforms.v2``
  ``RandomResizedCrop`` + ``RandomHorizontalFlip`` (the anchor).

Each contender runs ``--epochs`` epochs; the best epoch's images/s is reported (the first includes worker start).
On a busy machine only the ratio means something.

Usage:
    python benchmarks/bench_stream.py                                   # configs/imagewoof-b0.yaml, 2 workers
    python benchmarks/bench_stream.py --workers 8 data.image_size=224
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import v2

from augkd.config import load_config
from augkd.data import build_stream_loaders
from augkd.data.archive import resolve_root
from augkd.data.folder import resolve_split
from augkd.train.config import TrainConfig


def _read(path: str) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points image IO to torchcodec
        return decode_image(read_file(path), mode=ImageReadMode.RGB)


def _timed(epochs: int, run_epoch) -> dict[str, float]:
    rates = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        n = run_epoch(epoch)
        rates.append(n / (time.perf_counter() - t0))
    return {"images_per_s": round(max(rates), 1), "per_epoch": [round(r, 1) for r in rates]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/imagewoof-b0.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = load_config(TrainConfig, args.config, [*args.overrides, f"data.workers={args.workers}"])
    torch.set_num_threads(1)
    size, batch = cfg.data.image_size, cfg.batch_size

    train, _ = build_stream_loaders(cfg.data, batch, cfg.eval_batch_size, seed=cfg.seed)

    def augkd_epoch(epoch: int) -> int:
        train.set_epoch(epoch)
        return sum(len(b.labels) for b in train)

    root = resolve_root(cfg.data.root, cfg.data.cache_dir) / resolve_split(
        resolve_root(cfg.data.root, cfg.data.cache_dir), cfg.data.train_split
    )
    transform = v2.Compose([v2.RandomResizedCrop(size, scale=(cfg.data.rrc_scale_min, 1.0)), v2.RandomHorizontalFlip()])
    anchor = datasets.ImageFolder(str(root), transform=transform, loader=_read)
    tv = DataLoader(anchor, batch, shuffle=True, drop_last=True, num_workers=args.workers, persistent_workers=True)

    def tv_epoch(epoch: int) -> int:
        return sum(len(y) for _, y in tv)

    report = {
        "config": args.config,
        "images": len(train.dataset),
        "image_size": size,
        "batch_size": batch,
        "workers": args.workers,
        "augkd_stream": _timed(args.epochs, augkd_epoch),
        "torchvision": _timed(args.epochs, tv_epoch),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
    }
    report["ratio_augkd_over_torchvision"] = round(
        report["augkd_stream"]["images_per_s"] / report["torchvision"]["images_per_s"], 2
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
