"""Cost of Mixup/CutMix on the batch pipeline, against timm's ``Mixup`` on the same batches; prints JSON.

Contenders, interleaved batch by batch in one process on the same real CIFAR-10 images (32 px, in memory):

- ``augkd_ra``: the training pipeline of ``ra-n2-m9`` alone (crop/flip, RandAugment, normalize);
- ``augkd_ra_mix``: the same plus augkd's mixing stage (``mixup=0.8``, ``cutmix=1.0``, every image mixed, timm's
  per-image ``elem`` semantics). Each image's partner is a training sample drawn by id and put through its own
  augmentation of that epoch, so the stage costs a second augmentation pass: this is the price of mixed images
  that do not depend on the batch;
- ``augkd_ra+timm_mixup``: ``augkd_ra``'s batch, then ``timm.data.Mixup(mode="elem")`` on it (partners are the
  batch flipped, as timm does: cheap, but a mixed image then depends on its batch).

Reported: images/s (median of ``--batches`` timed batches after one warm-up) and each contender's cost over
``augkd_ra`` (its time per image divided by ``augkd_ra``'s). One thread by default: on a shared 2-core machine torch's
threads wait on each other (see results/shared-cpu).

Usage:
    python benchmarks/bench_mix.py                    # batch 1024, 7 batches each
    python benchmarks/bench_mix.py --batch-size 256 --batches 11 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from timm.data import Mixup

from augkd.bench import cpu_name
from augkd.bench.augment import default_data_dir
from augkd.config import load_config
from augkd.data import build_datasets
from augkd.train.build import build_components
from augkd.train.config import TrainConfig


def _config(batch_size: int, *extra: str) -> TrainConfig:
    root = default_data_dir() / "cifar10-jpg.zip"
    overrides = [
        f"batch_size={batch_size}", "data.dataset=folder", f"data.root={root}", "data.image_size=32",
        "data.base_aug=crop-flip", "data.subset_per_class=1000", "augment.policy=ra-n2-m9", "amp=off", *extra,
    ]  # fmt: skip
    return load_config(TrainConfig, None, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=7, help="timed batches per contender (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    plain_cfg = _config(args.batch_size)
    datasets = build_datasets(plain_cfg.data, quiet=True)
    mixed_cfg = _config(args.batch_size, "augment.mixup=0.8", "augment.cutmix=1.0", "augment.mix_prob=1.0")
    plain = build_components(plain_cfg, datasets=datasets, loaders=("train",), quiet=True)
    mixed = build_components(mixed_cfg, datasets=datasets, loaders=("train",), quiet=True)
    timm_mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, mode="elem", label_smoothing=0.0, num_classes=10)
    loader = plain.train_loader
    loader.set_epoch(0)
    batches = [b for _, b in zip(range(args.batches + 1), loader)]

    def augkd_ra(batch, epoch):
        return plain.pipeline(batch, epoch, loader)

    def augkd_ra_mix(batch, epoch):
        return mixed.pipeline(batch, epoch, loader)

    def augkd_ra_timm_mixup(batch, epoch):
        out = plain.pipeline(batch, epoch, loader)
        return timm_mix(out.images, out.labels)

    contenders = {"augkd_ra": augkd_ra, "augkd_ra_mix": augkd_ra_mix, "augkd_ra+timm_mixup": augkd_ra_timm_mixup}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.no_grad():
        for i, batch in enumerate(batches):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn(batch, i)
                if i:  # the first batch warms up allocators and the kernel
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "images_per_s": {name: args.batch_size / t for name, t in median.items()},
        "cost_vs_augkd_ra": {name: t / median["augkd_ra"] for name, t in median.items()},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
