"""``augkd train --dry-run``: build everything a config asks for and run one training step on a tiny real batch.

What it builds is what :func:`~augkd.train.loop.train` builds (model at full width, optimizer, augmentation
policy, normalization, KD task, EMA), through the same :func:`~augkd.train.loop.setup_run`; what it leaves out
is the cost:

- the data: one image per class of each split is decoded (``data.subset_per_class=1``), and a batch of at most
  :data:`DRY_RUN_BATCH` of them makes the one step; the evaluation pass is one batch as well;
- the teacher: when ``kd.teacher`` names no file yet (the paper configs carry a placeholder), a randomly
  initialized copy of the student stands in, so the KD loss still runs (``kd.k`` is checked against the classes
  of the real data, as the run would: set ``kd.k`` too when trying an ImageNet config on 10-class data); a
  ``timm:``/``torchvision:`` teacher whose weights are not here yet is that very network with random weights
  (its size, normalization and ``kd.class_map`` as the run will have them);
- a teacher cache (``kd.cache``): its header is checked against the config (augmentation, seed, autocast,
  teacher, K, T, ``kd.mode``, classes, epochs) and every epoch file the run needs against its seal (size, epoch
  and key; not hashed, that waits for the run's first read), by :func:`check_teacher_cache`. The stand-in data
  cannot match the cache's training-set fingerprint, so that one entry is left to the real run, and the step
  runs with a random copy of the student as live teacher;
- the run folder: nothing is written there (the decoded-image cache in ``data.cache_dir`` is filled as usual).

Every such substitution is listed in the result's ``notes``. Pass ``data.*`` overrides to try a config on other
data (``data.root=<imagewoof zip> data.image_size=64`` for an ImageNet config on a laptop).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import torch

from augkd.checkpoint import CheckpointError
from augkd.data import InMemoryDataset, build_datasets, dataset_stats
from augkd.distill.cache import CacheError, TeacherCache, cache_key
from augkd.distill.teacher import RANDOM_WEIGHTS, Teacher, load_teacher, teacher_fingerprint, teacher_missing
from augkd.models import count_parameters
from augkd.train.build import (
    RunError,
    amp_name,
    build_distillation_task,
    check_cache_serves_run,
    loader_key,
    pipeline_key,
    resolve_amp,
    resolve_device,
    teacher_spec,
)
from augkd.train.config import TrainConfig
from augkd.train.loop import evaluate, setup_run, train_one_epoch
from augkd.train.run import Run

__all__ = [
    "DRY_RUN_BATCH",
    "check_teacher_cache",
    "dry_run",
    "format_dry_run",
    "install_stand_in_teacher",
    "stand_in_description",
    "teacher_stand_in_reason",
]

#: Images in the one training step of a dry run (fewer when the tiny dataset has fewer).
DRY_RUN_BATCH = 4


def _pick(dataset: InMemoryDataset, n: int, seed: int) -> InMemoryDataset:
    """``n`` rows of ``dataset`` drawn without replacement (seeded), so the batch mixes classes."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return dataset.select(order[: min(n, len(dataset))])


def install_stand_in_teacher(cfg: TrainConfig, run: Run, notes: list[str]) -> None:
    """Give ``run`` the KD task of ``cfg.kd`` with a stand-in teacher (no file needed).

    Used where the real teacher's weights are not here yet (dry runs, cost calibration): a random copy of the
    student, or for a ``timm:``/``torchvision:`` teacher that network with random weights at its own size and
    normalization. The teacher's forward pass and the top-K KL then cost what they will cost in the real run.
    """
    num_classes = len(run.classes)
    if cfg.kd.k > num_classes:
        notes.append(f"kd.k={cfg.kd.k} is more than the {num_classes} classes of this data: K={num_classes} here")
        cfg = dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, k=num_classes))
    stats = dataset_stats(cfg.data)
    norm = (stats["mean"], stats["std"])
    spec = teacher_spec(cfg) if cfg.kd.teacher else None
    if spec is not None and spec.source != "checkpoint":
        try:
            stand_in = dataclasses.replace(spec, weights=RANDOM_WEIGHTS)
            teacher = load_teacher(stand_in, run.classes, run.device, norm, channels_last=cfg.channels_last)
        except (ValueError, CheckpointError) as exc:
            raise RunError(f"kd.teacher: {exc}") from None
    else:
        teacher = Teacher(copy.deepcopy(run.model))
    run.task = build_distillation_task(cfg, num_classes, run.device, norm, teacher=teacher)


