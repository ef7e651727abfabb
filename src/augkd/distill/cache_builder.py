"""Write a teacher soft-label cache from a run's own batch pipeline (the engine of ``augkd teacher-cache``).

The builder iterates the very generator the training loop iterates
(:meth:`~augkd.data.pipeline.BatchPipeline.batches`): the same shuffled batches of the same size (plus the
remainder a training epoch drops), the same stages, the same normalization, converted by the teacher as in the live
path, under the run's autocast. It summarizes the logits with the same function the live task uses
(:func:`~augkd.distill.loss.teacher_top_k`), so on a deterministic device a cached run reproduces the live run's
losses. The key comes from the pipeline's stages (:func:`~augkd.distill.cache.cache_key`); the file format is
described in :mod:`augkd.distill.cache`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

import augkd
from augkd import faults
from augkd.data.loader import DeviceLoader
from augkd.data.pipeline import BatchPipeline
from augkd.distill.cache import (
    CacheError,
    CacheLayout,
    cache_key,
    dataset_fingerprint,
    describe_dataset_for_cache,
    prepare_cache_dir,
    write_epoch,
)
from augkd.distill.loss import teacher_top_k

__all__ = ["write_teacher_cache"]


def write_teacher_cache(
    out: str | Path,
    *,
    teacher: nn.Module,
    teacher_id: str,
    pipeline: BatchPipeline,
    loader: DeviceLoader,
    amp_dtype: torch.dtype | None,
    epochs: int,
    k: int,
    temperature: float,
    logits_dtype: str = "float32",
    provenance: dict[str, Any] | None = None,
    quiet: bool = False,
    progress: bool | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Store the teacher's top-K view of every augmented training image of epochs ``0 .. epochs-1`` in ``out``.

    Resumable: finished epochs of a cache built with the same settings are kept; the others, and any whose file
    fails its seal (damaged on disk, renamed, built under another key), are (re)done.

    Args:
        out: the cache folder.
        teacher: the frozen teacher (:class:`~augkd.distill.teacher.Teacher`) on ``device``.
        teacher_id: its fingerprint (:func:`~augkd.distill.teacher.teacher_fingerprint`), part of the key.
        pipeline: the run's batch pipeline (stages and normalization) on the loader's device.
        loader: the run's training batches in the run's order, *without* dropping the last partial batch: a
            :class:`~augkd.data.loader.DeviceLoader`, or a stream loader
            (:meth:`~augkd.data.stream.StreamLoader.with_every_batch`), whose crops then enter the key.
        amp_dtype: the run's autocast dtype (None: float32).
        epochs: epochs to cover.
        k: classes kept per image; any run with ``kd.k <= k`` can use the cache.
        temperature: the temperature the ``partial`` log-sum-exp is stored at.
        logits_dtype: ``float32`` (exact) or ``float16`` (the smaller layout of
            :class:`~augkd.distill.cache.CacheLayout`; see the README for the loss difference).
        provenance: extra header entries (teacher path, device, version, ...), not compared.
        quiet: no log lines and no progress bar.
        progress: show a progress bar (default: when not quiet and stderr is a terminal).
        log: where the summary line goes.

    Returns:
        ``{"out", "epochs", "kept", "rebuilt", "written", "rows", "k", "temperature", "logits_dtype",
        "bytes_per_sample", "epoch_bytes", "total_bytes", "seconds"}`` (``rebuilt``: epochs whose file failed its
        seal).

    Raises:
        CacheError: bad ``epochs`` or ``k``, or ``out`` holds a cache built with other settings.
    """
    t0 = time.perf_counter()
    train_set, device = loader.dataset, loader.device
    num_classes = train_set.num_classes
    if epochs < 1:
        raise CacheError(f"--epochs must be >= 1; got {epochs}")
    if not 1 <= k <= num_classes:
        raise CacheError(f"--k must be in [1, {num_classes}] (the classes of the data); got {k}")
    layout = CacheLayout(len(train_set), k, num_classes, logits_dtype, temperature)
    header = {
        "key": cache_key(
            pipeline.replay_key(), dataset_fingerprint(train_set), amp_dtype, teacher_id, _loader_key(loader)
        ),
        "k": k,
        "temperature": temperature,
        "num_classes": num_classes,
        "rows": len(train_set),
        "logits_dtype": logits_dtype,
        **layout.header_entries(),
        "dataset": describe_dataset_for_cache(train_set),
        "batch_size": loader.batch_size,
        "device": str(device),
        "augkd_version": augkd.__version__,
        **(provenance or {}),
    }
    ids = train_set.sample_ids
    done, damaged = prepare_cache_dir(out, header, ids)
    for epoch, reason in damaged.items():
        if epoch < epochs and not quiet:
            log(f"teacher cache: rebuilding epoch {epoch}: {reason}")
    todo = [e for e in range(epochs) if e not in done]
    # Row of each sample id (ids are ascending in every in-memory dataset, but do not rely on it).
    row_of = torch.full((int(ids.max()) + 1,), -1, dtype=torch.int64)
    row_of[ids] = torch.arange(len(ids))
    row_of = row_of.to(device)
    show = (not quiet and sys.stderr.isatty()) if progress is None else progress
    bar = tqdm(total=len(todo) * len(loader), desc="teacher cache", disable=not show, file=sys.stderr)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    batches = 0
    for epoch in todo:
        bar.set_postfix(epoch=epoch)
        top_idx = torch.zeros(len(ids), k, dtype=torch.int64, device=device)
        top_val = torch.zeros(len(ids), k, dtype=torch.float32, device=device)
        scalars = torch.zeros(len(ids), 4, dtype=torch.float32, device=device)
        written = torch.zeros(len(ids), dtype=torch.bool, device=device)
        for batch in pipeline.batches(loader, epoch):
            with autocast:
                logits = teacher(batch.images)
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
        blank = ~written
        if bool(blank.any()):
            missing = blank & ~_skipped_rows(loader, row_of, len(ids))
            if bool(missing.any()):
                raise CacheError(f"epoch {epoch}: the loader left {int(missing.sum())} samples out")
            # Files the stream loader skips (data.bad_files=skip) are skipped in training too, in every epoch: their
            # rows are never looked up, and hold a placeholder top-K list (classes 0..K-1, logits and statistics 0).
            top_idx[blank] = torch.arange(k, device=device)
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


def _loader_key(loader: DeviceLoader) -> dict[str, Any] | None:
    """The loader's own part of the cache key: what a cropping (stream) loader does to the pixels; None for the
    in-memory loader, which hands over stored pixels."""
    own = getattr(loader, "replay_key", None)
    return own() if callable(own) else None


def _skipped_rows(loader: DeviceLoader, row_of: torch.Tensor, rows: int) -> torch.Tensor:
    """Mask of the ``rows`` cache rows whose files a stream loader left out as unreadable (none in memory)."""
    skipped = {path for path, _ in getattr(loader, "skipped", [])}
    mask = torch.zeros(rows, dtype=torch.bool, device=row_of.device)
    if skipped:
        data = loader.dataset
        ids = [int(data.sample_ids[row]) for row in range(len(data)) if data.path(row) in skipped]
        mask[row_of[torch.tensor(ids, dtype=torch.int64, device=row_of.device)]] = True
    return mask
