"""Whole training steps: augkd's trainer against timm's pipeline (same network, data, optimizer); prints JSON.

Usage:
    python benchmarks/bench_train.py                   # 32 px (CIFAR-10, batch 256) and 224 px (Imagewoof, 32)
    python benchmarks/bench_train.py --sizes 32 --steps 8 --rounds 3 --threads 2
"""

from __future__ import annotations

import argparse
import json

import torch

from augkd.bench.train import run_train_benchmark


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 224], choices=[32, 224], help="image sizes")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per contender (median reported)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 at 32 px, 32 at 224 px")
    parser.add_argument("--model", default="fastnet9", help="student and teacher network")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        str(size): run_train_benchmark(
            size, steps=args.steps, rounds=args.rounds, batch_size=args.batch_size, model=args.model
        )
        for size in args.sizes
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
