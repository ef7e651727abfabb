"""``augkd plan``: what a config will cost on N GPUs, from a short measured calibration on this device.

The calibration builds the run exactly as :func:`~augkd.train.loop.train` would (model at full width, optimizer,
augmentation policy, KD teacher, EMA) with the per-device batch ``batch_size / N``, feeds it random uint8 images
of the configured size (the data itself is not needed), runs a few warm-up steps and then times a few more.
From that it reports

- **memory per device**: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over set-up and the timed steps
  (model, optimizer state, teacher, activations); on the CPU the growth of the process's peak resident memory,
  a rough stand-in for what a GPU would need;
- **images/s per device** of training steps (augmentation included) and of evaluation;
- **images/s on N devices**: per device x N x ``efficiency`` (linear scaling times a factor for communication
  and input pipelines; 1.0 = perfectly linear, which DDP approaches for these convolutional nets but never
  passes);
- **wall time**: ``epochs`` passes over the training set (full global batches, as the loader drops the last
  partial one) plus the configured evaluation passes;
- **teacher cache size**: the epoch files ``augkd teacher-cache`` would write for this run (its training set,
  epochs and ``kd.k``) in both layouts, and, for scale, for ImageNet-1k over 300 epochs at K=10 (no
  calibration: the sizes follow from :class:`~augkd.distill.cache.CacheLayout`).

The dataset size comes from the config's data (scanned, not decoded) or, when it is absent, from the known
sizes of CIFAR and ImageNet-1k (said so in the notes). Numbers measured on a CPU predict nothing about a GPU:
run ``augkd plan`` on one GPU of the kind you mean to rent.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from augkd.data import DeviceLoader, InMemoryDataset, describe_dataset
from augkd.distill.cache import LOGITS_DTYPES, CacheLayout
from augkd.models import count_parameters
from augkd.train.build import RunError, amp_name, resolve_device
from augkd.train.config import TrainConfig
from augkd.train.distributed import DistEnv, per_rank_batch
from augkd.train.dryrun import (
    check_teacher_cache,
    install_stand_in_teacher,
    stand_in_description,
    teacher_stand_in_reason,
)
from augkd.train.loop import evaluate, setup_run, train_one_epoch

__all__ = ["KNOWN_SIZES", "data_sizes", "format_plan", "plan", "teacher_cache_size"]

#: (train images, eval images, classes) of datasets whose size is known without their files.
KNOWN_SIZES: dict[str, tuple[int, int, int]] = {
    "cifar10": (50_000, 10_000, 10),
    "cifar100": (50_000, 10_000, 100),
    "imagenet": (1_281_167, 50_000, 1000),
}


def data_sizes(cfg: TrainConfig) -> dict[str, Any]:
    """``{"train_images", "eval_images", "num_classes", "source"}`` of the config's data.

    CIFAR kinds use their known sizes (with ``subset_per_class`` applied); folder datasets are scanned (no
    decoding); a folder that does not exist here is taken to be ImageNet-1k, and ``source`` says so.
    """
    data = cfg.data
    if data.dataset in ("cifar10", "cifar100"):
        train, test, classes = KNOWN_SIZES[data.dataset]
        source = f"{data.dataset} (known size)"
    else:
        try:
            info = describe_dataset(data, prepare=False)
        except FileNotFoundError:
            train, test, classes = KNOWN_SIZES["imagenet"]
            return {
                "train_images": train,
                "eval_images": test,
                "num_classes": classes,
                "source": f"assumed ImageNet-1k: {data.root} is not on this machine",
            }
        return {
            "train_images": info["train"]["num_images"],
            "eval_images": info["eval"]["num_images"],
            "num_classes": info["num_classes"],
            "source": f"scanned {data.root}",
        }
    if data.subset_per_class:
        train = min(train, data.subset_per_class * classes)
    if data.test_subset_per_class:
        test = min(test, data.test_subset_per_class * classes)
    return {"train_images": train, "eval_images": test, "num_classes": classes, "source": source}


#: The reference teacher cache ``augkd plan`` prints beside the run's: ImageNet-1k, 300 epochs, K=10.
REFERENCE_CACHE = {
    "name": "ImageNet-1k",
    "rows": KNOWN_SIZES["imagenet"][0],
    "epochs": 300,
    "k": 10,
    "num_classes": KNOWN_SIZES["imagenet"][2],
}


def teacher_cache_size(rows: int, epochs: int, k: int, num_classes: int) -> dict[str, Any]:
    """Bytes of a teacher cache's epoch files in each layout: ``{"rows", "epochs", "k", "num_classes",
    "float32": {"bytes_per_sample", "bytes"}, "float16": {...}}`` (``bytes``: ``epochs`` sealed epoch files, as
    ``augkd teacher-cache`` reports them; the header and ``sample_ids.npy`` add about ``8 * rows``)."""
    sizes: dict[str, Any] = {"rows": rows, "epochs": epochs, "k": k, "num_classes": num_classes}
    for dtype in LOGITS_DTYPES:
        layout = CacheLayout(rows, k, num_classes, dtype)
        sizes[dtype] = {"bytes_per_sample": layout.bytes_per_sample, "bytes": epochs * layout.epoch_bytes}
    return sizes


def _class_names(cfg: TrainConfig, num_classes: int) -> list[str]:
    """The data's class names where a ``kd.class_map`` needs them (scanned, not decoded), else placeholders."""
    if cfg.kd.class_map and cfg.data.dataset == "folder":
        try:
            return list(describe_dataset(cfg.data, prepare=False)["classes"])
        except FileNotFoundError:
            pass
    return [f"class{i}" for i in range(num_classes)]


