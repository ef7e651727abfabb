"""The config of a training run: one dataclass per section, filled from YAML plus ``key=value`` overrides.

A YAML file mirrors the sections::

    name: cifar10-demo
    epochs: 8
    model: {name: fastnet9}
    data: {dataset: folder, root: ../shared/data/cifar10-jpg.zip}
    optim: {lr: 0.4, schedule: onecycle}

and any key can be overridden on the command line: ``augkd train --config X optim.lr=0.2 epochs=4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augkd.augment.spec import parse_spec, with_magnitude
from augkd.config import ConfigError, check_finite, config_diff, config_from_dict, config_to_dict
from augkd.data import dataset_stats
from augkd.data.config import DataConfig
from augkd.distill.loss import KD_MODES
from augkd.distill.task import KD_WEIGHTINGS
from augkd.distill.teacher import parse_teacher
from augkd.models.config import ModelConfig
from augkd.train.optim import OPTIMIZERS
from augkd.train.schedule import SCHEDULES

__all__ = [
    "KD_PRESETS",
    "RESULT_NEUTRAL",
    "RESUME_MAY_CHANGE",
    "AugmentConfig",
    "CheckpointConfig",
    "EmaConfig",
    "EvalConfig",
    "KdConfig",
    "LogConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "changed_keys",
    "read_saved_config",
    "with_defaults",
]

AMP_MODES = ("auto", "off", "bf16", "fp16")
NONFINITE_POLICIES = ("error", "skip")


@dataclass
class AugmentConfig:
    """The augmentation policy applied on the training device after the base augmentation."""

    policy: str = "none"
    """Policy spec, e.g. ``aa-cifar10``, ``ra-n2-m9``, ``geo-n2-m5``, ``ta-wide`` or ``none``."""
    fill: int = 128
    """Value of pixels uncovered by geometric ops and cutout."""
    magnitude: float | None = None
    """Replace the magnitude M of a ``ra``/``geo`` policy spec (a sweep axis: ``augment.magnitude=0,2,4,6``);
    None keeps the spec's own M."""
    off_last_epochs: int = 0
    """Train the last N epochs without the policy (base crop/flip only): the paper's section 3.4 baseline."""
    cutout: int = 0
    """Side in pixels of one Cutout square per image after the policy (centre uniform over the image, clipped at
    the border, filled with ``fill``); 16 in AutoAugment's CIFAR recipe; 0: none."""
    mixup: float = 0.0
    """Mixup's Beta(alpha, alpha) parameter (timm's ``--mixup``, DeiT: 0.8); 0: no Mixup. Mixing comes after the
    policy and Cutout, per image, every draw keyed by (seed, epoch, sample id); the partner is a training sample
    drawn by id (docs/design.md). Needs ``data.loader=memory``."""
    cutmix: float = 0.0
    """CutMix's Beta(alpha, alpha) parameter (timm's ``--cutmix``, DeiT: 1.0); 0: no CutMix."""
    mix_prob: float = 1.0
    """Probability that an image is mixed at all when ``mixup`` or ``cutmix`` is on (timm's ``--mixup-prob``)."""
    mix_switch_prob: float = 0.5
    """Probability of CutMix rather than Mixup when both are on (timm's ``--mixup-switch-prob``)."""

    def __post_init__(self) -> None:
        check_finite(self, "augment.")
        if self.mixup < 0 or self.cutmix < 0:
            raise ValueError(f"augment.mixup and augment.cutmix must be >= 0 (0: off); got {self.mixup}, {self.cutmix}")
        if not 0 <= self.mix_prob <= 1 or not 0 <= self.mix_switch_prob <= 1:
            raise ValueError(
                f"augment.mix_prob and augment.mix_switch_prob must be in [0, 1]; got {self.mix_prob}, "
                f"{self.mix_switch_prob}"
            )
        if not 0 <= self.fill <= 255:
            raise ValueError(f"augment.fill must be in [0, 255]; got {self.fill!r}")
        try:  # checked here so a typo fails before the data is decoded
            parse_spec(self.policy)
        except ValueError as exc:
            raise ValueError(f"augment.policy: {exc}") from None
        if self.off_last_epochs < 0:
            raise ValueError(f"augment.off_last_epochs must be >= 0; got {self.off_last_epochs!r}")
        if self.cutout < 0:
            raise ValueError(f"augment.cutout must be >= 0 pixels; got {self.cutout!r}")
        if self.magnitude is not None:
            self.spec()  # a bad magnitude or a policy without one fails here, naming the key

    @property
    def mixes(self) -> bool:
        """Whether Mixup or CutMix is on."""
        return self.mixup > 0 or self.cutmix > 0

    def spec(self) -> str:
        """The effective policy spec: ``policy`` with ``magnitude`` applied (canonical form)."""
        if self.magnitude is None:
            return self.policy
        try:
            return with_magnitude(self.policy, self.magnitude)
        except ValueError as exc:
            raise ValueError(f"augment.magnitude={self.magnitude!r}: {exc}") from None


