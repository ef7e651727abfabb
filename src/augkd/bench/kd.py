"""Cost of online knowledge distillation: a plain step, a KD step and the teacher's forward pass alone.

The teacher's forward pass is the floor of online KD (the soft-label cache of a later issue removes it).
The question this answers is whether the loss and bookkeeping add anything beyond it:
``kd_step / (plain_step + teacher_forward)`` should be close to 1.

The three measurements are interleaved (plain, teacher, KD, plain, ...) so that the machine's load drifts
over all three alike, and the medians are reported.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from augkd.bench.augment import default_data_dir, sample_images
from augkd.distill.loss import TopKKL
from augkd.distill.teacher import Teacher
from augkd.models import count_parameters, create_model
from augkd.train.loop import Normalize, resolve_amp
from augkd.train.task import ClassificationTask, DistillationTask

__all__ = ["run_kd_benchmark"]

_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def run_kd_benchmark(
    model: str = "fastnet9",
    teacher: str = "fastnet9",
    batch_size: int = 256,
    repeats: int = 10,
    *,
    k: int = 3,
    temperature: float = 2.0,
    amp: str = "auto",
    channels_last: bool = True,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Seconds per step of plain training, KD training and the teacher's forward pass, on real CIFAR-10 images.

    Args:
        model: the student (any registered 32x32 model).
        teacher: the teacher architecture (random weights: the cost does not depend on them).
        batch_size: images per step.
        repeats: timed rounds (each round times all three once).
        k: top-K of the KD loss.
        temperature: its temperature.
        amp: ``auto``, ``off`` or ``bf16`` (as the trainer's ``amp``).
        channels_last: as the trainer's ``channels_last``.
        data_dir: folder holding ``cifar10-jpg.zip`` (default: ``../shared/data``).
    """
    device = torch.device("cpu")
    amp_dtype = resolve_amp(amp, device)
    zip_path = Path(data_dir or default_data_dir()) / "cifar10-jpg.zip"
    images = sample_images(zip_path, batch_size)
    labels = torch.arange(batch_size) % 10
    indices = torch.arange(batch_size)
    x = Normalize(_CIFAR_MEAN, _CIFAR_STD, channels_last)(images)

    torch.manual_seed(0)
    student = create_model(model, num_classes=10)
    teacher_net = create_model(teacher, num_classes=10)
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher_net = teacher_net.to(memory_format=torch.channels_last)
    frozen = Teacher(teacher_net)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    plain_task = ClassificationTask()
    kd_task = DistillationTask(frozen, TopKKL(k, temperature), lam=1.0)

    def autocast() -> Any:
        return torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None)

    def step(task: torch.nn.Module) -> None:
        with autocast():
            out = task(student, x, labels, indices, 0)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    def teacher_forward() -> None:
        with autocast():
            frozen(x)

    runs = {
        "plain_step": lambda: step(plain_task),
        "teacher_forward": teacher_forward,
        "kd_step": lambda: step(kd_task),
    }
    for fn in runs.values():  # warm-up: oneDNN primitive creation, allocator
        fn()
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(v) for name, v in times.items()}
    floor = med["plain_step"] + med["teacher_forward"]
    # A sanity check that the KD step really ran the teacher: its loss differs from plain CE.
    with torch.no_grad(), autocast():
        kd_out = kd_task(student, x, labels, indices, 0)
        ce = F.cross_entropy(student(x).float(), labels)
    return {
        "student": model,
        "teacher": teacher,
        "student_params": count_parameters(student),
        "teacher_params": count_parameters(teacher_net),
        "batch_size": batch_size,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "seconds": med,
        "images_per_s": {name: batch_size / t for name, t in med.items()},
        "kd_over_plain": med["kd_step"] / med["plain_step"],
        "kd_over_plain_plus_teacher": med["kd_step"] / floor,
        "target_kd_over_plain_plus_teacher": 1.05,
        "kd_loss": float(kd_out["kd_loss"]),
        "task_loss": float(ce),
    }