def _random_set(n: int, size: int, classes: list[str], seed: int) -> InMemoryDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, len(classes), (n,), generator=g)
    return InMemoryDataset(images, labels, classes, name="calibration")


def _rss_bytes() -> int:
    """Current resident memory of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize()


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _eval_passes(epochs: int, every: int) -> int:
    """Evaluation passes of a run: every ``every`` epochs, and after the last."""
    return sum(1 for e in range(1, epochs + 1) if e % every == 0 or e == epochs)


def plan(
    cfg: TrainConfig,
    gpus: int,
    steps: int = 5,
    warmup: int = 2,
    efficiency: float = 1.0,
    batch_per_device: int | None = None,
) -> dict[str, Any]:
    """Calibrate ``cfg`` on this device and predict its cost on ``gpus`` devices.

    Args:
        cfg: the run's config (its ``batch_size`` is the global batch).
        gpus: devices the run will use (one process each, ``torchrun --nproc_per_node``, nodes x GPUs).
        steps: timed training steps.
        warmup: untimed steps first (allocator, cuDNN autotuning, lazy initialization).
        efficiency: the fraction of linear scaling expected on ``gpus`` devices.
        batch_per_device: calibrate with this per-device batch instead of ``batch_size / gpus`` (say, to fit
            a small CPU); the memory figure is then for that batch.

    Returns:
        The plan as plain data (see :func:`format_plan` for the meaning of each entry).

    Raises:
        RunError: bad ``gpus``, ``steps``, ``efficiency``, or a global batch that does not split over ``gpus``.
    """
    if gpus < 1 or steps < 1 or warmup < 0:
        raise RunError(f"need --gpus >= 1, --steps >= 1, --warmup >= 0; got {gpus}, {steps}, {warmup}")
    if not 0 < efficiency <= 1:
        raise RunError(f"--efficiency must be in (0, 1]; got {efficiency}")
    notes: list[str] = []
    if warmup == 0:
        notes.append(
            "--warmup 0: the timed steps include one-time costs (lazy initialization, allocator, autotuning), so "
            "the speeds are too low and the wall time too long; keep --warmup >= 1 for figures to plan with"
        )
    per_device = per_rank_batch(cfg.batch_size, DistEnv(world_size=gpus))
    if batch_per_device is not None:
        if batch_per_device < 1:
            raise RunError(f"--batch-per-device must be >= 1; got {batch_per_device}")
        if batch_per_device != per_device:
            notes.append(f"calibrated with {batch_per_device} images per device instead of the run's {per_device}")
        per_device = batch_per_device
    sizes = data_sizes(cfg)
    eval_per_device = max(1, min(per_device, cfg.eval_batch_size // gpus))
    device = resolve_device(cfg.device)
    size, eval_size = cfg.data.image_size, cfg.data.resolved_eval_size
    classes = _class_names(cfg, sizes["num_classes"])
    train_set = _random_set(max(warmup, 1) * per_device, size, classes, 0)
    timed_set = _random_set(steps * per_device, size, classes, 1)
    eval_set = _random_set(2 * eval_per_device, eval_size, classes, 2)
    cached = bool(cfg.kd.cache)
    cfg = check_teacher_cache(cfg, sizes["num_classes"], notes)
    missing = teacher_stand_in_reason(cfg)
    stand_in = cached or missing is not None
    run_cfg = dataclasses.replace(
        cfg,
        batch_size=per_device,
        eval_batch_size=eval_per_device,
        kd=dataclasses.replace(cfg.kd, teacher="") if stand_in else cfg.kd,
    )

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)
    rss_before = _rss_bytes()
    run = setup_run(run_cfg, quiet=True, overwrite=True, datasets=(train_set, eval_set))
    if stand_in:
        if missing:
            notes.append(f"{missing}: timed with {stand_in_description(cfg)} as teacher")
        install_stand_in_teacher(cfg, run, notes)
    if warmup:
        train_one_epoch(run, 0, progress=False)
    run.train_loader = DeviceLoader(
        timed_set, per_device, shuffle=True, drop_last=True, seed=cfg.stream_seed, device=device
    )
    _sync(device)
    t0 = time.perf_counter()
    train_one_epoch(run, 1, progress=False)
    _sync(device)
    train_s = time.perf_counter() - t0
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) - base_alloc
        memory_how = "torch.cuda.max_memory_allocated over set-up and the timed steps"
    else:
        memory = max(0, _peak_rss_bytes() - rss_before)
        memory_how = "growth of the process's peak resident memory, a rough stand-in for GPU memory"

    eval_models = [run.model] + ([run.ema.module] if run.ema is not None else [])
    evaluate(run.model, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    evaluate(run.model, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
    _sync(device)
    eval_s = time.perf_counter() - t0

    train_ips = steps * per_device / train_s
    eval_ips = len(eval_set) / eval_s
    cluster_ips = train_ips * gpus * efficiency
    steps_per_epoch = sizes["train_images"] // cfg.batch_size
    if steps_per_epoch == 0:
        raise RunError(f"batch_size={cfg.batch_size} is larger than the {sizes['train_images']} training images")
    epoch_s = steps_per_epoch * cfg.batch_size / cluster_ips
    passes = _eval_passes(cfg.epochs, cfg.eval_every)
    eval_pass_s = len(eval_models) * sizes["eval_images"] / (eval_ips * gpus * efficiency)
    total_s = cfg.epochs * epoch_s + passes * eval_pass_s
    if device.type != "cuda":
        notes.append("measured on the CPU: run augkd plan on one GPU of the kind you will rent for GPU figures")
    return {
        "name": cfg.name,
        "model": cfg.model.name,
        "params": count_parameters(run.model),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": amp_name(run.amp_dtype),
        "gpus": gpus,
        "global_batch": cfg.batch_size,
        "batch_per_device": per_device,
        "image_size": size,
        "calibration": {"warmup_steps": warmup, "timed_steps": steps, "train_s": train_s, "eval_s": eval_s},
        "memory_per_device_bytes": int(memory),
        "memory_how": memory_how,
        "train_images_per_s_per_device": train_ips,
        "eval_images_per_s_per_device": eval_ips,
        "efficiency": efficiency,
        "train_images_per_s": cluster_ips,
        "scaling": f"linear: per device x {gpus} x efficiency {efficiency}",
        "data": sizes,
        "epochs": cfg.epochs,
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": epoch_s,
        "eval_passes": passes,
        "eval_pass_s": eval_pass_s,
        "wall_time_s": total_s,
        "device_hours": total_s * gpus / 3600.0,
        "teacher_cache": {
            "run": teacher_cache_size(
                sizes["train_images"], cfg.epochs, min(cfg.kd.k, sizes["num_classes"]), sizes["num_classes"]
            ),
            "reference": {
                "name": REFERENCE_CACHE["name"],
                **teacher_cache_size(
                    REFERENCE_CACHE["rows"],
                    REFERENCE_CACHE["epochs"],
                    REFERENCE_CACHE["k"],
                    REFERENCE_CACHE["num_classes"],
                ),
            },
        },
        "notes": notes,
    }


def _devices(n: int) -> str:
    return f"{n} device" if n == 1 else f"{n} devices"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _cache_line(c: dict[str, Any]) -> str:
    """``13.6 MB in float32 (34 B per sample-epoch), 6.4 MB in float16 (16 B)``."""
    f32, f16 = c["float32"], c["float16"]
    return (
        f"{_size(f32['bytes'])} in float32 ({f32['bytes_per_sample']} B per sample-epoch), "
        f"{_size(f16['bytes'])} in float16 ({f16['bytes_per_sample']} B)"
    )


def format_plan(p: dict[str, Any]) -> str:
    """The lines ``augkd plan`` prints."""
    gib = p["memory_per_device_bytes"] / 2**30
    d = p["data"]
    lines = [
        f"augkd plan: {p['name']} ({p['model']}, {p['params'] / 1e6:.1f}M params) on {_devices(p['gpus'])}: "
        f"global batch {p['global_batch']} = {p['gpus']} x {p['global_batch'] // p['gpus']}, {p['image_size']} px",
        f"  calibrated on {p['device_name']} (amp {p['amp']}): {p['calibration']['timed_steps']} steps of "
        f"{p['batch_per_device']} after {p['calibration']['warmup_steps']} warm-up steps",
        f"  memory per device: {gib:.2f} GiB: {p['memory_how']}",
        f"  per device: {p['train_images_per_s_per_device']:.1f} train img/s (augmentation and KD included), "
        f"{p['eval_images_per_s_per_device']:.1f} eval img/s",
        f"  on {_devices(p['gpus'])}: {p['train_images_per_s']:.1f} img/s ({p['scaling']})",
        f"  data: {d['train_images']:,} train / {d['eval_images']:,} eval images, {d['num_classes']} classes "
        f"({d['source']})",
        f"  wall time: {p['epochs']} epochs x {p['steps_per_epoch']:,} steps = {_duration(p['epochs'] * p['epoch_s'])}"
        f" training + {p['eval_passes']} evaluations x {_duration(p['eval_pass_s'])} = "
        f"{_duration(p['wall_time_s'])} ({p['device_hours']:,.1f} device-hours)",
    ]
    run, ref = p["teacher_cache"]["run"], p["teacher_cache"]["reference"]
    lines += [
        f"  teacher cache of this run (K={run['k']}, {run['rows']:,} images x {run['epochs']} epochs): "
        f"{_cache_line(run)}",
        f"  teacher cache for {ref['name']} ({ref['rows']:,} images x {ref['epochs']} epochs, K={ref['k']}): "
        f"{_cache_line(ref)}",
    ]
    lines += [f"  note: {n}" for n in p["notes"]]
    return "\n".join(lines)
