"""The training loop: set up, then per epoch train, evaluate, log, checkpoint.

Reads top to bottom like torchvision's reference trainer: :func:`setup_run` builds everything from a
:class:`~augkd.train.config.TrainConfig`, :func:`train_one_epoch` runs the optimizer, :func:`evaluate`
measures top-1/top-5/loss, :func:`train` ties them together and writes the run folder::

    <out_dir>/<name>/config.yaml      the resolved config
                     metrics.jsonl    one JSON object per epoch (and metrics.csv)
                     last.pt          everything needed to resume (atomic write)
                     best.pt          weights of the best evaluated epoch
                     summary.json     final figures
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from augkd import faults
from augkd.augment import rng
from augkd.augment.base import Cutout, build_base_augment
from augkd.augment.spec import build_policy
from augkd.config import config_to_dict
from augkd.data import DeviceLoader, InMemoryDataset, build_datasets, build_stream_loaders, dataset_stats
from augkd.data.loader import Batch
from augkd.distill.cache import CacheError, TeacherCache, cache_key, dataset_fingerprint, file_sha256
from augkd.distill.loss import TopKKL
from augkd.distill.teacher import TeacherError, load_teacher
from augkd.io import atomic_write_text, remove_temp_files
from augkd.lock import FolderLock, LockError
from augkd.models import count_parameters, create_model
from augkd.train import distributed
from augkd.train.checkpoint import (
    CheckpointError,
    check_run_folder,
    epoch_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
    save_training_checkpoint,
    tensor_bytes,
)
from augkd.train.config import TrainConfig
from augkd.train.distributed import DistEnv
from augkd.train.guard import NonFiniteGuard, check_finite_state
from augkd.train.schedule import lr_factor
from augkd.train.task import CachedDistillationTask, ClassificationTask, DistillationTask

__all__ = ["Normalize", "Run", "TrainAugment", "evaluate", "resolve_amp", "resolve_device", "setup_run", "train"]

CHECKPOINT_FORMAT = "augkd-checkpoint/1"


class RunError(RuntimeError):
    """A run that cannot start or continue (existing folder, incompatible resume)."""


# ----------------------------------------------------------------------------------------------------------------
# Small building blocks


class Normalize(nn.Module):
    """uint8 images -> float32 ``(x / 255 - mean) / std`` in one fused affine step, keeping the memory format."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool = False) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, images.float(), self.scale)


class TrainAugment(nn.Module):
    """Base augmentation (crop/flip), the policy, then an optional last stage (Cutout); all pure functions of
    (seed, epoch, sample index).

    This is where an augmentation policy plugs into training: ``augment.policy`` in the config.
    """

    def __init__(
        self, base: nn.Module, policy: nn.Module, post: nn.Module | None = None, policy_epochs: int | None = None
    ) -> None:
        super().__init__()
        self.base = base
        self.policy = policy
        self.post = post
        self.policy_epochs = policy_epochs  # epochs >= this one see the base augmentation only (None: all epochs)

    def uses_policy(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) applies the policy and the last stage (``augment.off_last_epochs``
        switches both off: those epochs see the base crop/flip only)."""
        return self.policy_epochs is None or epoch < self.policy_epochs

    def forward(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        images = self.base(images, indices, epoch)
        if not self.uses_policy(epoch):
            return images
        images = self.policy(images, indices, epoch)
        return images if self.post is None else self.post(images, indices, epoch)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def _cpu_has_bf16() -> bool:
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device`` (None: full float32).

    ``auto`` picks bf16 on CPUs with native bf16 (AVX512-BF16 or AMX) and on GPUs that support it, fp16 on
    older GPUs, and float32 elsewhere.
    """
    if mode == "off":
        return None
    if device.type == "cpu":
        if mode == "fp16":
            raise RunError("amp=fp16 needs a CUDA device; on the CPU use amp=bf16 or amp=off")
        if mode == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if _cpu_has_bf16() else None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


# ----------------------------------------------------------------------------------------------------------------
# Setup


