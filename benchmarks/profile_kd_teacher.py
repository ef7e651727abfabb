"""Time the live teacher's forward passes inside augkd's trainer at 224 px (``augkd bench train``'s recipe).

Wraps :meth:`augkd.distill.teacher.Teacher.forward` with a timer and runs three one-epoch rounds of 3 steps (16
Imagewoof photos per step, the stream loader, ``ra-n2-m9``) without and with a live teacher, one thread; prints
each round's epoch time, images/s and the teacher's calls and seconds. Made for the live-KD gap at 224 px in
results/README.md.

Usage:
    python benchmarks/profile_kd_teacher.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from augkd.bench.augment import default_data_dir
from augkd.bench.train import _base_config, _config, _make_teacher
from augkd.distill import teacher as teacher_module
from augkd.train.loop import setup_run, train_one_epoch

calls = {"n": 0, "seconds": 0.0}
_forward = teacher_module.Teacher.forward


def _timed_forward(self, images):
    start = time.perf_counter()
    out = _forward(self, images)
    calls["seconds"] += time.perf_counter() - start
    calls["n"] += 1
    return out


def main() -> None:
    torch.set_num_threads(1)
    teacher_module.Teacher.forward = _timed_forward
    with tempfile.TemporaryDirectory() as tmp:
        base = _base_config(224, 16, 3, "fastnet9", default_data_dir(), ".cache/augkd", 2, tmp)
        base.update(amp="auto", channels_last=True, epochs=4)
        teacher = _make_teacher(base, Path(tmp))
        kd = [f"kd.teacher={teacher}", "kd.preset=cifar10"]
        for name, overrides in (("ra", ["augment.policy=ra-n2-m9"]), ("ra+kd", ["augment.policy=ra-n2-m9", *kd])):
            run = setup_run(_config(base, [f"name={name}", *overrides]), quiet=True)
            for epoch in range(3):
                calls.update(n=0, seconds=0.0)
                start = time.perf_counter()
                stats = train_one_epoch(run, epoch, progress=False)
                print(
                    f"{name} epoch {epoch}: {time.perf_counter() - start:.2f} s, {stats['images_per_s']:.2f} img/s, "
                    f"teacher {calls['n']} calls {calls['seconds']:.2f} s"
                )


if __name__ == "__main__":
    main()
