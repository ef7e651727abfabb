"""Whole training runs: augkd's trainer against timm's training pipeline, as images/s and ratios.

What a user compares is the whole step, data to optimizer, not the augmentation alone. Every contender trains
the same network with the same optimizer (SGD, Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.1),
batch and autocast setting, on the same images, in one process; rounds of ``steps`` steps are interleaved
(``augkd plain, augkd RA, ..., timm RA + KD, augkd plain, ...``) so that a busy machine slows them all alike, and
the median round is reported.

augkd (through the public trainer: :func:`~augkd.train.loop.setup_run` and
:func:`~augkd.train.loop.train_one_epoch`, one epoch = one round):

- ``augkd_plain``: crop + flip only (32 px: the in-memory loader) or random-resized crop + flip (224 px: the
  stream loader, JPEGs decoded in ``workers`` DataLoader workers);
- ``augkd_ra``: plus RandAugment ``ra-n2-m9`` on the batch;
- ``augkd_ra_kd``: plus KD from a live teacher (the preset of the data: K=3, lambda 1, T=2 at 32 px);
- ``augkd_ra_kd_cache``: the teacher's answers read from a soft-label cache built beforehand (at 224 px through
  the stream loader's own workers and crops).

timm (its own data pipeline and distillation task):

- ``timm_ra``: ``timm.data.create_loader`` with ``auto_augment='rand-m9-n2'`` (random-resized crop, flip,
  RandAugment, ToTensor, Normalize per PIL image in ``workers`` workers). At 32 px it reads the same decoded
  images as augkd, handed over as PIL images (no JPEG decoding on either side); at 224 px
  ``timm.data.create_dataset`` reads the same JPEG folder as augkd's stream loader;
- ``timm_ra_kd``: plus ``timm.task.LogitDistillationTask``, the teacher run on every batch (full-softmax KL, T=2).

The teacher is the student's architecture; its checkpoint is made by a one-step :func:`~augkd.train.loop.train`
(its weights do not change the speed). The default network is ``fastnet9`` at both sizes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.bench.augment import default_data_dir
from augkd.config import build_config
from augkd.data import build_datasets
from augkd.data.archive import resolve_root
from augkd.train.config import TrainConfig
from augkd.train.loop import setup_run, train, train_one_epoch
from augkd.train.teacher_cache import build_teacher_cache

__all__ = ["CONTENDERS", "run_train_benchmark"]

#: Contender names, in the order they run within a round.
CONTENDERS = ("augkd_plain", "augkd_ra", "augkd_ra_kd", "augkd_ra_kd_cache", "timm_ra", "timm_ra_kd")
_POLICY = "ra-n2-m9"
_TIMM_POLICY = "rand-m9-n2"


def _base_config(
    image_size: int, batch_size: int, steps: int, model: str, data_dir: Path, cache_dir: str, workers: int, out_dir: str
) -> dict[str, Any]:
    """The shared recipe of every augkd contender as a config dict (the data sized so one epoch is ``steps``)."""
    common = {
        "batch_size": batch_size,
        "eval_batch_size": 100,
        "out_dir": out_dir,
        "model": {"name": model},
        "optim": {
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 5.0e-4,
            "schedule": "constant",
            "warmup_epochs": 0,
            "label_smoothing": 0.1,
        },
    }
    per_class = -(-steps * batch_size // 10)  # both data sets have 10 classes
    if image_size == 32:
        data = {
            "dataset": "folder",
            "root": str(data_dir / "cifar10-jpg.zip"),
            "image_size": 32,
            "base_aug": "crop-flip",
            "subset_per_class": per_class,
            "test_subset_per_class": 10,
        }
    else:
        data = {
            "dataset": "folder",
            "root": str(data_dir / "imagewoof320-mini.zip"),
            "image_size": image_size,
            "loader": "stream",
            "workers": workers,
            "base_aug": "rrc-flip",
            "subset_per_class": per_class,
            "test_subset_per_class": 10,
        }
    return {**common, "data": {**data, "cache_dir": cache_dir}}


def _config(base: dict[str, Any], overrides: list[str]) -> TrainConfig:
    return build_config(TrainConfig, base, overrides)


class _PilImages(torch.utils.data.Dataset):
    """Decoded uint8 images handed to timm's transforms as PIL images (``transform`` is set by ``create_loader``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images.permute(0, 2, 3, 1).contiguous().numpy(), labels.tolist()
        self.transform = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from PIL import Image

        image = Image.fromarray(self.images[i])
        return (self.transform(image) if self.transform is not None else image), self.labels[i]


