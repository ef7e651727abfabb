"""Where a live-KD training step's time goes inside augkd's trainer at 224 px (``augkd bench train``'s recipe).

Wraps :meth:`augkd.distill.teacher.Teacher.forward`, :meth:`augkd.data.pipeline.BatchPipeline.forward` (the
augmentation and normalization of the batch, in the training process) and the wait for the loader's next batch
with timers, and runs three one-epoch rounds of ``--steps`` steps (16 Imagewoof photos per step, the stream
loader with 2 workers, ``ra-n2-m9``) of crop + flip, RandAugment, and RandAugment with a live teacher, one torch
thread; prints each round's time, images/s and the three parts. What is left of a round is the student's
forward and backward pass and the optimizer. Made for the live-KD comparison at 224 px in results/README.md.

Usage:
    python benchmarks/profile_kd_teacher.py [--steps 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from augkd.bench.augment import default_data_dir
from augkd.bench.train import _AugkdRun, _base_config, _config, _make_teacher
from augkd.data import pipeline as pipeline_module
from augkd.distill import teacher as teacher_module

seconds = {"teacher": 0.0, "pipeline": 0.0, "loader": 0.0}


def _timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[key] += time.perf_counter() - start
        return out

    return wrapper


def _timed_batches(self: Any, loader: Any, epoch: int) -> Iterator[Any]:
    """``BatchPipeline.batches`` with the wait for each loader batch timed apart from the pipeline."""
    loader.set_epoch(epoch)
    batches = iter(loader)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        seconds["loader"] += time.perf_counter() - start
        if batch is None:
            return
        yield self(batch, epoch, loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="steps per round (default: 3)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher_module.Teacher.forward = _timed("teacher", teacher_module.Teacher.forward)
    pipeline_module.BatchPipeline.forward = _timed("pipeline", pipeline_module.BatchPipeline.forward)
    pipeline_module.BatchPipeline.batches = _timed_batches
    with tempfile.TemporaryDirectory() as tmp:
        base = _base_config(224, 16, args.steps, "fastnet9", default_data_dir(), ".cache/augkd", 2, tmp)
        base.update(amp="auto", channels_last=True, epochs=5)
        teacher = _make_teacher(base, Path(tmp))
        kd = [f"kd.teacher={teacher}", "kd.preset=cifar10"]
        contenders = (("plain", []), ("ra", ["augment.policy=ra-n2-m9"]), ("ra+kd", ["augment.policy=ra-n2-m9", *kd]))
        for name, overrides in contenders:
            run = _AugkdRun(_config(base, [f"name={name}", *overrides]), None)
            run.round(args.steps)  # warm-up
            for r in range(3):
                seconds.update(teacher=0.0, pipeline=0.0, loader=0.0)
                start = time.perf_counter()
                speed = run.round(args.steps)
                elapsed = time.perf_counter() - start
                parts = ", ".join(f"{key} {value / args.steps:.3f} s" for key, value in seconds.items())
                print(f"{name} round {r}: {elapsed / args.steps:.2f} s per step, {speed:.2f} img/s; per step: {parts}")


if __name__ == "__main__":
    main()
