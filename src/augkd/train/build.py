"""Assemble a run from its config: the one place where a :class:`~augkd.train.config.TrainConfig` becomes objects.

:func:`build_components` gives every command the same device, autocast, data, loaders and batch pipeline: the
training loop (:func:`~augkd.train.loop.setup_run`), ``augkd teacher-cache``, ``augkd eval``, ``augkd ambiguity``,
``--dry-run`` and ``augkd plan`` all start here, so a stage added to :data:`BATCH_STAGES` reaches the trainer and
the teacher cache (and its key) at once. The model and optimizer builders and the KD task builders live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from augkd.augment.base import Cutout, build_base_augment
from augkd.augment.mix import Mixer
from augkd.augment.spec import build_policy
from augkd.checkpoint import CheckpointError
from augkd.data import (
    DeviceLoader,
    InMemoryDataset,
    build_datasets,
    build_stream_eval_loader,
    build_stream_loaders,
    dataset_stats,
)
from augkd.data.pipeline import BatchPipeline, ImageStage, MixStage, Normalize, TrainAugment
from augkd.data.stream import StreamDataset, train_crop
from augkd.distill.cache import CacheError, TeacherCache, cache_key, dataset_fingerprint
from augkd.distill.loss import TopKKL
from augkd.distill.task import CachedDistillationTask, ClassificationTask, DistillationTask
from augkd.distill.teacher import TeacherSpec, load_teacher, parse_teacher, teacher_fingerprint, teacher_missing
from augkd.registry import Registry
from augkd.train import distributed
from augkd.train.config import TrainConfig
from augkd.train.distributed import DistEnv

__all__ = [
    "BATCH_STAGES",
    "Components",
    "RunError",
    "amp_name",
    "build_cached_distillation_task",
    "build_components",
    "build_distillation_task",
    "build_ema",
    "build_pipeline",
    "build_reference",
    "build_task",
    "build_train_augment",
    "loader_key",
    "resolve_amp",
    "resolve_device",
    "teacher_spec",
]


class RunError(RuntimeError):
    """A run that cannot start or continue (existing folder, incompatible resume)."""


# ----------------------------------------------------------------------------------------------------------------
# Device and autocast


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


def amp_name(dtype: torch.dtype | None) -> str:
    """A resolved precision as ``summary.json`` names it: ``"off"`` (float32), ``"bfloat16"``, ``"float16"``."""
    return str(dtype).replace("torch.", "") if dtype is not None else "off"


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
# The batch pipeline


def build_train_augment(cfg: TrainConfig) -> TrainAugment:
    """Base augmentation and policy of ``cfg`` (``data.base_aug`` and its keys, ``augment.*``, ``seed``).

    With ``data.loader=stream`` the loader's workers already cropped and flipped, so the base stage is ``none``.
    """
    base = build_base_augment(
        "none" if cfg.data.loader == "stream" else cfg.data.base_aug,
        cfg.data.image_size,
        seed=cfg.stream_seed,
        padding=cfg.data.crop_padding,
        scale_min=cfg.data.rrc_scale_min,
    )
    policy = build_policy(cfg.augment.spec(), cfg.data.image_size, seed=cfg.stream_seed, fill=cfg.augment.fill)
    post = Cutout(cfg.augment.cutout, seed=cfg.stream_seed, fill=cfg.augment.fill) if cfg.augment.cutout else None
    policy_epochs = cfg.epochs - cfg.augment.off_last_epochs if cfg.augment.off_last_epochs else None
    return TrainAugment(base, policy, post, policy_epochs)


def _augment_stage(cfg: TrainConfig) -> nn.Module:
    return ImageStage(build_train_augment(cfg))


def _mix_stage(cfg: TrainConfig) -> nn.Module | None:
    """Mixup / CutMix (``augment.mixup``, ``augment.cutmix``, ``mix_prob``, ``mix_switch_prob``), or None when
    both are off: the pipeline, and so every cache key, is then what it was before mixing existed."""
    aug = cfg.augment
    if not aug.mixes:
        return None
    mixer = Mixer(aug.mixup, aug.cutmix, aug.mix_prob, aug.mix_switch_prob, seed=cfg.stream_seed)
    return MixStage(mixer, cfg.epochs - aug.off_last_epochs if aug.off_last_epochs else None)


#: The stages of a run's training batches, in order: name -> ``cfg -> stage or None`` (None: not in this run).
#: A stage is called ``stage(batch, epoch) -> Batch`` (see :mod:`augkd.data.pipeline`); one registered here
#: reaches the training loop, the teacher cache and the cache's key without another edit.
BATCH_STAGES: Registry[Callable[[TrainConfig], nn.Module | None]] = Registry(
    "batch stage", {"augment": _augment_stage, "mix": _mix_stage}
)


def build_pipeline(cfg: TrainConfig, normalize: Normalize) -> BatchPipeline:
    """The run's batch pipeline: every stage of :data:`BATCH_STAGES` this config asks for, then ``normalize``."""
    stages = {name: build(cfg) for name, build in BATCH_STAGES.items()}
    return BatchPipeline({name: stage for name, stage in stages.items() if stage is not None}, normalize)


