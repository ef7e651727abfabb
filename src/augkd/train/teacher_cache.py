"""Build a teacher soft-label cache from a training config (``augkd teacher-cache``).

The builder replays exactly what :func:`~augkd.train.loop.train_one_epoch` feeds a live teacher: the same
shuffled batches of the same size (plus the remainder a training epoch drops), the same base augmentation and
policy, the student's normalization converted by the teacher as in the live path, the run's autocast. It
summarizes the logits with the same function the live task uses
(:func:`~augkd.distill.loss.teacher_top_k`), so on a deterministic device a cached run reproduces the live run's
losses. The file format is described in :mod:`augkd.distill.cache`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import augkd
from augkd import faults
from augkd.data import DeviceLoader, InMemoryDataset, build_datasets, dataset_stats
from augkd.distill.cache import (
    CacheError,
    CacheLayout,
    cache_key,
    dataset_fingerprint,
    describe_dataset_for_cache,
    file_sha256,
    prepare_cache_dir,
    write_epoch,
)
from augkd.distill.loss import teacher_top_k
from augkd.distill.teacher import TeacherError, load_teacher
from augkd.lock import FolderLock, LockError
from augkd.train.checkpoint import CheckpointError
from augkd.train.config import TrainConfig
from augkd.train.loop import Normalize, RunError, build_train_augment, resolve_amp, resolve_device

__all__ = ["build_teacher_cache"]


def build_teacher_cache(cfg: TrainConfig, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Store the teacher's top-K view of every augmented training image of epochs ``0 .. epochs-1`` in ``out``.

    Holds the lock of ``out`` while it runs: a second builder of the same folder is refused (see
    :mod:`augkd.lock`). Arguments and result as :func:`_build_teacher_cache`.

    Raises:
        RunError: ``out`` is in use by another live process (named), and as :func:`_build_teacher_cache`.
    """
    lock = FolderLock(out, "augkd teacher-cache", "cache folder")
    try:
        lock.acquire()
    except LockError as exc:
        raise RunError(str(exc)) from None
    try:
        if lock.stale and not kwargs.get("quiet"):
            kwargs.get("log", print)(f"took over the lock of {out} left by {lock.stale}, which is no longer running")
        return _build_teacher_cache(cfg, out, **kwargs)
    finally:
        lock.release()


