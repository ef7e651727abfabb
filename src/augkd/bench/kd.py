"""Cost of knowledge distillation: a plain step, a KD step, the teacher's forward pass alone and a cached KD step.

The teacher's forward pass is the floor of online KD. The first question is whether the loss and bookkeeping
add anything beyond it: ``kd_step / (plain_step + teacher_forward)`` should be close to 1. The soft-label cache
(:mod:`augkd.distill.cache`) removes the teacher: ``cached_kd_step / plain_step`` should be at most 1.05. The
cache holds a CIFAR-10-sized epoch (50,000 rows) and each step reads a random batch of rows from it.

A teacher at its own resolution (``teacher_size``, as ``kd.teacher_size``) sees the student's batch resized on the
device (bilinear, antialiased): ``teacher_resize`` (reported only then) is that resize alone, and
``teacher_forward`` and ``kd_step`` include it. The teacher may be any augkd model or a ``timm:NAME`` /
``torchvision:NAME`` network.

The measurements are interleaved (plain, teacher, KD, cached, lookup, plain, ...) so that the machine's load
drifts over all of them alike, and the medians are reported. ``cache_lookup`` is the cache read alone (a gather of
the batch's rows): on a loaded machine, where step times scatter, ``(plain_step + cache_lookup) / plain_step``
is the steadier estimate of what the cache adds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from augkd.bench import interleaved_medians
from augkd.bench.augment import default_data_dir, sample_images
from augkd.data.pipeline import Normalize
from augkd.distill.cache import CacheLayout, TeacherCache, prepare_cache_dir, write_epoch
from augkd.distill.loss import TeacherTopK, TopKKL, teacher_top_k
from augkd.distill.task import CachedDistillationTask, ClassificationTask, DistillationTask
from augkd.distill.teacher import Teacher
from augkd.models import count_parameters, create_model
from augkd.models.external import create_external, external_name
from augkd.train.build import amp_name, resolve_amp

__all__ = ["run_kd_benchmark"]

_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CACHE_ROWS = 50_000


def _write_bench_cache(root: Path, top: TeacherTopK, indices: torch.Tensor, temperature: float) -> TeacherCache:
    """A one-epoch cache of ``_CACHE_ROWS`` samples holding ``top`` at the rows ``indices`` (the rest zeros)."""
    k = top.indices.shape[1]
    layout = CacheLayout(_CACHE_ROWS, k, 10)
    header = {"key": {}, "k": k, "temperature": temperature, "num_classes": 10, "rows": _CACHE_ROWS}
    header = {**header, "logits_dtype": "float32"}
    prepare_cache_dir(root, header, torch.arange(_CACHE_ROWS))
    top_idx = torch.arange(k).expand(_CACHE_ROWS, k).clone()  # rows no batch reads still hold a valid top-K list
    top_val = torch.zeros(_CACHE_ROWS, k)
    stats = torch.zeros(_CACHE_ROWS, 4)
    top_idx[indices], top_val[indices] = top.indices, top.logits
    stats[indices] = torch.stack([top.lse, top.lse, top.entropy, top.log_p_label], dim=1)
    write_epoch(root, 0, layout, top_idx, top_val, stats, header)
    return TeacherCache(root)


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
    teacher_size: int | None = None,
) -> dict[str, Any]:
    """Seconds per step of plain training, live and cached KD training and the teacher's forward pass alone,
    on real CIFAR-10 images.

    Args:
        model: the student (any registered 32x32 model).
        teacher: the teacher architecture (random weights: the cost does not depend on them).
        batch_size: images per step.
        repeats: timed rounds (each round times every case once).
        k: top-K of the KD loss.
        temperature: its temperature.
        amp: ``auto``, ``off`` or ``bf16`` (as the trainer's ``amp``).
        channels_last: as the trainer's ``channels_last``.
        data_dir: folder holding ``cifar10-jpg.zip`` (default: ``../shared/data``).
        teacher_size: the teacher's input size (None: the student's 32 px); the batch is resized to it.
    """
    device = torch.device("cpu")
    amp_dtype = resolve_amp(amp, device)
    zip_path = Path(data_dir or default_data_dir()) / "cifar10-jpg.zip"
    images = sample_images(zip_path, batch_size)
    labels = torch.arange(batch_size) % 10
    indices = torch.randperm(_CACHE_ROWS, generator=torch.Generator().manual_seed(0))[:batch_size]
    x = Normalize(_CIFAR_MEAN, _CIFAR_STD, channels_last)(images)

    torch.manual_seed(0)
    student = create_model(model, num_classes=10)
    external = external_name(teacher)
    teacher_net = create_external(*external, 10) if external else create_model(teacher, num_classes=10)
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
        teacher_net = teacher_net.to(memory_format=torch.channels_last)
    frozen = Teacher(teacher_net, size=teacher_size)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    plain_task = ClassificationTask()
    kd_task = DistillationTask(frozen, TopKKL(k, temperature), lam=1.0)

    def autocast() -> Any:
        return torch.autocast("cpu", dtype=amp_dtype, enabled=amp_dtype is not None)

    tmp = tempfile.TemporaryDirectory(prefix="augkd-bench-cache-")  # removed at the end (or when collected)
    with autocast():
        top = teacher_top_k(frozen(x), k, temperature, labels)
    cache = _write_bench_cache(Path(tmp.name) / "cache", top, indices, temperature)
    cached_task = CachedDistillationTask(cache, TopKKL(k, temperature), lam=1.0)

    def step(task: torch.nn.Module) -> None:
        with autocast():
            out = task(student, x, labels, indices, 0)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    def teacher_forward() -> None:
        with autocast():
            frozen(x)

    def teacher_resize() -> None:
        F.interpolate(x, size=(teacher_size, teacher_size), mode="bilinear", antialias=True)

    runs = {
        "plain_step": lambda: step(plain_task),
        **({"teacher_resize": teacher_resize} if teacher_size else {}),
        "teacher_forward": teacher_forward,
        "kd_step": lambda: step(kd_task),
        "cached_kd_step": lambda: step(cached_task),
        "cache_lookup": lambda: cache.lookup(0, indices, k, temperature),
    }
    med = interleaved_medians(runs, rounds=repeats, warmup=2)  # warm-up: oneDNN primitive creation, allocator
    floor = med["plain_step"] + med["teacher_forward"]
    # A sanity check that the KD step really ran the teacher: its loss differs from plain CE.
    with torch.no_grad(), autocast():
        kd_out = kd_task(student, x, labels, indices, 0)
        cached_out = cached_task(student, x, labels, indices, 0)
        ce = F.cross_entropy(student(x).float(), labels)
    tmp.cleanup()
    return {
        "student": model,
        "teacher": teacher,
        "student_params": count_parameters(student),
        "teacher_params": count_parameters(teacher_net),
        "image_size": int(x.shape[-1]),
        "teacher_size": teacher_size or int(x.shape[-1]),
        "batch_size": batch_size,
        "amp": amp_name(amp_dtype),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "seconds": med,
        "images_per_s": {name: batch_size / t for name, t in med.items()},
        "kd_over_plain": med["kd_step"] / med["plain_step"],
        "kd_over_plain_plus_teacher": med["kd_step"] / floor,
        "target_kd_over_plain_plus_teacher": 1.05,
        "cached_over_plain": med["cached_kd_step"] / med["plain_step"],
        "target_cached_over_plain": 1.05,
        "cache_bytes_per_sample": cache.bytes_per_sample,
        "kd_loss": float(kd_out["kd_loss"]),
        "cached_kd_loss": float(cached_out["kd_loss"]),
        "task_loss": float(ce),
    }
