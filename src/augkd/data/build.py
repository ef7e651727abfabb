"""From a :class:`DataConfig` to the (train, eval) in-memory datasets, their normalization and a description."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from augkd.data.archive import resolve_root
from augkd.data.cifar import load_cifar
from augkd.data.config import DataConfig
from augkd.data.memory import FolderPlan, InMemoryDataset, load_folder_split, plan_folder_split, subset_per_class
from augkd.registry import Registry

__all__ = ["DATASET_KINDS", "NORMALIZATION", "build_datasets", "dataset_stats", "describe_dataset"]

#: Per-channel RGB mean and std on the [0, 1] scale. CIFAR values are the training sets' per-pixel statistics.
NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def _stats_name(cfg: DataConfig) -> str:
    if cfg.norm_stats != "auto":
        return cfg.norm_stats
    if cfg.dataset in NORMALIZATION:
        return cfg.dataset
    # Folder datasets: CIFAR re-encodings (such as the shared cifar10-jpg.zip) keep CIFAR's statistics.
    stem = Path(cfg.root).name.lower()
    for name in ("cifar100", "cifar10"):
        if stem.startswith(name):
            return name
    return "imagenet"


def dataset_stats(cfg_or_name: DataConfig | str) -> dict[str, Any]:
    """Normalization statistics: ``{"name", "mean", "std"}``, per RGB channel on the [0, 1] scale.

    Args:
        cfg_or_name: a config (its ``norm_stats``; ``auto`` goes by dataset kind: CIFAR kinds and folders named
            ``cifar10*`` / ``cifar100*`` get CIFAR's statistics, other folders ImageNet's) or one of
            ``cifar10``, ``cifar100``, ``imagenet``.

    Raises:
        ValueError: unknown name.
    """
    name = _stats_name(cfg_or_name) if isinstance(cfg_or_name, DataConfig) else cfg_or_name
    if name not in NORMALIZATION:
        raise ValueError(f"normalization stats must be one of {', '.join(NORMALIZATION)}; got {name!r}")
    mean, std = NORMALIZATION[name]
    return {"name": name, "mean": mean, "std": std}


def _folder_split_args(cfg: DataConfig) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Dataset folder plus the keyword arguments of the train and eval splits (classes of eval added later)."""
    root = resolve_root(cfg.root, cfg.cache_dir)
    common = {"cache_dir": cfg.cache_dir, "subset_seed": cfg.subset_seed, "name": Path(cfg.root).stem}
    train = {
        "split": cfg.train_split,
        "size": cfg.image_size,
        "crop_fraction": 1.0,
        "per_class": cfg.subset_per_class,
        **common,
    }
    test = {
        "split": cfg.test_split,
        "size": cfg.resolved_eval_size,
        "crop_fraction": cfg.eval_crop_fraction,
        "per_class": cfg.test_subset_per_class,
        **common,
    }
    return root, train, test


def _cifar_splits(cfg: DataConfig) -> tuple[InMemoryDataset, InMemoryDataset]:
    train = load_cifar(cfg.dataset, cfg.root, True, size=cfg.image_size, download=cfg.download)
    test = load_cifar(
        cfg.dataset,
        cfg.root,
        False,
        size=cfg.resolved_eval_size,
        crop_fraction=cfg.eval_crop_fraction,
        download=cfg.download,
    )
    if cfg.subset_per_class:
        train = subset_per_class(train, cfg.subset_per_class, cfg.subset_seed)
    if cfg.test_subset_per_class:
        test = subset_per_class(test, cfg.test_subset_per_class, cfg.subset_seed)
    return train, test


def _folder_splits(cfg: DataConfig, quiet: bool = False) -> tuple[InMemoryDataset, InMemoryDataset]:
    root, train_args, test_args = _folder_split_args(cfg)
    decode = {"workers": cfg.decode_workers, "bad_files": cfg.bad_files, "quiet": quiet}
    train = load_folder_split(root, **train_args, **decode)
    test = load_folder_split(root, **test_args, classes=train.classes, **decode)
    return train, test


#: ``data.dataset`` -> ``(data config, quiet) -> (train, eval)``. ``cifar10``/``cifar100``: torchvision's official
#: on-disk formats; ``folder``: ImageNet layout (``<root>/train/<class>/*``, ``<root>/val|test/<class>/*``), from a
#: folder or a ``.zip`` of one.
DATASET_KINDS: Registry[Callable[[DataConfig, bool], tuple[InMemoryDataset, InMemoryDataset]]] = Registry(
    "dataset kind",
    {
        "cifar10": lambda cfg, quiet: _cifar_splits(cfg),
        "cifar100": lambda cfg, quiet: _cifar_splits(cfg),
        "folder": _folder_splits,
    },
)