@dataclass
class OptimConfig:
    """The optimizer (SGD or TensorFlow-style RMSProp) and its per-step learning-rate schedule."""

    name: str = "sgd"
    """``sgd`` (torch's SGD, Nesterov per ``nesterov``) or ``rmsproptf`` (timm's RMSpropTF: TensorFlow's RMSProp
    with epsilon inside the square root, as EfficientNet was trained; decay ``alpha``, ``eps``, ``momentum``)."""
    lr: float = 0.1
    """Peak learning rate for the batch size of the run (no automatic scaling)."""
    momentum: float = 0.9
    """Momentum (SGD's, or RMSpropTF's)."""
    nesterov: bool = True
    """Nesterov momentum (SGD only)."""
    alpha: float = 0.9
    """Decay of RMSpropTF's running mean of squared gradients (TensorFlow's RMSProp ``decay``; rmsproptf only)."""
    eps: float = 1e-3
    """Epsilon of RMSpropTF, added inside the square root as in TensorFlow (EfficientNet: 1e-3; rmsproptf only)."""
    weight_decay: float = 5e-4
    """L2 weight decay (applied to conv and linear weights; not to BN or biases when ``no_decay_bn``)."""
    no_decay_bn: bool = True
    """Exclude normalization parameters and biases from weight decay."""
    schedule: str = "cosine"
    """``cosine`` (to ``min_lr``), ``step`` (multiply by ``gamma`` at ``milestones``), ``onecycle``
    (linear up over ``warmup_epochs``, then linear down to zero), ``exponential`` (multiply by ``decay_rate``
    every ``decay_epochs``, staircase, EfficientNet's) or ``constant``."""
    warmup_epochs: float = 0.0
    """Linear warm-up from ``lr * warmup_start`` (epochs, may be fractional)."""
    warmup_start: float = 0.0
    """Starting fraction of the peak learning rate during warm-up."""
    min_lr: float = 0.0
    """Final learning rate of the cosine schedule."""
    milestones: list[float] = field(default_factory=list)
    """Epochs at which the ``step`` schedule multiplies the learning rate by ``gamma``."""
    gamma: float = 0.1
    """Factor of the ``step`` schedule."""
    decay_rate: float = 0.97
    """Factor of the ``exponential`` schedule, applied every ``decay_epochs`` (EfficientNet: 0.97)."""
    decay_epochs: float = 2.4
    """Period of the ``exponential`` schedule in epochs, may be fractional (EfficientNet: 2.4)."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0 disables)."""
    nonfinite: str = "error"
    """A NaN or infinite training loss: ``error`` stops the run naming the epoch and step (the last checkpoint
    stays as it was), ``skip`` leaves that step out (no update) and counts it in ``nonfinite_skipped``."""
    nonfinite_patience: int = 10
    """With ``nonfinite=skip``: this many non-finite steps in a row stop the run (the model has diverged)."""

    def __post_init__(self) -> None:
        OPTIMIZERS.check(self.name, "optim.name")
        check_finite(self, "optim.")
        if not 0 <= self.alpha < 1:
            raise ValueError(f"optim.alpha must be in [0, 1); got {self.alpha!r}")
        if not self.eps > 0:
            raise ValueError(f"optim.eps must be > 0; got {self.eps!r}")
        if not 0 < self.decay_rate <= 1 or not self.decay_epochs > 0:
            raise ValueError(
                f"optim.decay_rate must be in (0, 1] and optim.decay_epochs > 0; got {self.decay_rate!r}, "
                f"{self.decay_epochs!r}"
            )
        SCHEDULES.check(self.schedule, "optim.schedule")
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0; got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"optim.momentum must be in [0, 1); got {self.momentum!r}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0; got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"optim.label_smoothing must be in [0, 1); got {self.label_smoothing!r}")
        if self.warmup_epochs < 0 or not 0 <= self.warmup_start <= 1:
            raise ValueError("optim.warmup_epochs must be >= 0 and optim.warmup_start in [0, 1]")
        if self.schedule == "onecycle" and self.warmup_epochs <= 0:
            raise ValueError("optim.schedule=onecycle needs optim.warmup_epochs > 0 (the rising part)")
        if sorted(self.milestones) != list(self.milestones):
            raise ValueError(f"optim.milestones must be increasing; got {self.milestones!r}")
        if self.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be >= 0 (0 disables clipping); got {self.grad_clip!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"optim.nonfinite must be error or skip; got {self.nonfinite!r}")
        if self.nonfinite_patience < 1:
            raise ValueError(f"optim.nonfinite_patience must be >= 1; got {self.nonfinite_patience!r}")


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (evaluated alongside the raw model)."""

    enabled: bool = False
    """Keep an EMA copy of the model."""
    decay: float = 0.999
    """EMA decay per optimizer step."""

    def __post_init__(self) -> None:
        check_finite(self, "ema.")
        if not 0 < self.decay < 1:
            raise ValueError(f"ema.decay must be in (0, 1); got {self.decay!r}")


@dataclass
class CheckpointConfig:
    """Checkpoints of the run folder: ``last.pt`` plus the last few epochs (see docs/reliability.md)."""

    keep_last: int = 2
    """Epoch checkpoints ``ckpt_epoch<NNNN>.pt`` kept besides ``last.pt`` (0: only ``last.pt``); ``--resume``
    falls back to the newest good one when ``last.pt`` is damaged."""

    def __post_init__(self) -> None:
        if self.keep_last < 0:
            raise ValueError(f"checkpoint.keep_last must be >= 0; got {self.keep_last!r}")


#: The paper's distillation settings (section 4): name -> (k, lambda, temperature).
KD_PRESETS: dict[str, tuple[int, float, float]] = {
    "cifar10": (3, 1.0, 2.0),
    "cifar100": (5, 1.0, 2.0),
    "imagenet-b0": (5, 0.5, 10.0),
    "imagenet-large": (50, 2.0, 10.0),  # EfficientNet-B4, B7, B8 with RandAugment M = 15, 28
}


@dataclass
class KdConfig:
    """Knowledge distillation from a frozen teacher over its top-K classes (off while ``teacher`` and ``cache`` are
    empty).

    Explicit ``k``, ``lambda`` and ``temperature`` win over the ``preset``; keys left unset take the preset's
    values.
    """

    teacher: str = ""
    """The teacher: the path of an augkd checkpoint (``best.pt``), or ``timm:NAME`` / ``torchvision:NAME`` with
    ``teacher_weights``; empty: no distillation (unless ``cache`` is set)."""
    teacher_weights: str = ""
    """Weights of a ``timm:``/``torchvision:`` teacher: a ``.safetensors`` file, a ``.pth``/``.pt`` state dict
    (read with ``weights_only=True``; TorchScript and pickled models are refused), or ``pretrained`` (the hub
    caches on this machine; downloaded only with ``data.download=true``)."""
    teacher_size: int = 0
    """The teacher's input size in pixels; a student batch of another size is resized to it on the device
    (bilinear, antialiased). 0: the source's own (timm's pretrained config, torchvision's weights meta; an augkd
    checkpoint teacher sees the student's size)."""
    teacher_norm: str = ""
    """The teacher's input normalization: ``imagenet``, ``cifar10``, ``cifar100`` or ``MEAN/STD`` as
    ``0.5,0.5,0.5/0.5,0.5,0.5``; empty: the source's own (a checkpoint's, timm's or torchvision's)."""
    class_map: str = ""
    """The teacher's classes for each student class, when they differ: ``auto`` (the student's class folders are
    the teacher's labels, e.g. ImageNet WordNet ids for an ImageNet-1k head), or a file: JSON
    ``{"student_class": "teacher_class" or [several]}`` or text lines ``student_class teacher_class...`` (a teacher
    class by label or index). The teacher's logits are restricted to the mapped classes before the top-K."""
    cache: str = ""
    """Teacher soft-label cache folder (``augkd teacher-cache``) used instead of a live teacher; setting it
    enables distillation. With ``teacher`` also set, the cache must have been built from that very file."""
    preset: str = "cifar10"
    """The paper's values for unset keys: ``cifar10`` (K=3, lambda=1, T=2), ``cifar100`` (K=5, lambda=1, T=2),
    ``imagenet-b0`` (K=5, lambda=0.5, T=10), ``imagenet-large`` (K=50, lambda=2, T=10)."""
    k: int | None = None
    """Number of the teacher's top classes in the KL term (K = number of classes is ordinary KD)."""
    lambda_: float | None = None
    """Weight of the KD term: loss = CE + lambda * KL_topK (config key ``kd.lambda``)."""
    temperature: float | None = None
    """Softmax temperature T of both distributions."""
    mode: str = "renorm"
    """``renorm`` (both distributions renormalized over the K classes) or ``partial`` (full-softmax
    probabilities kept at the K classes); see ``augkd.distill.loss``."""
    t2_scale: bool = True
    """Multiply the KD term by T^2 (Hinton et al.)."""
    weighting: str = "constant"
    """Per-image weight of the KD term (beyond the paper): ``constant`` (the paper's), ``entropy`` (lambda times
    the teacher's normalized entropy on the augmented image) or ``doubt`` (lambda times 1 - the teacher's
    probability of the true class)."""

    def __post_init__(self) -> None:
        if self.preset not in KD_PRESETS:
            raise ValueError(f"kd.preset must be one of {', '.join(KD_PRESETS)}; got {self.preset!r}")
        k, lam, temperature = KD_PRESETS[self.preset]
        self.k = k if self.k is None else self.k
        self.lambda_ = lam if self.lambda_ is None else self.lambda_
        self.temperature = temperature if self.temperature is None else self.temperature
        check_finite(self, "kd.")
        if self.k < 1:
            raise ValueError(f"kd.k must be >= 1; got {self.k!r}")
        if self.lambda_ < 0:
            raise ValueError(f"kd.lambda must be >= 0; got {self.lambda_!r}")
        if not self.temperature > 0:
            raise ValueError(f"kd.temperature must be > 0; got {self.temperature!r}")
        KD_MODES.check(self.mode, "kd.mode")
        KD_WEIGHTINGS.check(self.weighting, "kd.weighting")
        if self.teacher_size and self.teacher_size < 8:
            raise ValueError(
                f"kd.teacher_size must be 0 (the source's own) or at least 8 pixels; got {self.teacher_size!r}"
            )
        self.teacher_norm_values()  # a bad value fails here, naming the key
        spec = parse_teacher(self.teacher, weights=self.teacher_weights) if self.teacher else None
        library = spec is not None and spec.source != "checkpoint"
        if library and not spec.weights:
            raise ValueError(
                f"kd.teacher={self.teacher} needs kd.teacher_weights=FILE (.safetensors, .pth) or "
                f"kd.teacher_weights=pretrained (or kd.teacher={self.teacher}@FILE)"
            )
        if self.teacher_weights and self.teacher and not library:
            raise ValueError("kd.teacher_weights is for kd.teacher=timm:NAME or torchvision:NAME teachers")

    def teacher_norm_values(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``kd.teacher_norm`` as ``(mean, std)``; None when unset (the source's own)."""
        if not self.teacher_norm:
            return None
        if "/" not in self.teacher_norm:
            try:
                stats = dataset_stats(self.teacher_norm)
            except ValueError:
                raise ValueError(
                    f"kd.teacher_norm must be imagenet, cifar10, cifar100 or MEAN/STD (0.5,0.5,0.5/0.5,0.5,0.5); "
                    f"got {self.teacher_norm!r}"
                ) from None
            return tuple(stats["mean"]), tuple(stats["std"])
        try:
            mean, std = (tuple(float(x) for x in part.split(",")) for part in self.teacher_norm.split("/"))
        except ValueError:
            raise ValueError(
                f"kd.teacher_norm: expected MEAN/STD such as 0.5,0.5,0.5/0.5,0.5,0.5; got {self.teacher_norm!r}"
            ) from None
        if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
            raise ValueError(f"kd.teacher_norm: expected 3 means and 3 positive stds; got {self.teacher_norm!r}")
        return mean, std

    @property
    def enabled(self) -> bool:
        return bool(self.teacher or self.cache)


@dataclass
class EvalConfig:
    """What the evaluation measures besides accuracy."""

    reference: str = ""
    """A teacher (augkd run checkpoint, or any ``kd.teacher`` value) whose agreement with the student is measured
    on the test set every evaluation (``test_agree_top1``, ``test_agree_top5``, ``test_teacher_kl``), for a run
    without KD or against another model than the KD teacher; empty: the KD teacher of a KD run (live, or
    ``kd.teacher`` beside ``kd.cache``), else none."""


@dataclass
class LogConfig:
    """Log sinks besides ``metrics.jsonl`` and ``metrics.csv`` (written by rank 0 only)."""

    tensorboard: bool = False
    """Write TensorBoard events to ``<run>/tensorboard``: loss, learning rate and images/s every ``every_steps``
    optimizer steps, every epoch's metrics; a resumed run continues the same stream without duplicates. Needs
    the ``tensorboard`` extra (``pip install augkd[tensorboard]``)."""
    every_steps: int = 10
    """Optimizer steps between two per-step records (TensorBoard)."""

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"log.every_steps must be >= 1; got {self.every_steps!r}")


@dataclass
class TrainConfig:
    """A whole training run."""

    name: str = "run"
    """Run name; the run folder is ``<out_dir>/<name>``."""
    out_dir: str = "runs"
    """Parent folder of run folders."""
    seed: int = 0
    """Seed of everything random: initialization, shuffling, augmentation (replayable per sample)."""
    data_seed: int = -1
    """Seed of the data stream only: the epoch order, the device-side crop/flip, the policy's draws, Cutout and
    Mixup/CutMix; -1 (default): ``seed``. Set it to keep one augmented stream while ``seed`` varies the
    initialization (and dropout): runs that differ only in ``seed`` then share one teacher cache."""
    epochs: int = 10
    """Training epochs."""
    batch_size: int = 128
    """Global training batch size: under ``torchrun`` each of the N processes takes ``batch_size / N`` samples
    of every batch (it must divide evenly), so the optimizer sees the same batches whatever N."""
    eval_batch_size: int = 500
    """Evaluation batch size (global; split over the processes like ``batch_size``)."""
    device: str = "auto"
    """``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: str = "auto"
    """Mixed precision: ``auto`` (bf16 where the hardware supports it, fp16 on older GPUs), ``off``, ``bf16``,
    ``fp16``."""
    channels_last: bool = True
    """Use the channels-last memory format (faster convolutions on CPU and GPU)."""
    threads: int = 0
    """CPU threads of torch's kernels; 0 keeps torch's default of one per core. The ``augkd`` command makes
    waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``, set before torch starts) so that a busy neighbour does
    not collapse the speed; on a CPU other jobs keep busy, 1 is often faster still (results/shared-cpu). The
    last digits of a run's losses depend on the thread count."""
    eval_flip: bool = False
    """Evaluate on the average of the image and its mirror (test-time augmentation)."""
    eval_every: int = 1
    """Evaluate every N epochs (the last epoch always)."""
    sync_bn: bool = False
    """Under ``torchrun`` on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of each
    process's share; no effect in a single process."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    kd: KdConfig = field(default_factory=KdConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Which checkpoints the run folder keeps (``checkpoint.keep_last``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Agreement with a reference model on the test set (``eval.reference``)."""
    log: LogConfig = field(default_factory=LogConfig)
    """Extra log sinks (``log.tensorboard``)."""

    @property
    def stream_seed(self) -> int:
        """The seed of the data stream (order and augmentation): ``data_seed``, or ``seed`` when it is -1."""
        return self.seed if self.data_seed < 0 else self.data_seed

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "eval_batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1; got {getattr(self, key)!r}")
        if self.augment.mixes and self.data.loader == "stream":
            raise ValueError(
                "augment.mixup / augment.cutmix need data.loader=memory: each image's partner is a training sample "
                "drawn by id and gathered from the in-memory store"
            )
        if self.augment.off_last_epochs > self.epochs:
            raise ValueError(
                f"augment.off_last_epochs={self.augment.off_last_epochs} is more than the {self.epochs} epochs"
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32); got {self.seed!r}")
        if not -1 <= self.data_seed < 2**32:
            raise ValueError(f"data_seed must be -1 (the run's seed) or in [0, 2**32); got {self.data_seed!r}")
        if not 0 <= self.threads <= 4096:
            raise ValueError(f"threads must be in [0, 4096]; got {self.threads!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}; got {self.amp!r}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d{1,4}", self.device)):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if (
            not self.name
            or any(c in self.name for c in "/\\\0")
            or self.name in (".", "..")
            or len(self.name.encode("utf-8", "surrogatepass")) > 200
        ):
            raise ValueError(f"name must be a plain folder name (at most 200 bytes); got {self.name!r}")
        if "\0" in self.out_dir:
            raise ValueError(f"out_dir must be a folder path; got {self.out_dir!r}")