@dataclass
class Run:
    """Everything a run needs, built by :func:`setup_run`."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    model: nn.Module
    ema: nn.Module | None
    task: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment: TrainAugment
    normalize: Normalize
    train_loader: DeviceLoader
    eval_loader: DeviceLoader
    classes: list[str]
    stats: dict[str, Any]
    start_epoch: int = 0
    step: int = 0
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    env: DistEnv = field(default_factory=DistEnv)
    """This process's rank among the ranks of a ``torchrun`` launch (one process: rank 0 of 1)."""
    train_model: nn.Module | None = None
    """What the training step calls: ``model`` wrapped in DistributedDataParallel, or None for ``model``."""
    reported_bad_files: list[tuple[str, str]] = field(default_factory=list)
    """Unreadable images already written to ``bad_files.txt`` (``data.bad_files=skip``)."""

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def _param_groups(model: nn.Module, weight_decay: float, no_decay_bn: bool) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_bn and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``optim.name``: torch's SGD, or timm's RMSpropTF (TensorFlow's RMSProp, EfficientNet's recipe).

    Both get the same parameter groups (weight decay off for normalization parameters and biases with
    ``optim.no_decay_bn``); the learning rate is set every step from :func:`~augkd.train.schedule.lr_factor`.
    """
    groups = _param_groups(model, cfg.optim.weight_decay, cfg.optim.no_decay_bn)
    o = cfg.optim
    if o.name == "rmsproptf":
        from timm.optim import RMSpropTF

        # weight decay as an L2 term in the gradient, as TF's EfficientNet adds it to the loss
        return RMSpropTF(groups, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set ``momentum`` (torch convention: 1 - TensorFlow's decay) on every BatchNorm layer; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = momentum
    return len(layers)


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The configured model (``model.name``, ``model.drop_rate``, ``model.drop_path_rate``, ``model.kwargs``,
    then ``model.bn_momentum`` on its BatchNorm layers)."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.drop_rate is not None:
        kwargs["drop_rate"] = cfg.model.drop_rate
    if cfg.model.drop_path_rate is not None:
        kwargs["drop_path_rate"] = cfg.model.drop_path_rate
    try:
        model = create_model(cfg.model.name, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise RunError(f"model.kwargs {kwargs} do not fit model {cfg.model.name!r}: {exc}") from None
    if cfg.model.bn_momentum is not None and set_bn_momentum(model, cfg.model.bn_momentum) == 0:
        raise RunError(f"model.bn_momentum is set but model {cfg.model.name!r} has no BatchNorm layers")
    return model


def build_distillation_task(
    cfg: TrainConfig, num_classes: int, device: torch.device, student_norm: tuple, teacher: nn.Module | None = None
) -> DistillationTask:
    """The KD task of ``cfg.kd``: the teacher checkpoint loaded frozen (or the given ``teacher``), top-K KL, lambda."""
    if teacher is None:
        try:
            teacher = load_teacher(cfg.kd.teacher, num_classes, device, student_norm, channels_last=cfg.channels_last)
        except (TeacherError, CheckpointError) as exc:
            raise RunError(f"kd.teacher: {exc}") from None
    kd_loss = TopKKL(cfg.kd.k, cfg.kd.temperature, cfg.kd.mode, cfg.kd.t2_scale)
    if cfg.kd.k > num_classes:
        raise RunError(f"kd.k={cfg.kd.k} is larger than the {num_classes} classes of the data")
    return DistillationTask(teacher, kd_loss, cfg.kd.lambda_, cfg.optim.label_smoothing, cfg.kd.weighting)


def build_cached_distillation_task(
    cfg: TrainConfig, train_set: InMemoryDataset, device: torch.device, amp_dtype: torch.dtype | None
) -> CachedDistillationTask:
    """The KD task of ``cfg.kd`` reading the teacher from ``kd.cache``, checked against this run before training.

    Raises:
        RunError: the cache was built for other settings (augmentation, seed, data, teacher, autocast), holds
            fewer than ``kd.k`` classes or fewer epochs than the run, or cannot serve ``kd.mode`` at this T.
    """
    teacher_sha = None
    if cfg.kd.teacher:
        if not Path(cfg.kd.teacher).is_file():
            raise RunError(f"kd.teacher: {cfg.kd.teacher} not found")
        teacher_sha = file_sha256(cfg.kd.teacher)
    if cfg.kd.k > train_set.num_classes:
        raise RunError(f"kd.k={cfg.kd.k} is larger than the {train_set.num_classes} classes of the data")
    try:
        cache = TeacherCache(cfg.kd.cache, device)
        key = cache_key(cfg, dataset_fingerprint(train_set), amp_dtype, teacher_sha)
        cache.check(
            key,
            epochs=cfg.epochs,
            k=cfg.kd.k,
            temperature=cfg.kd.temperature,
            mode=cfg.kd.mode,
            num_classes=train_set.num_classes,
        )
    except CacheError as exc:
        raise RunError(f"kd.cache: {exc}") from None
    kd_loss = TopKKL(cfg.kd.k, cfg.kd.temperature, cfg.kd.mode, cfg.kd.t2_scale)
    return CachedDistillationTask(cache, kd_loss, cfg.kd.lambda_, cfg.optim.label_smoothing, cfg.kd.weighting)


def build_train_augment(cfg: TrainConfig) -> TrainAugment:
    """Base augmentation and policy of ``cfg`` (``data.base_aug`` and its keys, ``augment.*``, ``seed``).

    With ``data.loader=stream`` the loader's workers already cropped and flipped, so the base stage is ``none``.
    """
    base = build_base_augment(
        "none" if cfg.data.loader == "stream" else cfg.data.base_aug,
        cfg.data.image_size,
        seed=cfg.seed,
        padding=cfg.data.crop_padding,
        scale_min=cfg.data.rrc_scale_min,
    )
    policy = build_policy(cfg.augment.spec(), cfg.data.image_size, seed=cfg.seed, fill=cfg.augment.fill)
    post = Cutout(cfg.augment.cutout, seed=cfg.seed, fill=cfg.augment.fill) if cfg.augment.cutout else None
    policy_epochs = cfg.epochs - cfg.augment.off_last_epochs if cfg.augment.off_last_epochs else None
    return TrainAugment(base, policy, post, policy_epochs)


def setup_run(
    cfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    *,
    env: DistEnv | None = None,
    datasets: tuple[InMemoryDataset, InMemoryDataset] | None = None,
) -> Run:
    """Build datasets, model, optimizer and loaders; restore ``last.pt`` when resuming.

    Args:
        cfg: the run's config.
        resume: restore ``<out_dir>/<name>/last.pt``.
        quiet: no progress bars while decoding data.
        overwrite: allow a run folder that already holds a run.
        env: this rank's place in a distributed run (from :func:`augkd.train.distributed.init`); the loaders
            shard each global batch by sample index and the training model is wrapped in DDP.
        datasets: ``(train, eval)`` to use instead of building ``cfg.data`` (dry runs, calibration).
    """
    env = env or DistEnv()
    if env.enabled and cfg.optim.nonfinite == "skip":
        raise RunError("optim.nonfinite=skip is not supported under DDP (the ranks would have to agree); use error")
    run_dir = Path(cfg.out_dir) / cfg.name
    last = run_dir / "last.pt"
    if resume and not (last.is_file() or epoch_checkpoints(run_dir) or (run_dir / "config.yaml").is_file()):
        raise RunError(f"--resume: no checkpoint at {last}")
    if not resume and (last.exists() or epoch_checkpoints(run_dir)) and not overwrite:
        raise RunError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to "
            f"start over, or name=<other> for a new run"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = distributed.rank_device(resolve_device(cfg.device), env)
    amp_dtype = resolve_amp(cfg.amp, device)
    batch_size = distributed.per_rank_batch(cfg.batch_size, env)

    stream = cfg.data.loader == "stream" and datasets is None  # JPEGs decoded per batch by workers
    shard = {"rank": env.rank, "world_size": env.world_size}
    eval_batch = max(1, cfg.eval_batch_size // env.world_size)
    if stream:
        train_loader, eval_loader = build_stream_loaders(
            cfg.data, batch_size, eval_batch, seed=cfg.seed, device=device, **shard
        )
        train_set, eval_set = train_loader.dataset, eval_loader.dataset
    else:
        if datasets is None:
            datasets = _build_datasets_in_turn(cfg, env, quiet)
        train_set, eval_set = datasets
    stats = dataset_stats(cfg.data)
    # The initial weights come from their own named stream, reseeded here: decoding the data (a DataLoader draws
    # from the global RNG) or anything else that ran before cannot change them.
    rng.seed_global_stream(cfg.seed, "init")
    model = build_model(cfg, train_set.num_classes).to(device)
    if cfg.sync_bn:
        model = distributed.convert_sync_bn(model, env, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema.enabled:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema.decay), use_buffers=True
        )
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    augment = build_train_augment(cfg).to(device)
    normalize = Normalize(stats["mean"], stats["std"], channels_last=cfg.channels_last).to(device)
    if not stream:
        train_loader = DeviceLoader(
            train_set, batch_size, shuffle=True, drop_last=True, seed=cfg.seed, device=device, **shard
        )
        eval_loader = DeviceLoader(eval_set, eval_batch, shuffle=False, drop_last=False, seed=0, device=device, **shard)
    if len(train_loader) == 0:
        raise RunError(f"batch_size={cfg.batch_size} is larger than the {len(train_set)} training images")
    task: nn.Module = ClassificationTask(cfg.optim.label_smoothing)
    if cfg.kd.cache:
        task = build_cached_distillation_task(cfg, train_set, device, amp_dtype)
    elif cfg.kd.enabled:
        task = build_distillation_task(cfg, train_set.num_classes, device, (stats["mean"], stats["std"]))
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        amp_dtype=amp_dtype,
        model=model,
        ema=ema,
        task=task,
        optimizer=optimizer,
        scaler=scaler,
        augment=augment,
        normalize=normalize,
        train_loader=train_loader,
        eval_loader=eval_loader,
        classes=list(train_set.classes),
        stats=stats,
        env=env,
    )
    if resume:
        _resume(run)
    if env.enabled:
        run.train_model = distributed.wrap(model, env, device)  # after restoring: every rank holds the same weights
    return run


def _build_datasets_in_turn(cfg: TrainConfig, env: DistEnv, quiet: bool) -> tuple[InMemoryDataset, InMemoryDataset]:
    """Local rank 0 decodes (and fills the on-disk cache) first; the other ranks of its node then read the cache."""
    if env.local_rank != 0:
        distributed.barrier()
    datasets = build_datasets(cfg.data, quiet=quiet)
    if env.local_rank == 0:
        distributed.barrier()
    return datasets


def _resume(run: Run) -> None:
    """Restore the newest good checkpoint (``last.pt``, else an epoch checkpoint), saying so when it falls back."""
    found = load_latest_checkpoint(run.run_dir, map_location=run.device)
    if found is None:  # killed before its first checkpoint: nothing to lose, start from the beginning
        print(f"augkd: warning: no checkpoint in {run.run_dir} yet; starting the run from epoch 1", file=sys.stderr)
        return
    path, state, problems = found
    for problem in problems:
        print(f"augkd: warning: {problem}; resuming from {path.name} instead", file=sys.stderr)
    _restore(run, state)


def _restore(run: Run, state: dict[str, Any]) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"not an augkd training checkpoint (format={state.get('format')!r})")
    saved_model = state["config"]["model"]["name"]
    if saved_model != run.cfg.model.name:
        raise RunError(
            f"cannot resume: the checkpoint trained {saved_model!r}, the config asks for {run.cfg.model.name!r}"
        )
    run.model.load_state_dict(state["model"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = int(state["epoch"])
    run.step = int(state["step"])
    run.best_top1 = float(state.get("best_top1", -1.0))
    run.history = list(state.get("history", []))


# ----------------------------------------------------------------------------------------------------------------
# One epoch of training, evaluation


def _autocast(run_device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run_device.type, dtype=dtype)


def _stand_in_batch(run: Run, empty: Batch) -> Batch:
    """One black image of the first sample id, for a rank left with an empty batch (see train_one_epoch)."""
    images = torch.zeros((1, *empty.images.shape[1:]), dtype=empty.images.dtype, device=empty.images.device)
    ids = run.train_loader.dataset.sample_ids[:1].to(empty.indices.device)
    return Batch(images, torch.zeros(1, dtype=empty.labels.dtype, device=empty.labels.device), ids)


def train_one_epoch(run: Run, epoch: int, progress: bool = True) -> dict[str, float]:
    """One pass over the training set; returns mean losses, accuracy on the augmented images and speed.

    In a distributed run every rank passes over its shard and the returned figures are over all ranks.
    """
    cfg = run.cfg
    model = run.train_model if run.train_model is not None else run.model
    model.train()
    rng.seed_global_stream(cfg.seed, "epoch_seed", epoch, run.env.rank)  # dropout, Shake-Shake: replayable per epoch
    run.train_loader.set_epoch(epoch)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=run.device)
    seen = 0
    guard = NonFiniteGuard(cfg.optim.nonfinite, cfg.optim.nonfinite_patience, run.device)
    t0 = time.perf_counter()
    bar = tqdm(
        run.train_loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    for i, batch in enumerate(bar):
        lr = cfg.optim.lr * lr_factor(cfg.optim, run.step, run.steps_per_epoch, run.total_steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        # A rank whose share of this batch was all unreadable files (stream loader, bad_files=skip, DDP) still
        # takes the step with the others: a stand-in image through the model in eval mode, with a zero loss, so
        # the gradient all-reduce pairs up and this rank adds nothing to it or to the epoch's figures.
        idle = batch.labels.numel() == 0
        if idle:
            batch = _stand_in_batch(run, batch)
            model.eval()
        with torch.no_grad():
            images = run.normalize(run.augment(batch.images, batch.indices, epoch))
        with _autocast(run.device, run.amp_dtype):
            out = run.task(model, images, batch.labels, batch.indices, epoch)
        if idle:
            model.train()
            out = {k: v * 0.0 if k.endswith("loss") else v for k, v in out.items()}
        loss = out["loss"]
        if not guard.step_ok(loss, epoch, run.step):  # NaN/Inf loss with optim.nonfinite=skip: no update
            run.step += 1
            continue
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        run.step += 1
        if faults.armed("kill_at_step", run.step):
            faults.kill_now()
        if faults.armed("raise_at_step", run.step):
            faults.raise_now("raise_at_step", run.step)
        n = 0 if idle else batch.labels.numel()
        seen += n
        for key, value in out.items():
            if key.endswith("loss"):
                sums[key] = sums.get(key, 0.0) + value.detach().float() * n
        if not idle:
            correct += (out["output"].argmax(1) == batch.labels).sum()
        if progress and (i % 10 == 0 or i == len(run.train_loader) - 1):
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    if run.env.enabled:  # sums over every rank's shard: the figures of the global batches
        keys = sorted(sums)
        totals = distributed.all_reduce_sum(
            torch.stack([*(sums[k] for k in keys), correct.float(), torch.tensor(float(seen), device=run.device)])
        )
        sums, correct, seen = dict(zip(keys, totals[: len(keys)])), totals[-2], int(totals[-1].item())
    elapsed = time.perf_counter() - t0
    guard.check()
    check_finite_state({"model": model, "ema": run.ema}, epoch)
    if seen == 0:
        raise RunError(f"epoch {epoch + 1}: every step had a non-finite loss (optim.nonfinite=skip)")
    stats = {f"train_{k}": (v / seen).item() for k, v in sums.items()}
    if not all(math.isfinite(v) for v in stats.values()):
        raise RunError(f"epoch {epoch + 1}: the training loss is not finite ({stats}); lower optim.lr?")
    stats.update(train_top1=100.0 * correct.item() / seen, lr=lr, train_time_s=elapsed, images_per_s=seen / elapsed)
    if cfg.optim.nonfinite == "skip":
        stats["nonfinite_skipped"] = guard.skipped
    return stats


_EVAL_PASSES = itertools.count(1)  # evaluation passes of this process, for AUGKD_FAULT=kill_in_eval:<n>


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    normalize: nn.Module,
    amp_dtype: torch.dtype | None = None,
    flip: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy over a loader (optionally averaging a mirrored view)."""
    was_training = model.training
    model.eval()
    device = normalize.scale.device
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    n = 0
    pass_number = next(_EVAL_PASSES)
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, file=sys.stderr):
        if faults.armed("kill_in_eval", pass_number):
            faults.kill_now()
        images = normalize(batch.images)
        with _autocast(device, amp_dtype):
            logits = model(images).float()
            if flip:
                logits = 0.5 * (logits + model(images.flip(3)).float())
        loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk == batch.labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        n += batch.labels.numel()
    model.train(was_training)
    if loader.world_size > 1:  # each rank evaluated its shard of the set: add up the shards
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, top1, top5, torch.tensor(float(n), device=device)]))
        loss_sum, top1, top5, n = totals[0], totals[1], totals[2], int(totals[3].item())
    return {"top1": 100.0 * top1.item() / n, "top5": 100.0 * top5.item() / n, "loss": loss_sum.item() / n, "n": n}


