"""Per-step losses of one student trained three ways: live teacher, float32 cache, float16 cache.

Usage (from the repository root; the teacher is any augkd checkpoint, here the README demo run's best.pt):
    python results/teacher-cache-cpu/compare_losses.py TEACHER.pt OUT_DIR > results/teacher-cache-cpu/losses.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from torch import nn

from augkd.config import load_config
from augkd.train.config import TrainConfig
from augkd.train.loop import setup_run, train_one_epoch
from augkd.train.teacher_cache import build_teacher_cache

BASE = [
    "data.root=../shared/data/cifar10-jpg.zip",
    "data.cache_dir=.cache/augkd-test",  # the test suite's decoded copy
    "data.subset_per_class=100",  # 1,000 real CIFAR-10 training images
    "data.test_subset_per_class=10",
    "epochs=2",
    "batch_size=100",
    "amp=off",  # deterministic float32 on the CPU
    "threads=1",
    "augment.policy=geo-n2-m6",
    "kd.preset=cifar10",  # K=3, lambda=1, T=2
]


class StepRecorder(nn.Module):
    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task, self.steps = task, []

    def forward(self, *args):
        out = self.task(*args)
        self.steps.append([out["loss"].item(), out["kd_loss"].item()])
        return out


def losses(out: Path, *extra: str) -> list[list[float]]:
    cfg = load_config(TrainConfig, "configs/cifar10-demo.yaml", [*BASE, f"out_dir={out}", *extra])
    run = setup_run(cfg, quiet=True, overwrite=True)
    run.task = StepRecorder(run.task)
    for epoch in range(cfg.epochs):
        train_one_epoch(run, epoch, progress=False)
    return run.task.steps


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def main(teacher: str, out_dir: str) -> None:
    out = Path(out_dir)
    cfg = load_config(TrainConfig, "configs/cifar10-demo.yaml", [*BASE, f"out_dir={out}"])
    caches = {}
    for dtype in ("float32", "float16"):
        t0 = time.perf_counter()
        caches[dtype] = build_teacher_cache(
            cfg, out / f"cache-{dtype}", teacher=teacher, k=10, logits_dtype=dtype, quiet=True
        )
        caches[dtype]["build_s"] = time.perf_counter() - t0
    result = {"config": ["configs/cifar10-demo.yaml", *BASE], "teacher": teacher, "caches": caches, "runs": {}}
    for mode, weighting in (("renorm", "constant"), ("partial", "entropy")):
        kd = [f"kd.mode={mode}", f"kd.weighting={weighting}"]
        live = losses(out / "live", f"kd.teacher={teacher}", *kd)
        f32 = losses(out / "f32", f"kd.cache={out / 'cache-float32'}", *kd)
        f16 = losses(out / "f16", f"kd.cache={out / 'cache-float16'}", *kd)
        result["runs"][f"{mode}-{weighting}"] = {
            "steps": len(live),
            "max_abs_diff_live_vs_float32_cache": max_diff(live, f32),
            "max_abs_diff_float32_vs_float16_cache": max_diff(f32, f16),
            "live": live,
            "float32_cache": f32,
            "float16_cache": f16,
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
