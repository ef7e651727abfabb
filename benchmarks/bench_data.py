"""Input-pipeline throughput of augkd's in-memory path against torchvision's per-image transforms; prints JSON.

Usage:
    python benchmarks/bench_data.py                    # CIFAR-10 train, batch 512, CPU
    python benchmarks/bench_data.py --quick --threads 1
    python benchmarks/bench_data.py --device cuda
"""

from __future__ import annotations

import argparse
import json

from augkd.bench.data import run_data_benchmark


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="ImageFolder of 32x32 images (default: shared cifar10-jpg.zip)")
    parser.add_argument("--device", default="cpu", help="where augkd's batches go (cpu or cuda)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--cache-dir", default=".cache/augkd", help="decode cache (the first run decodes)")
    parser.add_argument("--quick", action="store_true", help="10,000-image subset, fewer batches")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    report = run_data_benchmark(
        args.root, args.batch_size, args.device, cache_dir=args.cache_dir, quick=args.quick, threads=args.threads
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