# ----------------------------------------------------------------------------------------------------------------
# Logging and checkpoints


def _run_info(run: Run, epoch: int) -> dict[str, Any]:
    """What every checkpoint carries besides weights: enough to rebuild the model and read its outputs."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,  # number of finished epochs
        "step": run.step,
        "config": config_to_dict(run.cfg),
        "classes": run.classes,
        "normalize": {"mean": list(run.stats["mean"]), "std": list(run.stats["std"])},
        "best_top1": run.best_top1,
        "torch_version": str(torch.__version__),
    }


def _checkpoint_state(run: Run, epoch: int) -> dict[str, Any]:
    """``last.pt``: everything needed to resume."""
    return {
        **_run_info(run, epoch),
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "history": run.history,
    }


def _weights_state(run: Run, epoch: int, weights: dict[str, torch.Tensor], metrics: dict[str, Any]) -> dict:
    """``best.pt``: the weights of the best evaluated epoch (the raw model's or the EMA's) and its metrics."""
    return {**_run_info(run, epoch), "model": weights, "metrics": metrics}


def _log_metrics(run: Run, row: dict[str, Any]) -> None:
    run.history.append(row)
    atomic_write_text(run.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
    keys = list(dict.fromkeys(k for r in run.history for k in r))  # every column, in first-seen order
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(run.history)
    atomic_write_text(run.run_dir / "metrics.csv", buf.getvalue())


def _report_bad_files(run: Run, log: Any) -> None:
    """With ``data.bad_files=skip``: every image left out, by path and reason, in ``bad_files.txt`` and one line."""
    # In-memory datasets know their bad files up front; the stream loader finds them while it reads (so this is
    # called again at the end of the run).
    found = [
        (p, r)
        for loader in (run.train_loader, run.eval_loader)
        for p, r in [*getattr(loader.dataset, "skipped", []), *getattr(loader, "skipped", [])]
    ]
    bad = list(dict.fromkeys(found))
    if not bad or bad == run.reported_bad_files:
        return
    run.reported_bad_files = bad
    report = run.run_dir / "bad_files.txt"
    atomic_write_text(report, "".join(f"{p}\t{r}\n" for p, r in bad))
    first = f"{bad[0][0]} ({bad[0][1]})"
    log(f"augkd train: left out {len(bad)} unreadable image(s) (data.bad_files=skip), e.g. {first}; all in {report}")


def _fmt_epoch(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if "train_kd_loss" in row:
        parts.append(f"kd {row['train_kd_loss']:.4f}")
    if "test_top1" in row:
        parts.append(f"test top1 {row['test_top1']:.2f}% top5 {row['test_top5']:.2f}%")
    if "ema_top1" in row:
        parts.append(f"ema top1 {row['ema_top1']:.2f}%")
    parts.append(f"{row['images_per_s']:.0f} img/s")
    parts.append(f"{row['elapsed_s']:.0f}s")
    return " | ".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# The whole run


def train(
    cfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Train ``cfg`` to the end (or continue it with ``resume``); returns the summary written to summary.json.

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), every process calls this: it joins the process group, trains
    its shard of each global batch under DDP, and only rank 0 prints and writes the run folder.
    """
    env, _ = distributed.init(resolve_device(cfg.device))
    failed = False
    try:
        return _train(cfg, env, resume=resume, quiet=quiet or not env.is_main, overwrite=overwrite, log=log)
    except BaseException as exc:
        failed = env.enabled
        # A failing rank tells the others (they stop within seconds, not at the collective timeout). When another
        # rank failed first, this error is a consequence (a broken collective): end quietly, its line is shown.
        if failed and not distributed.report_failure(exc) and distributed.peer_failure() is not None:
            distributed.exit_after_peer_failure()
        raise
    finally:
        distributed.cleanup(failed=failed)


