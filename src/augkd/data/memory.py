"""In-memory datasets: every image decoded once into one uint8 tensor, cached on disk, served from RAM.

Every sample carries a *sample id*: its position in the scan of the full split (classes sorted, files sorted
within a class). Sample ids survive subsetting, so they are the key for augmentation replay and for caching a
teacher's outputs; with ``bad_files="skip"`` the ids of skipped files are simply absent.

Subsets are drawn per class by a counter-based hash of (seed, sample id) (:func:`stratified_positions`): a
sample's inclusion does not depend on which other samples are present, so the subset of a decoded split is
the same as decoding only the chosen files, and a subset of 50 per class lies inside the subset of 100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from augkd.augment import rng
from augkd.data.cache import DataCacheError, fingerprint_files, load_tensors, save_tensors
from augkd.data.decode import BadFile, decode_files
from augkd.data.folder import FolderSplit, scan_image_folder

__all__ = [
    "FolderPlan",
    "InMemoryDataset",
    "load_folder_split",
    "plan_folder_split",
    "stratified_positions",
    "subset_per_class",
]


class InMemoryDataset:
    """Images of one split as a single uint8 tensor with labels and stable sample ids.

    Attributes:
        images: uint8 ``(N, 3, H, W)``.
        labels: int64 ``(N,)`` class indices.
        sample_ids: int64 ``(N,)``, each sample's index in the full split (stable across subsets).
        classes: class names; ``labels`` index into it.
        split_size: number of samples in the full split (sample ids are below it).
        name: dataset name (archive or folder name, or ``cifar10``/``cifar100``).
        split: split name (``train``, ``val``, ``test``).
        source: where the images were read from.
        cache_path: the decoded-tensor cache file, or None when nothing was cached.
        cache_hit: whether the images came from the cache rather than a fresh decode.
        files: relative path of each sample (folder datasets), else None.
        skipped: ``(path, reason)`` of unreadable files left out (``bad_files="skip"``).
        subset: description of the subset draw, e.g. ``{"per_class": 100, "seed": 0}``, or None.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        classes: list[str],
        sample_ids: torch.Tensor | None = None,
        *,
        split_size: int | None = None,
        name: str = "",
        split: str = "",
        source: str = "",
        cache_path: str | None = None,
        cache_hit: bool = False,
        files: list[str] | None = None,
        skipped: list[BadFile] | None = None,
        subset: dict[str, int] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        n = images.shape[0]
        labels = labels.to(torch.int64)
        sample_ids = torch.arange(n) if sample_ids is None else sample_ids.to(torch.int64)
        if labels.shape != (n,) or sample_ids.shape != (n,):
            raise ValueError(
                f"labels and sample_ids must have shape ({n},); got {tuple(labels.shape)}, {tuple(sample_ids.shape)}"
            )
        if n and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must be in [0, {len(classes)}); got [{labels.min()}, {labels.max()}]")
        if files is not None and len(files) != n:
            raise ValueError(f"files must have {n} entries; got {len(files)}")
        self.images, self.labels, self.sample_ids, self.classes = images, labels, sample_ids, list(classes)
        self.split_size = int(split_size if split_size is not None else (int(sample_ids.max()) + 1 if n else 0))
        self.name, self.split, self.source = name, split, source
        self.cache_path, self.cache_hit = cache_path, cache_hit
        self.files, self.skipped, self.subset = files, list(skipped or []), subset

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        """``(image, label, sample_id)`` of row ``i`` (for inspection; training batches come from DeviceLoader)."""
        return self.images[i], int(self.labels[i]), int(self.sample_ids[i])

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"InMemoryDataset({self.name}/{self.split}: {len(self)} images {h}x{w}, {self.num_classes} classes)"

    def counts_per_class(self) -> torch.Tensor:
        """int64 ``(num_classes,)``: number of samples of each class."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def select(self, positions: torch.Tensor, subset: dict[str, int] | None = None) -> InMemoryDataset:
        """A new dataset of the rows at ``positions`` (sample ids, classes and metadata kept)."""
        positions = positions.to(torch.int64)
        files = None if self.files is None else [self.files[i] for i in positions.tolist()]
        return InMemoryDataset(
            self.images[positions],
            self.labels[positions],
            self.classes,
            self.sample_ids[positions],
            split_size=self.split_size,
            name=self.name,
            split=self.split,
            source=self.source,
            cache_path=self.cache_path,
            cache_hit=self.cache_hit,
            files=files,
            skipped=self.skipped,
            subset=subset if subset is not None else self.subset,
        )

    def describe(self) -> dict[str, Any]:
        """Plain-data summary: counts per class, image size, source, cache file and whether it was a hit."""
        h, w = self.image_size
        return {
            "name": self.name,
            "split": self.split,
            "source": self.source,
            "num_images": len(self),
            "split_size": self.split_size,
            "num_classes": self.num_classes,
            "image_size": [h, w],
            "counts_per_class": dict(zip(self.classes, self.counts_per_class().tolist())),
            "subset": self.subset,
            "cache_path": self.cache_path,
            "cache_hit": self.cache_hit,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def stratified_positions(
    labels: torch.Tensor, sample_ids: torch.Tensor, n: int, seed: int, classes: list[str] | None = None
) -> torch.Tensor:
    """Positions (ascending) of ``n`` samples of every class, chosen by a hash of ``(seed, sample id)``.

    Within a class the samples with the ``n`` smallest hashes are kept, so the choice of one sample does not
    depend on the others present.

    Raises:
        ValueError: ``n < 1``, or some class has fewer than ``n`` samples (named with its count).
    """
    if n < 1:
        raise ValueError(f"samples per class must be >= 1; got {n}")
    num_classes = len(classes) if classes is not None else int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=num_classes)
    short = (counts < n).nonzero().flatten().tolist()
    if short:
        names = [f"{classes[c] if classes else c} ({int(counts[c])})" for c in short[:5]]
        more = f" and {len(short) - 5} more" if len(short) > 5 else ""
        raise ValueError(f"cannot keep {n} images per class: too few in {', '.join(names)}{more}")
    keys = rng.key(seed, 0, sample_ids, rng.SLOTS["subset"])
    # Sort by (label, hash, sample id): the sample-id pre-sort makes equal hashes break ties the same way always.
    by_id = torch.argsort(sample_ids)
    order = by_id[torch.argsort((labels[by_id] << 32) | keys[by_id], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[labels[order]]
    return torch.sort(order[rank < n]).values


def subset_per_class(dataset: InMemoryDataset, n: int, seed: int) -> InMemoryDataset:
    """Keep ``n`` samples of every class, drawn by ``seed`` (see :func:`stratified_positions`).

    Raises:
        ValueError: some class has fewer than ``n`` samples.
    """
    positions = stratified_positions(dataset.labels, dataset.sample_ids, n, seed, dataset.classes)
    return dataset.select(positions, subset={"per_class": n, "seed": seed})


def _check_entry(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> None:
    """Ranges and shapes of a cache entry read back (its bytes passed their seal; a faulty writer could still lie).

    Raises:
        DataCacheError: one line naming the file and the first impossible value.
    """
    pt = path.with_suffix(".pt")
    hint = f"delete {pt.name} and {pt.with_suffix('.json').name} to decode again"
    missing = [k for k in ("images", "labels", "sample_ids") if k not in tensors]
    missing += [k for k in ("classes", "split_size", "name", "split", "source", "files") if k not in meta]
    if missing:
        raise DataCacheError(f"{pt}: decoded-data cache entry lacks {', '.join(missing)}; {hint}")
    images, labels, ids = tensors["images"], tensors["labels"], tensors["sample_ids"]
    n, classes, size = len(images), meta["classes"], meta.get("params", {}).get("size")
    problem = None
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        problem = f"images of {images.dtype} {tuple(images.shape)}, not uint8 (N, 3, H, W)"
    elif size is not None and tuple(images.shape[2:]) != (size, size):
        problem = f"{tuple(images.shape[2:])} images, not {size}x{size}"
    elif labels.shape != (n,) or ids.shape != (n,) or len(meta["files"]) != n:
        problem = f"{n} images but {tuple(labels.shape)} labels, {tuple(ids.shape)} ids, {len(meta['files'])} files"
    elif labels.is_floating_point() or ids.is_floating_point():
        problem = "labels or sample ids that are not integers"
    elif n and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        problem = f"labels in [{int(labels.min())}, {int(labels.max())}], outside [0, {len(classes)})"
    elif n and (int(ids[0]) < 0 or int(ids[-1]) >= int(meta["split_size"]) or bool((ids[1:] <= ids[:-1]).any())):
        problem = f"sample ids that are not ascending in [0, {meta['split_size']})"
    if problem:
        raise DataCacheError(f"{pt}: decoded-data cache entry holds {problem}; {hint}")


def _from_entry(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path, hit: bool, bad_files: str
) -> InMemoryDataset:
    _check_entry(tensors, meta, path)
    skipped = [(p, r) for p, r in meta.get("skipped", [])]
    if skipped and bad_files == "error":
        path_, reason = skipped[0]
        raise ValueError(f"unreadable image {path_}: {reason} (set data.bad_files=skip to leave such files out)")
    if skipped:  # skipping must not empty a class: that is an empty class folder in disguise
        counts = torch.bincount(tensors["labels"], minlength=len(meta["classes"])).tolist()
        empty = [c for c, n in zip(meta["classes"], counts) if n == 0]
        if empty:
            bad = [(p, r) for p, r in skipped if Path(p).parent.name == empty[0]] or skipped
            raise ValueError(
                f"class folder has no readable images: {Path(meta['source']) / empty[0]} ({len(bad)} unreadable, "
                f"e.g. {bad[0][0]}: {bad[0][1]})"
            )
    return InMemoryDataset(
        tensors["images"],
        tensors["labels"],
        meta["classes"],
        tensors["sample_ids"],
        split_size=meta["split_size"],
        name=meta["name"],
        split=meta["split"],
        source=meta["source"],
        cache_path=str(path.with_suffix(".pt")),
        cache_hit=hit,
        files=meta["files"],
        skipped=skipped,
        subset=meta.get("subset"),
    )


@dataclass(frozen=True)
class FolderPlan:
    """What :func:`load_folder_split` will read and where it caches it, worked out without decoding anything."""

    scan: FolderSplit
    """The full split's files and labels."""
    name: str
    """Dataset name used in reports and cache file names."""
    size: int
    """Stored image side in pixels."""
    crop_fraction: float
    """Centre-crop fraction for larger images."""
    full_path: Path
    """Cache entry (without suffix) of the whole split decoded."""
    positions: torch.Tensor
    """Scan positions (= sample ids) of the samples to load: all, or the subset's."""
    subset: dict[str, int] | None
    """``{"per_class", "seed"}`` of the subset draw, or None."""
    subset_path: Path | None
    """Cache entry of the subset alone, or None."""

    @property
    def labels(self) -> torch.Tensor:
        """Labels of the samples to load."""
        return torch.tensor(self.scan.labels, dtype=torch.int64)[self.positions]

    def cached(self) -> Path | None:
        """The ``.pt`` file of an existing cache entry that serves this plan, or None."""
        for path in (self.full_path, self.subset_path):
            if path is not None and path.with_suffix(".json").is_file() and path.with_suffix(".pt").is_file():
                return path.with_suffix(".pt")
        return None


