"""ImageFolder scanning in the ImageNet layout: ``<root>/<split>/<class>/<image>``.

Classes are the sub-folders of a split in sorted order; a class's label is its position in that order.
Files are taken in sorted order within each class, so a sample's position in the scan (its *sample id*)
is stable for a given tree. Hidden files and files without an image extension are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "FolderSplit", "resolve_split", "scan_image_folder"]

#: Lower-case extensions taken as images (JPEG, PNG, WebP and GIF decode with torchvision, the rest with PIL).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

#: ``test_split="auto"`` takes the first of these that exists.
AUTO_TEST_SPLITS = ("val", "test")


@dataclass(frozen=True)
class FolderSplit:
    """The images of one split: file paths relative to ``root``, their labels and the class names."""

    root: Path
    """The split's folder (``<dataset>/<split>``)."""
    classes: list[str]
    """Class folder names, sorted; the label of a class is its index."""
    files: list[str]
    """Paths relative to ``root`` (``<class>/<file>``), sorted by class then name."""
    labels: list[int]
    """Label of each file."""

    def paths(self) -> list[Path]:
        """Absolute paths of the files."""
        return [self.root / f for f in self.files]


def resolve_split(dataset_root: str | Path, split: str) -> str:
    """The split folder name: ``split`` itself, or for ``"auto"`` the first of ``val``, ``test`` that exists.

    Raises:
        FileNotFoundError: ``split`` (or, for ``auto``, both candidates) is missing; the message names the
            expected path and lists the folders found.
    """
    dataset_root = Path(dataset_root)
    candidates = AUTO_TEST_SPLITS if split == "auto" else (split,)
    for name in candidates:
        if (dataset_root / name).is_dir():
            return name
    found = sorted(p.name for p in dataset_root.iterdir() if p.is_dir()) if dataset_root.is_dir() else []
    expected = " or ".join(str(dataset_root / c) for c in candidates)
    raise FileNotFoundError(f"split folder not found: {expected} (folders there: {', '.join(found) or 'none'})")


def _is_file(entry: os.DirEntry) -> bool:
    """A file, or a link that cannot be followed (a loop, a broken link): decoding reports that one as a bad
    file by path and reason, in both ``bad_files`` modes, instead of a traceback here."""
    try:
        return entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))  # dangling: reported
    except OSError:
        return True


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError as exc:
        raise ValueError(f"cannot read the folder {entry.path}: {exc.strerror or exc}") from None


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _first(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "") if names else "none"


def scan_image_folder(dataset_root: str | Path, split: str, classes: Sequence[str] | None = None) -> FolderSplit:
    """List the images of ``<dataset_root>/<split>/<class>/*``.

    Args:
        dataset_root: folder holding the split folders.
        split: split folder name (``auto`` resolves to ``val`` or ``test``).
        classes: the class list the split must have (e.g. the training split's), so that labels agree across
            splits; None takes the split's own sorted class folders.

    Raises:
        FileNotFoundError: the dataset folder or the split folder is missing.
        ValueError: no class folders, an empty class folder, or class folders that differ from ``classes``.
    """
    dataset_root = Path(dataset_root)
    if not dataset_root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {dataset_root.resolve()}")
    split_root = dataset_root / resolve_split(dataset_root, split)
    found = sorted(e.name for e in os.scandir(split_root) if not e.name.startswith(".") and _is_dir(e))
    if not found:
        raise ValueError(f"no class folders in {split_root} (expected <split>/<class>/<image>)")
    if len(found) == 1 and classes is None:  # a one-class classifier "trains" to 100% and learns nothing
        raise ValueError(f"only one class folder ({found[0]!r}) in {split_root}: a classifier needs at least 2 classes")
    if classes is not None and list(classes) != found:
        missing = _first(sorted(set(classes) - set(found)))
        extra = _first(sorted(set(found) - set(classes)))
        raise ValueError(f"class folders of {split_root} differ from training's: missing {missing}, extra {extra}")
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(found):
        images = sorted(e.name for e in os.scandir(split_root / name) if _is_image(e.name) and _is_file(e))
        if not images:
            raise ValueError(f"class folder has no images ({', '.join(IMAGE_EXTENSIONS)}): {split_root / name}")
        files.extend(f"{name}/{f}" for f in images)
        labels.extend([label] * len(images))
    return FolderSplit(root=split_root, classes=found, files=files, labels=labels)