def _build_teacher_cache(
    cfg: TrainConfig,
    out: str | Path,
    *,
    teacher: str | None = None,
    epochs: int | None = None,
    k: int | None = None,
    logits_dtype: str = "float32",
    dataset: InMemoryDataset | None = None,
    quiet: bool = False,
    progress: bool | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Store the teacher's top-K view of every augmented training image of epochs ``0 .. epochs-1`` in ``out``.

    Resumable: finished epochs of a cache built with the same settings are kept; the others, and any whose file
    fails its seal (damaged on disk, renamed, built under another key), are (re)done.

    Args:
        cfg: the training config whose augmentation, data, seed, batch size, device and ``amp`` are replayed;
            ``kd.temperature`` is the temperature the ``partial`` log-sum-exp is stored at.
        out: the cache folder.
        teacher: teacher checkpoint (default ``kd.teacher``).
        epochs: epochs to cover (default ``epochs``).
        k: classes kept per image (default ``kd.k``); any run with ``kd.k <= k`` can use the cache.
        logits_dtype: ``float32`` (exact) or ``float16`` (smaller, see the README for the loss difference).
        dataset: the training set of ``cfg.data`` when already loaded (default: loaded here).
        quiet: no log lines and no progress bar.
        progress: show a progress bar (default: when not quiet and stderr is a terminal).
        log: where the summary line goes.

    Returns:
        ``{"out", "epochs", "kept", "rebuilt", "written", "rows", "k", "temperature", "logits_dtype",
        "bytes_per_sample", "epoch_bytes", "total_bytes", "seconds"}`` (``rebuilt``: epochs whose file failed its
        seal).

    Raises:
        RunError: no teacher, unusable teacher, ``k`` larger than the classes, or ``out`` holds another cache.
    """
    t0 = time.perf_counter()
    teacher_path = teacher or cfg.kd.teacher
    if not teacher_path:
        raise RunError("no teacher: pass --teacher or kd.teacher=<checkpoint>")
    epochs = cfg.epochs if epochs is None else epochs
    k = cfg.kd.k if k is None else k
    if epochs < 1:
        raise RunError(f"--epochs must be >= 1; got {epochs}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp_dtype = resolve_amp(cfg.amp, device)
    train_set = build_datasets(cfg.data, quiet=quiet)[0] if dataset is None else dataset
    num_classes = train_set.num_classes
    if not 1 <= k <= num_classes:
        raise RunError(f"--k must be in [1, {num_classes}] (the classes of the data); got {k}")
    stats = dataset_stats(cfg.data)
    student_norm = (stats["mean"], stats["std"])
    try:
        model = load_teacher(teacher_path, num_classes, device, student_norm, channels_last=cfg.channels_last)
    except (TeacherError, CheckpointError) as exc:
        raise RunError(f"teacher: {exc}") from None
    augment = build_train_augment(cfg).to(device)
    normalize = Normalize(stats["mean"], stats["std"], channels_last=cfg.channels_last).to(device)
    temperature = float(cfg.kd.temperature)
    try:
        layout = CacheLayout(len(train_set), k, num_classes, logits_dtype)
    except CacheError as exc:
        raise RunError(str(exc)) from None
    header = {
        "key": cache_key(cfg, dataset_fingerprint(train_set), amp_dtype, file_sha256(teacher_path)),
        "k": k,
        "temperature": temperature,
        "num_classes": num_classes,
        "rows": len(train_set),
        "logits_dtype": logits_dtype,
        "index_dtype": layout.index_dtype,
        "bytes_per_sample": layout.bytes_per_sample,
        "epoch_bytes": layout.epoch_bytes,
        "layout": layout.describe(),
        "stats_columns": ["lse_t", "lse_1", "entropy", "log_p_label"],
        "dataset": describe_dataset_for_cache(train_set),
        "teacher_path": str(teacher_path),
        "batch_size": cfg.batch_size,
        "device": str(device),
        "channels_last": cfg.channels_last,
        "augkd_version": augkd.__version__,
    }
    ids = train_set.sample_ids
    try:
        done, damaged = prepare_cache_dir(out, header, ids)
    except CacheError as exc:
        raise RunError(str(exc)) from None
    for epoch, reason in damaged.items():
        if epoch < epochs and not quiet:
            log(f"teacher cache: rebuilding epoch {epoch}: {reason}")
    todo = [e for e in range(epochs) if e not in done]
    # Row of each sample id (ids are ascending in every in-memory dataset, but do not rely on it).
    row_of = torch.full((int(ids.max()) + 1,), -1, dtype=torch.int64)
    row_of[ids] = torch.arange(len(ids))
    row_of = row_of.to(device)
    # The training loader's batches, plus the remainder a drop_last epoch leaves out.
    loader = DeviceLoader(train_set, cfg.batch_size, shuffle=True, drop_last=False, seed=cfg.seed, device=device)
    show = (not quiet and sys.stderr.isatty()) if progress is None else progress
    bar = tqdm(total=len(todo) * len(loader), desc="teacher cache", disable=not show, file=sys.stderr)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    batches = 0
    for epoch in todo:
        bar.set_postfix(epoch=epoch)
        loader.set_epoch(epoch)
        top_idx = torch.zeros(len(ids), k, dtype=torch.int64, device=device)
        top_val = torch.zeros(len(ids), k, dtype=torch.float32, device=device)
        scalars = torch.zeros(len(ids), 4, dtype=torch.float32, device=device)
        written = torch.zeros(len(ids), dtype=torch.bool, device=device)
        for batch in loader:
            with torch.no_grad():
                images = normalize(augment(batch.images, batch.indices, epoch))
            with autocast:
                logits = model(images)
            top = teacher_top_k(logits, k, temperature, batch.labels)
            rows = row_of[batch.indices]
            top_idx[rows] = top.indices
            top_val[rows] = top.logits.float()
            lse_1 = teacher_top_k(logits, 1, 1.0).lse
            scalars[rows] = torch.stack([top.lse, lse_1, top.entropy, top.log_p_label], dim=1).float()
            written[rows] = True
            bar.update()
            batches += 1
            if faults.armed("kill_at_teacher_batch", batches):
                faults.kill_now()
        if not bool(written.all()):
            raise RunError(f"epoch {epoch}: the loader left {int((~written).sum())} samples out")
        write_epoch(out, epoch, layout, top_idx, top_val, scalars, header)
    bar.close()
    total = epochs * layout.epoch_bytes
    summary = {
        "out": str(out),
        "epochs": epochs,
        "kept": [e for e in done if e < epochs],
        "rebuilt": [e for e in damaged if e < epochs],
        "written": todo,
        "rows": len(ids),
        "k": k,
        "temperature": temperature,
        "logits_dtype": logits_dtype,
        "bytes_per_sample": layout.bytes_per_sample,
        "epoch_bytes": layout.epoch_bytes,
        "total_bytes": total,
        "seconds": time.perf_counter() - t0,
    }
    if not quiet:
        log(
            f"teacher cache {out}: epochs 0..{epochs - 1} ({len(todo)} computed, {len(summary['kept'])} kept), "
            f"{len(ids)} images, top-{k} at T={temperature:g}, {logits_dtype} logits: "
            f"{layout.bytes_per_sample} bytes per sample-epoch, {total / 2**20:.1f} MiB in {summary['seconds']:.0f}s"
        )
    return summary