def _forever(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


class _TimmRun:
    """timm's pipeline: its loader and, for KD, its ``LogitDistillationTask``; the step is timm's train loop's."""

    def __init__(self, dataset: Any, cfg: TrainConfig, stats: dict[str, Any], kd: bool, workers: int) -> None:
        from timm.data import create_loader
        from timm.task import ClassificationTask, DistillationTeacher, LogitDistillationTask

        from augkd.models import create_model

        self.cfg = cfg
        size = cfg.data.image_size
        self.loader = create_loader(
            dataset,
            input_size=(3, size, size),
            batch_size=cfg.batch_size,
            is_training=True,
            auto_augment=_TIMM_POLICY,
            mean=tuple(stats["mean"]),
            std=tuple(stats["std"]),
            num_workers=workers,
            use_prefetcher=False,
            device=torch.device("cpu"),
            persistent_workers=True,
        )
        self.batches = _forever(self.loader)
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.model.name, num_classes=10)
        self.model.pretrained_cfg = {"mean": tuple(stats["mean"]), "std": tuple(stats["std"])}  # timm's KD reads it
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        if kd:
            teacher = create_model(cfg.model.name, num_classes=10)
            teacher.pretrained_cfg = self.model.pretrained_cfg
            if cfg.channels_last:
                teacher = teacher.to(memory_format=torch.channels_last)
            self.task = LogitDistillationTask(
                self.model,
                DistillationTeacher(teacher),
                criterion=criterion,
                distill_loss_weight=1.0,
                task_loss_weight=1.0,
                temperature=2.0,
                verbose=False,
            )
        else:
            self.task = ClassificationTask(self.model, criterion=criterion, verbose=False)
        opt = cfg.optim
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=opt.lr,
            momentum=opt.momentum,
            nesterov=opt.nesterov,
            weight_decay=opt.weight_decay,
        )

    def round(self, steps: int) -> float:
        """Train ``steps`` steps; images/s."""
        self.task.train()
        seen = 0
        start = time.perf_counter()
        for _ in range(steps):
            images, labels = next(self.batches)
            if self.cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss = self.task(images, labels)["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            seen += labels.numel()
        return seen / (time.perf_counter() - start)


class _AugkdRun:
    """augkd's trainer: one ``train_one_epoch`` per round (an epoch is ``steps`` steps by construction)."""

    def __init__(self, cfg: TrainConfig, datasets: Any) -> None:
        self.run = setup_run(cfg, quiet=True, datasets=datasets)
        self.epoch = 0

    def round(self, steps: int) -> float:
        stats = train_one_epoch(self.run, self.epoch, progress=False)
        self.epoch += 1
        return stats["images_per_s"]


def _make_teacher(base: dict[str, Any], out_dir: Path) -> Path:
    """A teacher checkpoint of the student's architecture from a one-step run (the weights do not matter here)."""
    cfg = _config(base, ["name=bench-teacher", "epochs=1", "eval_flip=false"])
    train(cfg, quiet=True, overwrite=True, log=lambda *a, **k: None)
    return out_dir / "bench-teacher" / "best.pt"


def run_train_benchmark(
    image_size: int = 32,
    *,
    steps: int = 8,
    rounds: int = 3,
    batch_size: int | None = None,
    model: str = "fastnet9",
    workers: int | None = None,
    contenders: Sequence[str] = CONTENDERS,
    amp: str = "auto",
    channels_last: bool = True,
    data_dir: str | Path | None = None,
    cache_dir: str = ".cache/augkd",
) -> dict[str, Any]:
    """Training images/s of augkd's trainer and timm's pipeline on the same network, data and optimizer.

    Args:
        image_size: 32 (CIFAR-10, in memory) or 224 (Imagewoof photos, streamed from JPEG).
        steps: optimizer steps per round (an augkd epoch is exactly this many steps).
        rounds: timed rounds per contender, after one untimed warm-up round; the median is reported.
        batch_size: images per step; default 256 at 32 px and 32 at 224 px.
        model: the student (and teacher) network, any name of ``augkd models``.
        workers: DataLoader workers of timm and of augkd's stream loader; default the CPU count.
        contenders: which of :data:`CONTENDERS` to run.
        amp: augkd's ``amp`` key (``auto``: bf16 on CPUs that support it); timm runs under the same autocast.
        channels_last: both sides' memory format.
        data_dir: folder holding the shared archives; default :func:`~augkd.bench.augment.default_data_dir`.
        cache_dir: augkd's decoded-data cache (``data.cache_dir``).

    Returns:
        A JSON-ready dict: the settings, per contender ``images_per_s`` (median round), ``rounds`` (every
        round's images/s) and a ``note``; ``ratios``: augkd's RA / RA+KD over timm's, and each augkd contender's
        cost relative to ``augkd_plain`` (``plain images/s / contender images/s``).
    """
    import os

    from augkd.train.build import resolve_amp, resolve_device

    if image_size not in (32, 224):
        raise ValueError(f"image_size must be 32 or 224, got {image_size}")
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        raise ValueError(f"unknown contenders {sorted(unknown)}; expected some of {list(CONTENDERS)}")
    if steps < 1 or rounds < 1:
        raise ValueError(f"steps and rounds must be >= 1, got steps={steps}, rounds={rounds}")
    batch_size = batch_size or (256 if image_size == 32 else 32)
    workers = workers if workers is not None else (os.cpu_count() or 1)
    names = [c for c in CONTENDERS if c in contenders]
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    amp_dtype = resolve_amp(amp, resolve_device("cpu"))
    with tempfile.TemporaryDirectory(prefix="augkd-bench-train-") as tmp:
        base = _base_config(image_size, batch_size, steps, model, data_dir, cache_dir, workers, tmp)
        base.update(amp=amp, channels_last=channels_last, epochs=rounds + 1)
        plain = _config(base, ["name=plain"])
        datasets = build_datasets(plain.data, quiet=True) if image_size == 32 else None
        needs_teacher = any(n.endswith(("_kd", "_kd_cache")) and n.startswith("augkd") for n in names)
        teacher = _make_teacher(base, Path(tmp)) if needs_teacher else None
        overrides: dict[str, list[str]] = {
            "augkd_plain": ["name=plain"],
            "augkd_ra": ["name=ra", f"augment.policy={_POLICY}"],
            "augkd_ra_kd": ["name=ra-kd", f"augment.policy={_POLICY}", f"kd.teacher={teacher}", "kd.preset=cifar10"],
        }
        if "augkd_ra_kd_cache" in names:
            cache = Path(tmp) / "teacher-cache"
            loaded = datasets[0] if datasets is not None else None  # None at 224 px: the stream loader reads the photos
            build_teacher_cache(_config(base, overrides["augkd_ra_kd"]), cache, quiet=True, dataset=loaded)
            overrides["augkd_ra_kd_cache"] = overrides["augkd_ra_kd"] + [f"kd.cache={cache}", "name=ra-kd-cache"]
        runs: dict[str, Any] = {}
        for name in names:
            cfg = _config(base, overrides.get(name, ["name=timm"]))
            if name.startswith("augkd"):
                runs[name] = _AugkdRun(cfg, datasets)
            else:
                if image_size == 32:
                    train_set = datasets[0]
                    dataset: Any = _PilImages(train_set.images, train_set.labels)
                else:
                    from timm.data import create_dataset

                    root = resolve_root(data_dir / "imagewoof320-mini.zip", Path(cache_dir))
                    dataset = create_dataset("", root=str(root / "train"))
                from augkd.data import dataset_stats

                runs[name] = _TimmRun(dataset, cfg, dataset_stats(cfg.data), name == "timm_ra_kd", workers)
        times: dict[str, list[float]] = {name: [] for name in names}
        autocast = torch.autocast("cpu", dtype=amp_dtype) if amp_dtype is not None else None
        for r in range(rounds + 1):
            for name in names:
                if autocast is not None and name.startswith("timm"):
                    with autocast:
                        speed = runs[name].round(steps)
                else:
                    speed = runs[name].round(steps)
                if r > 0:  # round 0 warms up caches, workers and allocators
                    times[name].append(speed)
    report: dict[str, Any] = {
        "image_size": image_size,
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "model": model,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "float32",
        "channels_last": channels_last,
    }
    notes = {
        "augkd_plain": "augkd trainer, crop/flip only",
        "augkd_ra": f"augkd trainer, {_POLICY} per image on the batch",
        "augkd_ra_kd": f"augkd trainer, {_POLICY} + live teacher (top-K KL)",
        "augkd_ra_kd_cache": f"augkd trainer, {_POLICY} + teacher soft-label cache",
        "timm_ra": f"timm create_loader(auto_augment='{_TIMM_POLICY}'), {workers} workers",
        "timm_ra_kd": f"timm loader + LogitDistillationTask (teacher forward every batch), {workers} workers",
    }
    for name in names:
        report[name] = {"images_per_s": statistics.median(times[name]), "rounds": times[name], "note": notes[name]}
    ratios: dict[str, float] = {}
    for ours, theirs in (("augkd_ra", "timm_ra"), ("augkd_ra_kd", "timm_ra_kd"), ("augkd_ra_kd_cache", "timm_ra_kd")):
        if ours in report and theirs in report:
            ratios[f"{ours}_vs_{theirs}"] = report[ours]["images_per_s"] / report[theirs]["images_per_s"]
    if "augkd_plain" in report:
        for name in names:
            if name.startswith("augkd") and name != "augkd_plain":
                ratios[f"{name}_cost_vs_plain"] = report["augkd_plain"]["images_per_s"] / report[name]["images_per_s"]
    report["ratios"] = ratios
    return report