#: Keys that never change what a run computes, only where and how fast: a sweep reuses a finished run whatever
#: their values (a ``.`` at the end covers a whole section).
RESULT_NEUTRAL = frozenset(
    {"name", "out_dir", "threads", "data.cache_dir", "data.workers", "data.decode_workers", "data.download", "log."}
    | {"checkpoint.keep_last"}
)

#: Keys a resumed run may change besides those: they act only on epochs not trained yet (the epoch count, how
#: and how often to evaluate, the device and precision of the steps to come) or on failure handling. Any other
#: change would make the finished epochs and the rest of the run come from two different configs.
RESUME_MAY_CHANGE = RESULT_NEUTRAL | {
    "epochs",
    "eval_batch_size",
    "eval_every",
    "eval_flip",
    "device",
    "amp",
    "channels_last",
    "data.eval_size",
    "data.eval_crop_fraction",
    "data.test_split",
    "data.test_subset_per_class",
    "optim.nonfinite",
    "optim.nonfinite_patience",
    "eval.",
}


def _covered(key: str, keys: frozenset[str]) -> bool:
    return key in keys or any(k.endswith(".") and key.startswith(k) for k in keys)


def read_saved_config(path: Path) -> dict[str, Any]:
    """A run folder's ``config.yaml`` as plain data, for comparing with a new config (:func:`changed_keys`).

    Raises:
        ConfigError: the file cannot be read, or does not hold a YAML mapping.
    """
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the run's saved config {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"the run's saved config {path} is not a config (a YAML mapping)")
    return saved


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config (plain data) read through today's :class:`TrainConfig`: a key added to augkd since the
    run was made reads as its default. A config that today's augkd cannot read (another version's) is returned as
    it is."""
    try:
        return config_to_dict(config_from_dict(TrainConfig, saved))
    except (ConfigError, ValueError, TypeError):
        return saved


def changed_keys(
    saved: dict[str, Any], cfg: TrainConfig, allowed: frozenset[str] = frozenset()
) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """Compare a run's saved config (plain data, from ``config.yaml`` or a checkpoint) with ``cfg``.

    The saved config is read through :class:`TrainConfig` first, so a key added to augkd since that run was made
    compares as its default. Returns ``(refused, allowed_changes)``: the differing keys outside ``allowed``, and
    those inside it, each ``{key: (saved value, new value)}``.
    """
    diff = config_diff(with_defaults(saved), config_to_dict(cfg))
    refused = {k: v for k, v in diff.items() if not _covered(k, allowed)}
    return refused, {k: v for k, v in diff.items() if k not in refused}