def pipeline_key(cfg: TrainConfig) -> dict[str, Any]:
    """The replay key of ``cfg``'s batch pipeline without building its data (dry runs, plans, tests): the stages
    of :func:`build_pipeline` and the dataset's normalization."""
    stats = dataset_stats(cfg.data)
    return build_pipeline(cfg, Normalize(stats["mean"], stats["std"])).replay_key()


def loader_key(cfg: TrainConfig) -> dict[str, Any] | None:
    """What ``cfg``'s training loader itself does to the pixels, for a teacher cache's key: the stream loader's
    crops (:func:`~augkd.data.stream.train_crop`, the transform its workers run); None for the in-memory loader."""
    return train_crop(cfg.data, cfg.stream_seed).replay_key() if cfg.data.loader == "stream" else None


def check_cache_serves_run(cache: TeacherCache, cfg: TrainConfig, key: dict[str, Any], num_classes: int) -> None:
    """Check that ``cache`` (built under ``key``) serves the run ``cfg``: epochs, K, T and mode, classes.

    Raises:
        CacheError: what does not fit, in one line.
    """
    cache.check(
        key, epochs=cfg.epochs, k=cfg.kd.k, temperature=cfg.kd.temperature, mode=cfg.kd.mode, num_classes=num_classes
    )


# ----------------------------------------------------------------------------------------------------------------
# Everything a command needs from the config


@dataclass
class Components:
    """What :func:`build_components` assembles: the parts every command shares (no model, no optimizer)."""

    cfg: TrainConfig
    env: DistEnv
    device: torch.device
    amp_dtype: torch.dtype | None
    train_set: Any
    """The training set (an :class:`InMemoryDataset`, or the stream loader's scanned split)."""
    eval_set: Any
    train_loader: DeviceLoader | None
    """Shuffled global batches of ``batch_size`` (this rank's shard), the last partial one dropped."""
    eval_loader: DeviceLoader | None
    stats: dict[str, Any]
    """``{"mean", "std"}`` of the normalization."""
    pipeline: BatchPipeline
    """The training batches' stages and normalization: :meth:`BatchPipeline.batches` is the one generator."""

    @property
    def normalize(self) -> Normalize:
        return self.pipeline.normalize


def _build_datasets_in_turn(cfg: TrainConfig, env: DistEnv, quiet: bool) -> tuple[InMemoryDataset, InMemoryDataset]:
    """Local rank 0 decodes (and fills the on-disk cache) first; the other ranks of its node then read the cache."""
    if env.local_rank != 0:
        distributed.barrier()
    datasets = build_datasets(cfg.data, quiet=quiet)
    if env.local_rank == 0:
        distributed.barrier()
    return datasets