def plan_folder_split(
    dataset_root: str | Path,
    split: str,
    size: int,
    crop_fraction: float,
    cache_dir: str | Path,
    *,
    classes: list[str] | None = None,
    per_class: int = 0,
    subset_seed: int = 0,
    name: str | None = None,
) -> FolderPlan:
    """Scan a split, fingerprint its files and draw the subset: everything but decoding (arguments as below).

    Raises:
        FileNotFoundError: missing dataset or split folder.
        ValueError: empty class folder, mismatched classes, or a class with fewer than ``per_class`` images.
    """
    dataset_root = Path(dataset_root)
    scan = scan_image_folder(dataset_root, split, classes)
    name = name or dataset_root.name
    params = {"size": size, "crop_fraction": crop_fraction, "classes": scan.classes}
    fingerprint = fingerprint_files(scan.root, scan.files, params)
    full_path = Path(cache_dir) / "decoded" / f"{name}-{scan.root.name}-{size}px-{fingerprint[:16]}"
    positions = torch.arange(len(scan.files))
    subset = subset_path = None
    if per_class:
        labels = torch.tensor(scan.labels, dtype=torch.int64)
        positions = stratified_positions(labels, positions, per_class, subset_seed, scan.classes)
        subset = {"per_class": per_class, "seed": subset_seed}
        subset_path = full_path.with_name(f"{full_path.name}-sub{per_class}s{subset_seed}")
    return FolderPlan(scan, name, size, crop_fraction, full_path, positions, subset, subset_path)