def build_datasets(cfg: DataConfig, quiet: bool = False) -> tuple[InMemoryDataset, InMemoryDataset]:
    """The training and evaluation datasets described by ``cfg``, decoded (or loaded from the cache) into memory.

    Training images are stored at ``image_size`` (largest centred square of larger photos), evaluation images at
    ``eval_size`` (centre crop keeping ``eval_crop_fraction`` of the shorter side); see
    :mod:`augkd.data.decode`. Subsets (``subset_per_class``, ``test_subset_per_class``) keep sample ids.

    Args:
        cfg: the data config.
        quiet: no progress bars.

    Raises:
        FileNotFoundError: missing dataset folder, archive, split or CIFAR files (the message names the path).
        ValueError: empty class folder, unreadable image (``bad_files="error"``), too few images for a subset.
    """
    return DATASET_KINDS[cfg.dataset](cfg, quiet)


def _planned(plan: FolderPlan, classes: list[str]) -> dict[str, Any]:
    counts = torch.bincount(plan.labels, minlength=len(classes)).tolist()
    cached = plan.cached()
    return {
        "name": plan.name,
        "split": plan.scan.root.name,
        "source": str(plan.scan.root),
        "num_images": len(plan.positions),
        "split_size": len(plan.scan.files),
        "num_classes": len(classes),
        "image_size": [plan.size, plan.size],
        "counts_per_class": dict(zip(classes, counts)),
        "subset": plan.subset,
        "cache_path": None if cached is None else str(cached),
        "cache_hit": cached is not None,
        "cache": f"decoded, cached at {cached}" if cached else "not decoded yet (augkd data --prepare decodes it)",
    }


def _prepared(dataset: InMemoryDataset) -> dict[str, Any]:
    info = dataset.describe()
    if dataset.cache_path is None:
        info["cache"] = "not cached (read straight from torchvision's files)"
    else:
        info["cache"] = f"{'loaded from' if dataset.cache_hit else 'decoded now into'} {dataset.cache_path}"
    return info


def describe_dataset(cfg: DataConfig, prepare: bool = False, quiet: bool = True) -> dict[str, Any]:
    """What ``augkd data`` prints: both splits' counts per class, image sizes, sources and cache status.

    Args:
        cfg: the data config.
        prepare: decode both splits into the cache now (or load them from it) and describe the decoded data,
            including unreadable files left out; otherwise only scan the folders (CIFAR is always loaded).
        quiet: no progress bars.

    Returns:
        ``{"dataset", "root", "num_classes", "classes", "normalization", "train", "eval", "bad_files", "notes"}``;
        each split has ``num_images``, ``num_classes``, ``counts_per_class``, ``image_size``, ``source``,
        ``subset``, ``cache`` (a sentence), ``cache_path`` and ``cache_hit``.
    """
    notes: list[str] = []
    if prepare or cfg.dataset in ("cifar10", "cifar100"):
        train, test = build_datasets(cfg, quiet=quiet)
        classes, info = train.classes, {"train": _prepared(train), "eval": _prepared(test)}
        bad = [f"{p}: {r}" for d in (train, test) for p, r in d.skipped]
    else:
        root, train_args, test_args = _folder_split_args(cfg)
        train_plan = plan_folder_split(root, **train_args)
        test_plan = plan_folder_split(root, **test_args, classes=train_plan.scan.classes)
        classes = train_plan.scan.classes
        info = {"train": _planned(train_plan, classes), "eval": _planned(test_plan, classes)}
        bad = []
        notes.append("folders scanned only; unreadable files show up with --prepare")
    if cfg.loader == "stream":
        notes.append("data.loader=stream: training reads the files above per batch; no decoded cache is used")
        for split in info.values():  # the cache sentence of a memory loader ("not decoded yet") does not apply
            split["cache"] = "none: data.loader=stream decodes the files of every batch"
    elif cfg.resolved_eval_size != cfg.image_size:
        notes.append(f"training images are stored at {cfg.image_size}px, eval images at {cfg.resolved_eval_size}px")
    return {
        "dataset": cfg.dataset,
        "root": cfg.root,
        "num_classes": len(classes),
        "classes": classes,
        "normalization": dataset_stats(cfg),
        **info,
        "bad_files": bad,
        "notes": notes,
    }
