"""Streaming ImageFolder loader (``data.loader=stream``): JPEGs decoded per batch by DataLoader workers.

For sets that do not fit in memory (ImageNet), each batch's files are read and decoded in ``workers`` processes
with torchvision's decoders (:func:`augkd.data.decode.decode_one`), and each full-size photo is cut there to a
fixed ``image_size`` uint8 tensor by the base augmentation:

- ``rrc-flip``: :class:`~augkd.augment.base.RandomResizedCropFlip` on the whole decoded photo (torchvision's
  RandomResizedCrop sampling from the counter RNG, so the crop of a sample is a pure function of
  ``(seed, epoch, sample id)``: replayable, independent of batch size, worker count and number of ranks);
- any other kind (``crop-flip``, ``flip``, ``none``): the photo is first resized and centre-cropped to
  ``image_size`` exactly as the in-memory store does, then the base augmentation runs on it, so those kinds give
  the same pixels as ``data.loader=memory`` followed by the same base augmentation on the device.

Evaluation images are resized so that the centre ``eval_size`` crop keeps ``eval_crop_fraction`` of the shorter
side (resize 256, crop 224 at 0.875), the rule of :func:`augkd.data.decode.resize_center_crop`.

:class:`StreamLoader` is a :class:`~augkd.data.loader.DeviceLoader` whose batches come from the workers: the same
epoch order from ``(seed, epoch)``, the same rank sharding, the same ``set_epoch`` / ``len`` / ``positions``, and
the same :class:`~augkd.data.loader.Batch` of uint8 images, labels and sample ids (positions in the full split,
the key of policy replay and of a teacher's cached outputs). The augmentation policy then runs on the training
device as with the in-memory loader.

Unreadable files: ``bad_files="error"`` stops at the first one with one line naming it; ``"skip"`` leaves it out of
its batch (that batch is one image shorter, in every epoch alike) and lists it in :attr:`StreamLoader.skipped`.

Example:
    >>> from augkd.data import DataConfig
    >>> cfg = DataConfig(root="../shared/data/imagewoof320-mini.zip", loader="stream", image_size=128, eval_size=160)
    >>> train, test = build_stream_loaders(cfg, batch_size=32, eval_batch_size=100, seed=0)  # doctest: +SKIP
    >>> train.set_epoch(0)  # doctest: +SKIP
    >>> images, labels, indices = next(iter(train))  # uint8 (32, 3, 128, 128)  # doctest: +SKIP
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as TF

from augkd.augment.base import BaseAugment, RandomResizedCropFlip, build_base_augment
from augkd.data.archive import resolve_root
from augkd.data.cache import DECODER_VERSION
from augkd.data.config import DataConfig
from augkd.data.decode import BadFile, decode_one, resize_center_crop
from augkd.data.folder import scan_image_folder
from augkd.data.loader import Batch, DeviceLoader
from augkd.data.memory import stratified_positions
from augkd.data.pipeline import replay_key

__all__ = [
    "EvalCrop",
    "StreamDataset",
    "StreamLoader",
    "TrainCrop",
    "build_stream_eval_loader",
    "build_stream_loaders",
    "scan_stream_split",
    "train_crop",
]


class StreamDataset:
    """The files of one split (no pixels): paths, labels, stable sample ids and class names.

    Attributes:
        root: the split's folder.
        files: relative path (``<class>/<file>``) of each sample.
        labels: int64 ``(N,)`` class indices.
        sample_ids: int64 ``(N,)``, each sample's position in the scan of the full split (stable across subsets).
        classes: class names; ``labels`` index into it.
        split_size: number of files in the full split.
        name: dataset name (archive or folder name).
        split: split folder name.
        subset: ``{"per_class", "seed"}`` of the subset draw, or None.
    """

    def __init__(
        self,
        root: Path,
        files: list[str],
        labels: torch.Tensor,
        sample_ids: torch.Tensor,
        classes: list[str],
        *,
        split_size: int,
        name: str = "",
        subset: dict[str, int] | None = None,
    ) -> None:
        if not len(files) == len(labels) == len(sample_ids):
            raise ValueError(
                f"files, labels and sample_ids differ in length: {len(files)}, {len(labels)}, {len(sample_ids)}"
            )
        self.root, self.files, self.classes = Path(root), list(files), list(classes)
        self.labels, self.sample_ids = labels.to(torch.int64), sample_ids.to(torch.int64)
        self.split_size, self.name, self.split, self.subset = split_size, name, self.root.name, subset

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def source(self) -> str:
        return str(self.root)

    def path(self, row: int) -> str:
        """Absolute path of the file at ``row``."""
        return str(self.root / self.files[row])

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """Hex SHA-256 of the decoder's version, the classes, sample ids, labels, and each file's relative path and
        size in bytes.

        The key of a teacher cache built on this split (:func:`augkd.distill.cache.dataset_fingerprint`). The
        bytes are not read (hashing ImageNet's 140 GB per run would cost more than the cache saves): a photo
        replaced by another of the same size under the same name goes unnoticed; any other change is caught.
        """
        head = {"decoder": DECODER_VERSION, "classes": self.classes, "files": self.files}
        h = hashlib.sha256(json.dumps(head).encode())
        for t in (self.sample_ids, self.labels):
            h.update(memoryview(t.contiguous().numpy()).cast("B"))
        h.update(memoryview(array.array("q", map(_file_size, map(self.path, range(len(self)))))).cast("B"))
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"StreamDataset({self.name}/{self.split}: {len(self)} files, {self.num_classes} classes)"


def scan_stream_split(
    dataset_root: str | Path,
    split: str,
    *,
    classes: list[str] | None = None,
    per_class: int = 0,
    subset_seed: int = 0,
    name: str | None = None,
) -> StreamDataset:
    """List one split of an ImageFolder tree (optionally a seeded per-class subset, as the in-memory loader draws it).

    Raises:
        FileNotFoundError: missing dataset or split folder.
        ValueError: empty class folder, classes that differ from ``classes``, or too few images for ``per_class``.
    """
    scan = scan_image_folder(dataset_root, split, classes)
    labels = torch.tensor(scan.labels, dtype=torch.int64)
    positions = torch.arange(len(scan.files))
    subset = None
    if per_class:
        positions = stratified_positions(labels, positions, per_class, subset_seed, scan.classes)
        subset = {"per_class": per_class, "seed": subset_seed}
    rows = positions.tolist()
    return StreamDataset(
        scan.root,
        [scan.files[i] for i in rows],
        labels[positions],
        positions,
        scan.classes,
        split_size=len(scan.files),
        name=name or Path(dataset_root).name,
        subset=subset,
    )


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # a link that cannot be followed is skipped as a bad file when read: its own size
        return os.lstat(path).st_size


class TrainCrop:
    """The worker's training transform: decoded photos to uint8 ``(3, size, size)`` by the base augmentation.

    ``rrc-flip`` draws the boxes and flips of the whole batch at once with :meth:`RandomResizedCropFlip.sample`
    on each full photo's own size, and resamples each box with torchvision's ``resized_crop`` (bilinear,
    antialiased): the output is ``torchvision.transforms.v2.RandomResizedCrop`` + ``RandomHorizontalFlip`` with
    replayable draws. Other kinds see each photo resized and centre-cropped to ``size`` first (the in-memory
    store's rule) and then run on the batch, so they match ``loader=memory`` exactly.

    Args:
        base: the base augmentation (its seed is the run's).
        size: output side in pixels.
    """

    def __init__(self, base: BaseAugment, size: int) -> None:
        self.base, self.size = base, size
        self.full_photo = isinstance(base, RandomResizedCropFlip)

    def __call__(self, images: list[torch.Tensor], sample_ids: torch.Tensor, epoch: int) -> list[torch.Tensor]:
        """Crop ``images`` (uint8 ``(3, H, W)`` each, any sizes) of the samples ``sample_ids`` in ``epoch``."""
        if not self.full_photo:
            return list(self.base(torch.stack([resize_center_crop(im, self.size) for im in images]), sample_ids, epoch))
        sizes = torch.tensor([im.shape[-2:] for im in images], dtype=torch.int64).view(-1, 2)
        p = self.base.sample(sample_ids, epoch, sizes)
        boxes = torch.stack([p["top"], p["left"], p["height"], p["width"]], dim=1).tolist()
        out = []
        # Per photo: torchvision's antialiased resize of the crop (RandomResizedCrop's own resampling, 3x faster
        # here than the batched roi_align of RandomResizedCropFlip.apply, which wants images of one size).
        for image, box, flip in zip(images, boxes, p["flip"].tolist()):
            crop = TF.resized_crop(image, *box, [self.size, self.size], antialias=True)
            out.append(crop.flip(-1) if flip else crop)
        return out

    def replay_key(self) -> dict[str, Any]:
        """What decides the crops (part of a teacher cache's key): the base augmentation's settings and seed, the
        output size."""
        return {"type": "TrainCrop", "size": self.size, "base": replay_key(self.base)}

    def __repr__(self) -> str:
        return f"TrainCrop({self.base!r}, size={self.size})"


def train_crop(cfg: DataConfig, seed: int) -> TrainCrop:
    """The training transform of a stream loader for ``cfg`` (``base_aug`` at ``image_size``, seeded by
    ``seed``): the one :func:`build_stream_loaders` installs, so its :meth:`~TrainCrop.replay_key` can be had
    from a config alone."""
    base = build_base_augment(cfg.base_aug, cfg.image_size, seed, cfg.crop_padding, cfg.rrc_scale_min)
    return TrainCrop(base, cfg.image_size)


class EvalCrop:
    """The worker's evaluation transform: resize so the centre ``size`` crop keeps ``crop_fraction`` of the
    shorter side, then centre-crop (see :func:`augkd.data.decode.resize_center_crop`)."""

    def __init__(self, size: int, crop_fraction: float = 0.875) -> None:
        self.size, self.crop_fraction = size, crop_fraction

    def __call__(self, images: list[torch.Tensor], sample_ids: torch.Tensor, epoch: int) -> list[torch.Tensor]:
        """Centre crops of ``images`` (the sample ids and epoch play no part)."""
        return [resize_center_crop(im, self.size, self.crop_fraction) for im in images]

    def replay_key(self) -> dict[str, Any]:
        """What decides the centre crops: the output size and the kept fraction of the shorter side."""
        return {"type": "EvalCrop", "size": self.size, "crop_fraction": self.crop_fraction}

    def __repr__(self) -> str:
        return f"EvalCrop(size={self.size}, crop_fraction={self.crop_fraction})"


#: What a worker returns for one batch: uint8 images, dataset rows, and per row the reason it could not be read
#: ("" when it could).
_Chunk = tuple[torch.Tensor, torch.Tensor, list[str]]


class _Items(Dataset):
    """Batches keyed by ``[(row, epoch), ...]``: the epoch travels with each index, so persistent workers need no
    state from the main process; ``__getitems__`` makes the DataLoader hand a worker its whole batch, so the
    crops of a batch are drawn in one vectorized call."""

    def __init__(self, dataset: StreamDataset, transform: TrainCrop | EvalCrop) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> _Chunk:
        return self.__getitems__([key])

    def __getitems__(self, keys: list[tuple[int, int]]) -> _Chunk:
        rows = [row for row, _ in keys]
        epoch = keys[0][1]
        size = self.transform.size
        images = torch.zeros((len(rows), 3, size, size), dtype=torch.uint8)
        errors = [""] * len(rows)
        decoded: list[torch.Tensor] = []
        good: list[int] = []
        for i, row in enumerate(rows):
            try:
                decoded.append(decode_one(self.dataset.path(row)))
                good.append(i)
            except ValueError as err:  # decode_one names the file and the reason; the main process decides
                errors[i] = str(err)
        if good:
            ids = self.dataset.sample_ids[[rows[i] for i in good]]
            images[good] = torch.stack(self.transform(decoded, ids, epoch))
        return images, torch.tensor(rows, dtype=torch.int64), errors


def _collate(chunk: _Chunk) -> _Chunk:
    return chunk  # a worker already returns the whole batch


class _EpochBatches:
    """Batch sampler over the loader's current epoch: lists of ``(row, epoch)``, read in the main process.

    It holds the loader weakly: a reference cycle would leave the workers to the garbage collector, which tears
    the DataLoader's queues down in any order and then waits seconds for each worker to time out.
    """

    def __init__(self, loader: StreamLoader) -> None:
        self.loader = weakref.proxy(loader)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, epoch, bs = self.loader.positions().tolist(), self.loader.epoch, self.loader.batch_size
        for b in range(len(self)):
            yield [(row, epoch) for row in order[b * bs : (b + 1) * bs]]


class StreamLoader(DeviceLoader):
    """Batches of a :class:`StreamDataset`, decoded and cropped by DataLoader workers, delivered on ``device``.

    Args:
        dataset: the files.
        batch_size: samples per batch (per rank).
        shuffle: shuffle every epoch (order from ``(seed, epoch)``, as :class:`DeviceLoader`).
        drop_last: leave out the last incomplete batch (and, with ``world_size > 1``, trim the epoch to a
            multiple of ``world_size``).
        seed: run seed (epoch order; the transform carries its own seed for the crops).
        device: where batches are delivered (pinned host memory and asynchronous copies on CUDA).
        transform: :class:`TrainCrop` or :class:`EvalCrop` (its ``size`` is the side of every image).
        workers: DataLoader worker processes (0: decode in this process); kept alive across epochs.
        bad_files: ``error`` raises at the first unreadable file; ``skip`` leaves it out of its batch.
        rank: this process's rank.
        world_size: number of ranks sharing each epoch.
    """

    def __init__(
        self,
        dataset: StreamDataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        transform: TrainCrop | EvalCrop,
        workers: int = 2,
        bad_files: str = "error",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._init_order(dataset, batch_size, shuffle, drop_last, seed, device, rank, world_size)
        if bad_files not in ("error", "skip"):
            raise ValueError(f"bad_files must be 'error' or 'skip'; got {bad_files!r}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0; got {workers}")
        self.pin_memory = self.device.type == "cuda"
        self.transform, self.workers, self.bad_files = transform, workers, bad_files
        self.skipped: list[BadFile] = []
        """``(path, reason)`` of unreadable files left out so far (``bad_files="skip"``)."""
        self._loader: DataLoader | None = None

    def _data_loader(self) -> DataLoader:
        if self._loader is None:
            self._loader = DataLoader(
                _Items(self.dataset, self.transform),
                batch_sampler=_EpochBatches(self),
                num_workers=self.workers,
                collate_fn=_collate,
                pin_memory=self.pin_memory,
                persistent_workers=self.workers > 0,
                # Its own generator: a DataLoader iterator otherwise draws a worker seed from torch's global RNG,
                # once per epoch without workers but only in the first epoch with persistent ones, which would
                # shift dropout and drop-connect after a resume. No draw here depends on that seed.
                generator=torch.Generator(),
            )
        return self._loader

    def __iter__(self) -> Iterator[Batch]:
        labels, sample_ids = self.dataset.labels, self.dataset.sample_ids
        for images, rows, errors in self._data_loader():
            bad = [i for i, e in enumerate(errors) if e]
            if bad:
                if self.bad_files == "error":
                    raise ValueError(f"{errors[bad[0]]} (set data.bad_files=skip to leave such files out)")
                self._note_skipped([(self.dataset.path(int(rows[i])), errors[i]) for i in bad])
                keep = torch.tensor([not e for e in errors])
                images, rows = images[keep], rows[keep]
                if not len(rows) and self.world_size == 1:
                    continue  # under DDP an empty batch is still yielded: every rank takes the same steps
            yield Batch(self._to_device(images), self._to_device(labels[rows]), self._to_device(sample_ids[rows]))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=self.pin_memory)

    def replay_key(self) -> dict[str, Any]:
        """What decides the pixels of its batches beyond the files: its transform's
        :meth:`TrainCrop.replay_key` or :meth:`EvalCrop.replay_key`."""
        return self.transform.replay_key()

    def with_every_batch(self) -> StreamLoader:
        """A loader of the same files, order, crops and workers that keeps the last incomplete batch (a teacher
        cache needs every sample of an epoch; training drops that batch)."""
        return StreamLoader(
            self.dataset, self.batch_size, self.shuffle, False, self.seed, self.device,
            transform=self.transform, workers=self.workers, bad_files=self.bad_files,
            rank=self.rank, world_size=self.world_size,
        )  # fmt: skip

    def gather(self, positions: torch.Tensor) -> Batch:
        """Not available: the photos are decoded by the workers batch by batch (a mixing stage's partners are
        gathered from the in-memory store only)."""
        raise ValueError("Mixup/CutMix partners are gathered from the in-memory store; use data.loader=memory")

    def _note_skipped(self, bad: list[BadFile]) -> None:
        known = {p for p, _ in self.skipped}
        for path, reason in bad:
            if path not in known:
                self.skipped.append((path, reason))
                warnings.warn(f"skipped {reason}", stacklevel=3)

    def close(self) -> None:
        """Stop the worker processes (they are restarted by the next iteration)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader = None

    def __repr__(self) -> str:
        return (
            f"StreamLoader({self.dataset!r}, batch_size={self.batch_size}, {self.transform!r}, workers={self.workers})"
        )


def build_stream_loaders(
    cfg: DataConfig,
    batch_size: int,
    eval_batch_size: int,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> tuple[StreamLoader, StreamLoader]:
    """The training and evaluation stream loaders of ``cfg`` (``cfg.loader`` need not be ``stream``).

    Training: shuffled by ``(seed, epoch)``, incomplete last batch dropped, base augmentation ``cfg.base_aug``
    (seeded by ``seed``) in the workers at ``cfg.image_size``. Evaluation: dataset order, centre crops at
    ``cfg.resolved_eval_size`` keeping ``cfg.eval_crop_fraction`` of the shorter side.

    Raises:
        FileNotFoundError: missing dataset folder, archive or split.
        ValueError: empty class folder, mismatched classes or too few images for a subset.
    """
    train, test = _scan_splits(cfg)
    place = {"device": device, "rank": rank, "world_size": world_size}
    return _loader(cfg, train, batch_size, seed, True, **place), _loader(cfg, test, eval_batch_size, 0, False, **place)


def build_stream_eval_loader(
    cfg: DataConfig, batch_size: int, device: str | torch.device = "cpu", *, rank: int = 0, world_size: int = 1
) -> StreamLoader:
    """The evaluation loader of :func:`build_stream_loaders` alone (for ``augkd eval``)."""
    _, test = _scan_splits(cfg)
    return _loader(cfg, test, batch_size, 0, False, device=device, rank=rank, world_size=world_size)


def _scan_splits(cfg: DataConfig) -> tuple[StreamDataset, StreamDataset]:
    root = resolve_root(cfg.root, cfg.cache_dir)
    common = {"subset_seed": cfg.subset_seed, "name": Path(cfg.root).stem}
    train = scan_stream_split(root, cfg.train_split, per_class=cfg.subset_per_class, **common)
    test = scan_stream_split(root, cfg.test_split, classes=train.classes, per_class=cfg.test_subset_per_class, **common)
    return train, test


def _loader(
    cfg: DataConfig, dataset: StreamDataset, batch_size: int, seed: int, train: bool, **place: Any
) -> StreamLoader:
    if train:
        transform: TrainCrop | EvalCrop = train_crop(cfg, seed)
    else:
        transform = EvalCrop(cfg.resolved_eval_size, cfg.eval_crop_fraction)
    return StreamLoader(
        dataset,
        batch_size,
        shuffle=train,
        drop_last=train,
        seed=seed,
        transform=transform,
        workers=cfg.workers,
        bad_files=cfg.bad_files,
        **place,
    )
