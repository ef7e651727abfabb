"""Augmentation throughput of augkd against torchvision, timm and kornia; prints JSON.

Usage:
    python benchmarks/bench_augment.py                 # 32 px (batch 1024) and 224 px (batch 128) on the CPU
    python benchmarks/bench_augment.py --device cuda --spec aa-cifar10 --sizes 32
"""

from __future__ import annotations

import argparse
import json

import torch

from augkd.bench.augment import run_augment_benchmark


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timm always runs per PIL image on the CPU)")
    parser.add_argument("--spec", default="ra-n2-m9", help="augkd policy spec, e.g. ra-n2-m9, aa-cifar10, geo-n2-m5")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224], choices=[32, 224], help="image sizes")
    parser.add_argument("--batch-size", type=int, default=None, help="default 1024 at 32 px, 128 at 224 px")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per contender (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        str(size): run_augment_benchmark(
            image_size=size, batch_size=args.batch_size, device=args.device, spec=args.spec, repeats=args.repeats
        )
        for size in args.sizes
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