def teacher_stand_in_reason(cfg: TrainConfig) -> str | None:
    """Why ``cfg``'s teacher cannot be loaded yet (a stand-in takes its place), or None (it can, or no KD)."""
    if not cfg.kd.enabled or not cfg.kd.teacher:
        return None
    return teacher_missing(teacher_spec(cfg))


def stand_in_description(cfg: TrainConfig) -> str:
    """What stands in for ``cfg``'s missing teacher, in words."""
    if cfg.kd.teacher and teacher_spec(cfg).source != "checkpoint":
        return f"{cfg.kd.teacher} with random weights"
    return "a random copy of the student"


def check_teacher_cache(cfg: TrainConfig, num_classes: int, notes: list[str]) -> TrainConfig:
    """Check ``kd.cache`` for the run ``cfg`` without its training set; return ``cfg`` for a stand-in teacher.

    Everything :meth:`~augkd.distill.cache.TeacherCache.check` compares is compared but the training-set
    fingerprint (dry runs and cost calibration build stand-in data); the epoch files are checked against their
    seals without hashing. A config without ``kd.cache`` comes back unchanged.

    Returns:
        ``cfg`` with ``kd.cache`` and ``kd.teacher`` cleared (the caller installs a stand-in teacher).

    Raises:
        RunError: the cache cannot serve the run (one line naming the file or the key).
    """
    if not cfg.kd.cache:
        return cfg
    try:
        cache = TeacherCache(cfg.kd.cache)
        known = cfg.kd.teacher and teacher_missing(teacher_spec(cfg)) is None
        teacher_id = teacher_fingerprint(teacher_spec(cfg)) if known else None
        amp_dtype = resolve_amp(cfg.amp, resolve_device(cfg.device))
        key = cache_key(pipeline_key(cfg), cache.header["key"].get("dataset"), amp_dtype, teacher_id, loader_key(cfg))
        check_cache_serves_run(cache, cfg, key, num_classes)
    except (CacheError, CheckpointError, ValueError) as exc:
        raise RunError(f"kd.cache: {exc}") from None
    info = cache.header.get("dataset", {})
    notes.append(
        f"kd.cache {cfg.kd.cache}: header and the {cfg.epochs} epoch files the run reads check out (training set "
        f"{info.get('name')}/{info.get('split')}, {info.get('num_images')} images, compared by the real run); "
        "the step uses a random copy of the student as teacher"
    )
    return dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, cache="", teacher=""))