def build_components(
    cfg: TrainConfig,
    *,
    env: DistEnv | None = None,
    datasets: tuple[InMemoryDataset, InMemoryDataset] | None = None,
    loaders: Sequence[str] = ("train", "eval"),
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    quiet: bool = False,
) -> Components:
    """Device, autocast, data, loaders and the batch pipeline of ``cfg`` (``threads`` applied).

    Args:
        cfg: the run's config.
        env: this rank's place in a distributed run; loaders shard each global batch by sample index.
        datasets: ``(train, eval)`` to use instead of building ``cfg.data`` (dry runs, calibration).
        loaders: which loaders to build (``train``, ``eval``); with none, the datasets are decoded into memory
            even for ``data.loader=stream``.
        normalization: ``(mean, std)`` to use instead of the data's (a checkpoint's own).
        quiet: no progress bars while decoding.

    Raises:
        RunError: no usable device or autocast, or a batch larger than the training set.
    """
    env = env or DistEnv()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = distributed.rank_device(resolve_device(cfg.device), env)
    amp_dtype = resolve_amp(cfg.amp, device)
    batch_size = distributed.per_rank_batch(cfg.batch_size, env)
    eval_batch = max(1, cfg.eval_batch_size // env.world_size)
    shard = {"rank": env.rank, "world_size": env.world_size}
    train_loader = eval_loader = None
    if cfg.data.loader == "stream" and datasets is None and loaders:  # JPEGs decoded per batch by workers
        if "train" in loaders:
            train_loader, eval_loader = build_stream_loaders(
                cfg.data, batch_size, eval_batch, seed=cfg.stream_seed, device=device, **shard
            )
        else:
            eval_loader = build_stream_eval_loader(cfg.data, eval_batch, device)
        train_set = train_loader.dataset if train_loader is not None else None
        eval_set = eval_loader.dataset
    else:
        train_set, eval_set = datasets if datasets is not None else _build_datasets_in_turn(cfg, env, quiet)
        if "train" in loaders:
            train_loader = DeviceLoader(
                train_set, batch_size, shuffle=True, drop_last=True, seed=cfg.stream_seed, device=device, **shard
            )
        if "eval" in loaders:
            eval_loader = DeviceLoader(
                eval_set, eval_batch, shuffle=False, drop_last=False, seed=0, device=device, **shard
            )
    if train_loader is not None and len(train_loader) == 0:
        raise RunError(f"batch_size={cfg.batch_size} is larger than the {len(train_set)} training images")
    if normalization is None:
        stats = dataset_stats(cfg.data)
    else:
        stats = {"mean": tuple(normalization[0]), "std": tuple(normalization[1])}
    normalize = Normalize(stats["mean"], stats["std"], channels_last=cfg.channels_last).to(device)
    pipeline = build_pipeline(cfg, normalize).to(device)
    return Components(cfg, env, device, amp_dtype, train_set, eval_set, train_loader, eval_loader, stats, pipeline)


# ----------------------------------------------------------------------------------------------------------------
# What trains: EMA, the task


def build_ema(cfg: TrainConfig, model: nn.Module) -> nn.Module | None:
    """torch's AveragedModel keeping an EMA of ``model`` (``ema.*``), or None when ``ema.enabled`` is off."""
    if not cfg.ema.enabled:
        return None
    multi_avg_fn = torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema.decay)
    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=multi_avg_fn, use_buffers=True)


def teacher_spec(cfg: TrainConfig, teacher: str | None = None) -> TeacherSpec:
    """The teacher ``cfg.kd`` names (or ``teacher``, e.g. ``--teacher``) with its ``kd.teacher_*`` options and
    ``kd.class_map``; ``data.download`` is the consent to fetch ``pretrained`` weights."""
    kd = cfg.kd
    return parse_teacher(
        teacher or kd.teacher,
        weights=kd.teacher_weights,
        size=kd.teacher_size,
        norm=kd.teacher_norm_values(),
        class_map=kd.class_map,
        download=cfg.data.download,
    )


def build_task(cfg: TrainConfig, parts: Components) -> nn.Module:
    """What turns a batch into losses: cross-entropy, or KD from ``kd.cache`` or the live ``kd.teacher``."""
    if cfg.kd.cache:
        return build_cached_distillation_task(cfg, parts.train_set, parts.device, parts.amp_dtype, parts.pipeline)
    if cfg.kd.enabled:
        norm = (parts.stats["mean"], parts.stats["std"])
        return build_distillation_task(cfg, parts.train_set.classes, parts.device, norm)
    return ClassificationTask(cfg.optim.label_smoothing)