def load_folder_split(
    dataset_root: str | Path,
    split: str,
    size: int,
    crop_fraction: float,
    cache_dir: str | Path,
    *,
    classes: list[str] | None = None,
    per_class: int = 0,
    subset_seed: int = 0,
    workers: int = 1,
    bad_files: str = "error",
    quiet: bool = False,
    name: str | None = None,
) -> InMemoryDataset:
    """Scan, decode (or load from the cache) and optionally subset one split of an ImageFolder tree.

    A cached decode of the full split is reused for any subset of it; without one, only the subset's files
    are decoded (and cached under their own key).

    Args:
        dataset_root: folder holding the split folders.
        split: split folder (``auto`` = ``val`` or ``test``).
        size: stored image side in pixels.
        crop_fraction: centre-crop fraction for larger images (see :mod:`augkd.data.decode`).
        cache_dir: cache root; decoded tensors go to ``<cache_dir>/decoded``.
        classes: the class list the split must have (the training split's), or None.
        per_class: keep this many images per class (0: all).
        subset_seed: seed of the subset draw.
        workers: decoding processes.
        bad_files: ``error`` or ``skip`` (see :func:`augkd.data.decode.decode_files`).
        quiet: no progress bar.
        name: dataset name for reports and cache file names (default: the folder's name).

    Raises:
        FileNotFoundError: missing dataset or split folder.
        ValueError: empty class folder, mismatched classes, an unreadable image (``bad_files="error"``), or a
            class with fewer than ``per_class`` images.
    """
    plan = plan_folder_split(
        dataset_root,
        split,
        size,
        crop_fraction,
        cache_dir,
        classes=classes,
        per_class=per_class,
        subset_seed=subset_seed,
        name=name,
    )
    entry = load_tensors(plan.full_path)
    if entry is not None:
        dataset = _from_entry(*entry, plan.full_path, True, bad_files)
        if plan.subset is None:
            return dataset
        # The planned sample ids, as rows of the full decode (ids are ascending there); skipped files stay out,
        # exactly as when only the subset's files are decoded.
        rows = torch.searchsorted(dataset.sample_ids, plan.positions).clamp_(max=max(len(dataset) - 1, 0))
        present = dataset.sample_ids[rows] == plan.positions
        return dataset.select(rows[present], subset=plan.subset)
    path = plan.subset_path or plan.full_path
    entry = load_tensors(path)
    if entry is not None:
        return _from_entry(*entry, path, True, bad_files)

    scan = plan.scan
    files = [scan.files[i] for i in plan.positions.tolist()]
    images, kept, bad = decode_files(
        [scan.root / f for f in files],
        size,
        crop_fraction,
        workers=workers,
        bad_files=bad_files,
        quiet=quiet,
        desc=f"decode {plan.name}/{scan.root.name}",
    )
    meta = {
        "name": plan.name,
        "split": scan.root.name,
        "source": str(scan.root),
        "classes": scan.classes,
        "split_size": len(scan.files),
        "files": [f for f, k in zip(files, kept.tolist()) if k],
        "skipped": bad,
        "subset": plan.subset,
        "params": {"size": size, "crop_fraction": crop_fraction},
    }
    tensors = {"images": images, "labels": plan.labels[kept], "sample_ids": plan.positions[kept]}
    save_tensors(path, tensors, meta)
    return _from_entry(tensors, meta, path, False, bad_files)