def dry_run(cfg: TrainConfig, batch_size: int = DRY_RUN_BATCH, quiet: bool = True) -> dict[str, Any]:
    """Build the run ``cfg`` describes and take one optimizer step and one evaluation batch on real images.

    Args:
        cfg: the run's config (as ``augkd train`` would get it, overrides applied).
        batch_size: images of the training step (at most ``cfg.batch_size``).
        quiet: no progress bars while decoding.

    Returns:
        ``{"model", "params", "device", "amp", "policy", "batch_shape", "num_classes", "loss", "losses",
        "step_s", "eval_top1", "kd", "notes"}``; ``losses`` holds every ``train_*loss`` of the step.

    Raises:
        RunError, ConfigError, FileNotFoundError, ValueError: what the real run would raise while building.
    """
    notes: list[str] = []
    data = cfg.data
    if data.subset_per_class != 1 or data.test_subset_per_class != 1:
        data = dataclasses.replace(data, subset_per_class=1, test_subset_per_class=1)
    train_full, eval_full = build_datasets(data, quiet=quiet)
    batch = min(batch_size, cfg.batch_size, len(train_full))
    train_set, eval_set = _pick(train_full, batch, cfg.seed), _pick(eval_full, batch, cfg.seed)
    cached, kd_on = bool(cfg.kd.cache), cfg.kd.enabled
    cfg = check_teacher_cache(cfg, train_full.num_classes, notes)
    missing = teacher_stand_in_reason(cfg)
    stand_in = cached or missing is not None
    if missing:
        notes.append(f"{missing}: {stand_in_description(cfg)} stands in")
    run_cfg = dataclasses.replace(
        cfg,
        batch_size=batch,
        eval_batch_size=batch,
        data=data,
        kd=dataclasses.replace(cfg.kd, teacher="") if stand_in else cfg.kd,
    )
    if cfg.kd.enabled and cfg.kd.k > train_full.num_classes:  # the real run refuses it: so must the dry run
        raise RunError(
            f"kd.k={cfg.kd.k} is larger than the {train_full.num_classes} classes of the data (the run would stop "
            f"here); set kd.k to at most {train_full.num_classes} to try this config on this data"
        )
    run = setup_run(run_cfg, quiet=quiet, overwrite=True, datasets=(train_set, eval_set))
    if stand_in:
        install_stand_in_teacher(dataclasses.replace(cfg, data=data), run, notes)
    t0 = time.perf_counter()
    stats = train_one_epoch(run, 0, progress=False)
    step_s = time.perf_counter() - t0
    res = evaluate(run.model, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
    losses = {k: v for k, v in stats.items() if k.endswith("loss")}
    if not all(math.isfinite(v) for v in losses.values()):
        notes.append(f"the step's loss is not finite: {losses}")
    return {
        "model": cfg.model.name,
        "params": count_parameters(run.model),
        "device": str(run.device),
        "amp": amp_name(run.amp_dtype),
        "policy": cfg.augment.policy,
        "batch_shape": [batch, *train_set.images.shape[1:]],
        "eval_shape": list(eval_set.images.shape),
        "num_classes": train_full.num_classes,
        "loss": stats["train_loss"],
        "losses": losses,
        "step_s": step_s,
        "eval_top1": res["top1"],
        "kd": _kd_summary(cfg, run) if kd_on else None,
        "notes": notes,
    }


def _kd_summary(cfg: TrainConfig, run: Run) -> dict[str, Any]:
    """K, lambda, T, and what the live teacher sees: its input size and how many of its classes a map keeps."""
    summary: dict[str, Any] = {"k": run.task.kd_loss.k, "lambda": cfg.kd.lambda_, "temperature": cfg.kd.temperature}
    teacher = getattr(run.task, "teacher", None)
    if isinstance(teacher, Teacher):
        summary["teacher_size"] = teacher.size or cfg.data.image_size
        if teacher.class_index is not None:
            summary["teacher_classes_kept"] = int(teacher.class_index.shape[0])
    return summary


def format_dry_run(result: dict[str, Any]) -> str:
    """The lines ``augkd train --dry-run`` prints."""
    kd = result["kd"]
    kd_text = f", KD K={kd['k']} lambda={kd['lambda']} T={kd['temperature']}" if kd else ""
    losses = ", ".join(f"{k.removeprefix('train_')} {v:.4f}" for k, v in result["losses"].items())
    lines = [
        f"dry run: {result['model']} ({result['params'] / 1e6:.2f}M params) on {result['device']}"
        f" (amp {result['amp']}), policy {result['policy']!r}{kd_text}",
        f"  one step on a batch {tuple(result['batch_shape'])} uint8 of {result['num_classes']} classes: {losses} "
        f"in {result['step_s']:.2f}s; eval batch {tuple(result['eval_shape'])} ok",
    ]
    if kd and "teacher_size" in kd:
        kept = (
            f"; its logits restricted to {kd['teacher_classes_kept']} mapped classes"
            if "teacher_classes_kept" in kd
            else ""
        )
        lines.append(f"  the teacher sees {kd['teacher_size']} px images{kept}")
    lines += [f"  note: {n}" for n in result["notes"]]
    lines.append("  nothing was written (no run folder)")
    return "\n".join(lines)
