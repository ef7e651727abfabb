"""The ``data`` section of a run's config."""

from __future__ import annotations

from dataclasses import dataclass

from augkd.augment.base import BASE_AUGMENTS

__all__ = ["LOADERS", "DataConfig"]

# data.dataset takes a name of augkd.data.build.DATASET_KINDS, data.base_aug one of augkd.augment.base.BASE_AUGMENTS.
#: ``memory``: decoded once into one uint8 tensor (:mod:`augkd.data.memory`); ``stream``: JPEGs decoded per batch by
#: DataLoader workers (:mod:`augkd.data.stream`), for sets too large for memory such as ImageNet.
LOADERS = ("memory", "stream")
#: Normalization statistics by name (values in :func:`augkd.data.build.dataset_stats`).
NORM_STATS = ("auto", "cifar10", "cifar100", "imagenet")


@dataclass
class DataConfig:
    """Where the images come from and how they are served."""

    dataset: str = "folder"
    """One of ``cifar10``, ``cifar100`` (torchvision formats) or ``folder`` (ImageNet layout, folder or .zip)."""
    root: str = "../shared/data/cifar10-jpg.zip"
    """Dataset folder, or a .zip archive of an ImageFolder tree (unzipped once into ``cache_dir``)."""
    train_split: str = "train"
    """Sub-folder of the training images (``folder`` datasets)."""
    test_split: str = "auto"
    """Sub-folder of the evaluation images; ``auto`` takes ``val`` or ``test``, whichever exists."""
    image_size: int = 32
    """Training resolution in pixels (square)."""
    eval_size: int = 0
    """Evaluation resolution; 0 means the same as ``image_size``."""
    cache_dir: str = ".cache/augkd"
    """Where unzipped archives and decoded tensors are kept (keyed by the source's content)."""
    subset_per_class: int = 0
    """Keep N training images per class (seeded, stratified); 0 keeps all."""
    subset_seed: int = 0
    """Seed of the subset draw."""
    test_subset_per_class: int = 0
    """Keep N evaluation images per class; 0 keeps all."""
    download: bool = False
    """Download CIFAR where a network exists (torchvision); otherwise a clear error names the expected path."""
    base_aug: str = "auto"
    """Base augmentation before the policy: ``crop-flip`` (pad and random crop + flip), ``rrc-flip``
    (random resized crop + flip), ``flip``, ``none`` or ``auto``."""
    crop_padding: int = 4
    """Padding of ``crop-flip`` in pixels."""
    rrc_scale_min: float = 0.08
    """Smallest area fraction of ``rrc-flip`` crops."""
    decode_workers: int = 2
    """Processes used to decode images into the in-memory cache."""
    bad_files: str = "error"
    """``error`` stops at the first unreadable image (naming it); ``skip`` reports and leaves bad files out."""
    eval_crop_fraction: float = 0.875
    """Evaluation images larger than ``eval_size`` are resized so a centre crop keeps this fraction of their
    shorter side (0.875: resize 256, crop 224); training images keep the largest centred square. Images whose
    shorter side already equals the size are only centre-cropped (32x32 CIFAR images stay exact)."""
    loader: str = "memory"
    """``memory``: decode every image once into an in-memory uint8 tensor (cached on disk) and serve batches from it;
    ``stream``: decode the files of every batch in ``workers`` DataLoader processes, random-resized-crop and flip
    each full-size photo there to ``image_size`` (the base augmentation, replayable from (seed, epoch, sample id)),
    and centre-crop evaluation images at ``eval_size`` (``folder`` datasets; for ImageNet-sized sets)."""
    workers: int = 2
    """DataLoader worker processes of ``loader=stream`` (0 decodes in the training process)."""
    norm_stats: str = "auto"
    """Normalization mean/std: ``cifar10``, ``cifar100``, ``imagenet`` or ``auto`` (by dataset kind; a folder
    or archive whose name starts with ``cifar10``/``cifar100`` gets those, any other folder ImageNet's)."""

    def __post_init__(self) -> None:
        from augkd.data.build import DATASET_KINDS  # the builders import this module: read the table when used

        DATASET_KINDS.check(self.dataset, "data.dataset")
        BASE_AUGMENTS.check(self.base_aug, "data.base_aug")
        if self.bad_files not in ("error", "skip"):
            raise ValueError(f"data.bad_files must be 'error' or 'skip'; got {self.bad_files!r}")
        for name in ("image_size",):
            if getattr(self, name) < 8:
                raise ValueError(f"data.{name} must be at least 8 pixels; got {getattr(self, name)!r}")
        for name in ("eval_size", "subset_per_class", "test_subset_per_class", "crop_padding"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be >= 0; got {getattr(self, name)!r}")
        if self.loader not in LOADERS:
            raise ValueError(f"data.loader must be one of {', '.join(LOADERS)}; got {self.loader!r}")
        if self.loader == "stream" and self.dataset != "folder":
            raise ValueError(
                f"data.loader=stream reads image folders; it needs data.dataset=folder, not {self.dataset!r}"
            )
        if self.workers < 0:
            raise ValueError(f"data.workers must be >= 0; got {self.workers!r}")
        if not 0 <= self.subset_seed < 2**32:
            raise ValueError(f"data.subset_seed must be in [0, 2**32); got {self.subset_seed!r}")
        if self.decode_workers < 1:
            raise ValueError(f"data.decode_workers must be >= 1; got {self.decode_workers!r}")
        if not 0.0 < self.rrc_scale_min <= 1.0:
            raise ValueError(f"data.rrc_scale_min must be in (0, 1]; got {self.rrc_scale_min!r}")
        if not 0.0 < self.eval_crop_fraction <= 1.0:
            raise ValueError(f"data.eval_crop_fraction must be in (0, 1]; got {self.eval_crop_fraction!r}")
        if self.norm_stats not in NORM_STATS:
            raise ValueError(f"data.norm_stats must be one of {', '.join(NORM_STATS)}; got {self.norm_stats!r}")

    @property
    def resolved_eval_size(self) -> int:
        return self.eval_size or self.image_size