def _train(cfg: TrainConfig, env: DistEnv, resume: bool, quiet: bool, overwrite: bool, log: Any) -> dict[str, Any]:
    # One writer per run folder, taken before --overwrite or --resume look at it (rank 0 writes for all ranks).
    lock = FolderLock(Path(cfg.out_dir) / cfg.name, "augkd train", "run folder") if env.is_main else None
    if lock is not None:
        try:
            lock.acquire()
        except LockError as exc:
            raise RunError(str(exc)) from None
        if lock.stale and not quiet:
            log(f"took over the lock of {lock.folder} left by {lock.stale}, which is no longer running")
    try:
        return _train_locked(cfg, env, resume, quiet, overwrite, log)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(
    cfg: TrainConfig, env: DistEnv, resume: bool, quiet: bool, overwrite: bool, log: Any
) -> dict[str, Any]:
    run = setup_run(cfg, resume=resume, quiet=quiet, overwrite=overwrite, env=env)
    if env.is_main:
        # Fail now, not after the first epoch, when the folder cannot take the checkpoints (read-only, full disk).
        check_run_folder(run.run_dir, (cfg.checkpoint.keep_last + 2) * 3 * tensor_bytes(run.model.state_dict()))
        remove_temp_files(run.run_dir)  # left by a killed write; the files they were meant to replace are intact
        if overwrite and not resume:  # start over for real: a later --resume must never pick up the old run
            old = ["last.pt", "best.pt", "summary.json", "metrics.jsonl", "metrics.csv", "bad_files.txt"]
            for path in [*(run.run_dir / n for n in old), *(p for _, p in epoch_checkpoints(run.run_dir))]:
                Path(path).unlink(missing_ok=True)
        _report_bad_files(run, log)  # even when quiet: the user must know what was left out
        atomic_write_text(run.run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    n_params = count_parameters(run.model)
    progress = not quiet and sys.stderr.isatty() and not os.environ.get("CI")
    if not quiet:
        log(
            f"augkd train: {cfg.model.name} ({n_params / 1e6:.2f}M params), {len(run.train_loader.dataset)} train / "
            f"{len(run.eval_loader.dataset)} eval images, {run.train_loader.dataset.num_classes} classes, "
            f"{cfg.epochs} epochs on {run.device}"
            + (f" ({str(run.amp_dtype).replace('torch.', '')} autocast)" if run.amp_dtype else "")
            + f", policy {cfg.augment.spec()!r}"
            + (f" (off for the last {cfg.augment.off_last_epochs} epochs)" if cfg.augment.off_last_epochs else "")
            + (f", {env.world_size} processes x batch {cfg.batch_size // env.world_size}" if env.enabled else "")
            + (
                f", KD from {cfg.kd.cache or cfg.kd.teacher} "
                f"(K={cfg.kd.k}, lambda={cfg.kd.lambda_}, T={cfg.kd.temperature})"
                if cfg.kd.enabled
                else ""
            )
            + f" -> {run.run_dir}"
        )
        if resume and run.step:
            log(f"resuming after epoch {run.start_epoch} (step {run.step})")
    t_start = time.perf_counter() - (run.history[-1]["elapsed_s"] if run.history else 0.0)
    for epoch in range(run.start_epoch, cfg.epochs):
        row: dict[str, Any] = {"epoch": epoch + 1, "step": 0}
        row.update(train_one_epoch(run, epoch, progress=progress))
        row["step"] = run.step
        last_epoch = epoch + 1 == cfg.epochs
        distributed.broadcast_buffers(run.model)  # rank 0's BN statistics: evaluate and save one model
        if run.ema is not None:
            distributed.broadcast_buffers(run.ema)
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            res = evaluate(run.model, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
            row.update({f"test_{k}": v for k, v in res.items() if k != "n"})
            if run.ema is not None:
                res_ema = evaluate(run.ema.module, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
                row.update({f"ema_{k}": v for k, v in res_ema.items() if k != "n"})
        row["elapsed_s"] = time.perf_counter() - t_start
        if env.is_main:
            _log_metrics(run, row)
        else:
            run.history.append(row)
        if "test_top1" in row:
            candidates = [("model", row["test_top1"])]
            if run.ema is not None:
                candidates.append(("ema", row["ema_top1"]))
            which, top1 = max(candidates, key=lambda c: c[1])
            if top1 > run.best_top1:
                run.best_top1 = top1
                if env.is_main:
                    weights = (run.ema.module if which == "ema" else run.model).state_dict()
                    save_checkpoint(run.run_dir / "best.pt", _weights_state(run, epoch + 1, weights, row))
        if env.is_main:
            save_training_checkpoint(
                run.run_dir, _checkpoint_state(run, epoch + 1), epoch + 1, cfg.checkpoint.keep_last
            )
        if not quiet:
            log(_fmt_epoch(row, cfg.epochs))
    if env.is_main:
        _report_bad_files(run, log)  # files the stream loader found unreadable during the run
    final = run.history[-1] if run.history else {}
    summary = {
        "name": cfg.name,
        "model": cfg.model.name,
        "params": n_params,
        "policy": cfg.augment.spec(),
        "off_last_epochs": cfg.augment.off_last_epochs,
        "kd": {
            "teacher": cfg.kd.teacher,
            "cache": cfg.kd.cache,
            "k": cfg.kd.k,
            "lambda": cfg.kd.lambda_,
            "temperature": cfg.kd.temperature,
            "mode": cfg.kd.mode,
        }
        if cfg.kd.enabled
        else None,
        "epochs": cfg.epochs,
        "train_images": len(run.train_loader.dataset),
        "eval_images": len(run.eval_loader.dataset),
        "final_top1": final.get("test_top1"),
        "final_top5": final.get("test_top5"),
        "final_error": None if final.get("test_top1") is None else round(100.0 - final["test_top1"], 4),
        "best_top1": run.best_top1,
        "wall_time_s": final.get("elapsed_s"),
        "device": str(run.device),
        "world_size": env.world_size,
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "run_dir": str(run.run_dir),
    }
    if env.is_main:
        atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    distributed.barrier()  # no rank returns before rank 0 has written the run folder
    if not quiet:
        log(
            f"done: top1 {summary['final_top1']:.2f}% (best {run.best_top1:.2f}%) in {summary['wall_time_s']:.0f}s; "
            f"summary in {run.run_dir / 'summary.json'}"
        )
    return summary