def build_reference(cfg: TrainConfig, parts: Components, task: nn.Module) -> nn.Module | None:
    """The model whose agreement with the student the evaluation measures: ``eval.reference``, else the KD task's
    live teacher, else ``kd.teacher`` beside ``kd.cache``; None when there is none.

    Raises:
        RunError: a reference that cannot be loaded or does not fit the data, in one line.
    """
    teacher = getattr(task, "teacher", None)
    key, ref = ("eval.reference", cfg.eval.reference) if cfg.eval.reference else ("kd.teacher", cfg.kd.teacher)
    if not cfg.eval.reference and (teacher is not None or not cfg.kd.cache):
        return teacher
    if not ref:
        return None
    norm = (parts.stats["mean"], parts.stats["std"])
    spec = teacher_spec(cfg) if key == "kd.teacher" else parse_teacher(ref)  # the KD teacher with its kd.* options
    try:
        return load_teacher(spec, list(parts.eval_set.classes), parts.device, norm, channels_last=cfg.channels_last)
    except (ValueError, CheckpointError) as exc:  # TeacherError, WeightsError: one line each
        raise RunError(f"{key}: {exc}") from None


def build_distillation_task(
    cfg: TrainConfig,
    classes: int | Sequence[str],
    device: torch.device,
    student_norm: tuple,
    teacher: nn.Module | None = None,
) -> DistillationTask:
    """The KD task of ``cfg.kd``: the teacher loaded frozen (or the given ``teacher``), top-K KL, lambda.

    ``classes``: the student's class names in label order (a ``kd.class_map`` needs them), or their number.
    """
    num_classes = classes if isinstance(classes, int) else len(classes)
    if teacher is None:
        try:
            teacher = load_teacher(teacher_spec(cfg), classes, device, student_norm, channels_last=cfg.channels_last)
        except (ValueError, CheckpointError) as exc:  # TeacherError, WeightsError: one line each
            raise RunError(f"kd.teacher: {exc}") from None
    kd_loss = TopKKL(cfg.kd.k, cfg.kd.temperature, cfg.kd.mode, cfg.kd.t2_scale)
    if cfg.kd.k > num_classes:
        raise RunError(f"kd.k={cfg.kd.k} is larger than the {num_classes} classes of the data")
    return DistillationTask(teacher, kd_loss, cfg.kd.lambda_, cfg.optim.label_smoothing, cfg.kd.weighting)


def build_cached_distillation_task(
    cfg: TrainConfig,
    train_set: InMemoryDataset | StreamDataset,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    pipeline: BatchPipeline,
) -> CachedDistillationTask:
    """The KD task of ``cfg.kd`` reading the teacher from ``kd.cache``, checked against this run before training.

    Raises:
        RunError: the cache was built for another pipeline (a stage's settings, seeds included), data, teacher or
            autocast, holds fewer than ``kd.k`` classes or fewer epochs than the run, or cannot serve ``kd.mode``
            at this T.
    """
    teacher_id = None
    if cfg.kd.teacher:
        spec = teacher_spec(cfg)
        missing = teacher_missing(spec)
        if missing:
            raise RunError(f"kd.teacher: {missing}")
        try:
            teacher_id = teacher_fingerprint(spec)
        except (ValueError, CheckpointError) as exc:
            raise RunError(f"kd.teacher: {exc}") from None
    if cfg.kd.k > train_set.num_classes:
        raise RunError(f"kd.k={cfg.kd.k} is larger than the {train_set.num_classes} classes of the data")
    try:
        cache = TeacherCache(cfg.kd.cache, device)
        key = cache_key(pipeline.replay_key(), dataset_fingerprint(train_set), amp_dtype, teacher_id, loader_key(cfg))
        check_cache_serves_run(cache, cfg, key, train_set.num_classes)
    except CacheError as exc:
        raise RunError(f"kd.cache: {exc}") from None
    kd_loss = TopKKL(cfg.kd.k, cfg.kd.temperature, cfg.kd.mode, cfg.kd.t2_scale)
    return CachedDistillationTask(cache, kd_loss, cfg.kd.lambda_, cfg.optim.label_smoothing, cfg.kd.weighting)
