"""``augkd bench kd``: a teacher at its own resolution is timed with the resize, from a library network too."""

from __future__ import annotations

import math

from augkd.bench.kd import run_kd_benchmark


def test_kd_benchmark_times_a_timm_teacher_at_its_own_size(cifar10_zip) -> None:
    report = run_kd_benchmark(
        "fastnet9", "timm:test_resnet", batch_size=8, repeats=1, amp="off", data_dir=cifar10_zip.parent, teacher_size=64
    )
    assert report["teacher"] == "timm:test_resnet" and (report["image_size"], report["teacher_size"]) == (32, 64)
    seconds = report["seconds"]
    assert "teacher_resize" in seconds  # only reported when the teacher has its own size
    assert all(s > 0 and math.isfinite(s) for s in seconds.values())
    # the KD step ran the teacher on the resized batch: its KD term is real, and the cached one is the same
    assert math.isfinite(report["kd_loss"]) and report["kd_loss"] > 0
    assert abs(report["kd_loss"] - report["cached_kd_loss"]) < 1e-5
