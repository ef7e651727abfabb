"""``augkd teacher-cache``: build a run's components from its config and write the teacher's soft-label cache.

The cache is written by :func:`~augkd.distill.cache_builder.write_teacher_cache` from the run's own batch pipeline
(:func:`~augkd.train.build.build_components`, the builder the training loop uses), so a cached run reproduces the
live teacher's losses and every stage of the pipeline is part of the cache's key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from augkd.checkpoint import CheckpointError
from augkd.data import DeviceLoader, InMemoryDataset
from augkd.distill.cache import CacheError
from augkd.distill.cache_builder import write_teacher_cache
from augkd.distill.teacher import load_teacher, teacher_fingerprint
from augkd.lock import FolderLock, LockError
from augkd.train.build import RunError, build_components, teacher_spec
from augkd.train.config import TrainConfig

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
        cfg: the training config whose pipeline, data, seed, batch size, device and ``amp`` are replayed;
            ``kd.temperature`` is the temperature the ``partial`` log-sum-exp is stored at.
        out: the cache folder.
        teacher: the teacher, in ``kd.teacher``'s forms (default ``kd.teacher``); ``kd.teacher_weights``,
            ``kd.teacher_size``, ``kd.teacher_norm`` and ``kd.class_map`` apply to it.
        epochs: epochs to cover (default ``epochs``).
        k: classes kept per image (default ``kd.k``).
        dataset: the training set of ``cfg.data`` when already loaded (default: loaded here; with
            ``data.loader=stream`` the photos are read per batch by the stream loader's workers, as in training).
        logits_dtype, quiet, progress, log: as :func:`~augkd.distill.cache_builder.write_teacher_cache`.

    Returns:
        ``{"out", "epochs", "kept", "rebuilt", "written", "rows", "k", "temperature", "logits_dtype",
        "bytes_per_sample", "epoch_bytes", "total_bytes", "seconds"}`` (``rebuilt``: epochs whose file failed its
        seal).

    Raises:
        RunError: no teacher, unusable teacher, bad ``epochs`` or ``k``, or ``out`` holds another cache.
    """
    teacher_path = teacher or cfg.kd.teacher
    if not teacher_path:
        raise RunError("no teacher: pass --teacher or kd.teacher=<checkpoint | timm:NAME | torchvision:NAME>")
    epochs = cfg.epochs if epochs is None else epochs
    if epochs < 1:
        raise RunError(f"--epochs must be >= 1; got {epochs}")
    stream = cfg.data.loader == "stream"
    datasets = None if dataset is None or stream else (dataset, dataset)
    parts = build_components(cfg, datasets=datasets, loaders=("train",) if stream else (), quiet=quiet)
    stats = (parts.stats["mean"], parts.stats["std"])
    num_classes = parts.train_set.num_classes
    k = cfg.kd.k if k is None else k
    if not 1 <= k <= num_classes:
        raise RunError(f"--k must be in [1, {num_classes}] (the classes of the data); got {k}")
    spec = teacher_spec(cfg, teacher_path)
    try:
        model = load_teacher(spec, parts.train_set.classes, parts.device, stats, channels_last=cfg.channels_last)
        teacher_id = teacher_fingerprint(spec)
    except (ValueError, CheckpointError) as exc:  # TeacherError, WeightsError: one line each
        raise RunError(f"teacher: {exc}") from None
    # The training loader's batches, plus the remainder a drop_last epoch leaves out.
    if stream:  # the photos decoded and cropped by the workers, as in training
        loader = parts.train_loader.with_every_batch()
    else:
        loader = DeviceLoader(parts.train_set, cfg.batch_size, shuffle=True, seed=cfg.stream_seed, device=parts.device)
    provenance = {"teacher_path": str(teacher_path), "channels_last": cfg.channels_last}
    if spec.source != "checkpoint":
        provenance["teacher_weights"] = cfg.kd.teacher_weights
    temperature = float(cfg.kd.temperature)
    try:
        return write_teacher_cache(
            out, teacher=model, teacher_id=teacher_id, pipeline=parts.pipeline, loader=loader,
            amp_dtype=parts.amp_dtype, epochs=epochs, k=k, temperature=temperature, logits_dtype=logits_dtype,
            provenance=provenance, quiet=quiet, progress=progress, log=log,
        )  # fmt: skip
    except CacheError as exc:
        raise RunError(str(exc)) from None
    finally:
        if stream:
            loader.close()
