"""CIFAR-10 and CIFAR-100 from torchvision's official on-disk formats, as in-memory datasets.

``<root>/cifar-10-batches-py`` and ``<root>/cifar-100-python`` are the folders torchvision's
:class:`~torchvision.datasets.CIFAR10` and :class:`~torchvision.datasets.CIFAR100` read (and download into
where a network exists). The pickled arrays are already decoded, so nothing is cached: loading takes a
fraction of a second. Sample ids are the positions in torchvision's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from augkd.data.decode import resize_center_crop
from augkd.data.memory import InMemoryDataset

__all__ = ["CIFAR_FOLDERS", "load_cifar"]

#: Dataset kind -> (torchvision class, folder under root, display name).
CIFAR_FOLDERS: dict[str, tuple[type[datasets.CIFAR10], str, str]] = {
    "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", "CIFAR-10"),
    "cifar100": (datasets.CIFAR100, "cifar-100-python", "CIFAR-100"),
}


def load_cifar(
    kind: str, root: str | Path, train: bool, *, size: int = 32, crop_fraction: float = 1.0, download: bool = False
) -> InMemoryDataset:
    """Load a CIFAR split into memory as uint8 ``(N, 3, size, size)``.

    Args:
        kind: ``cifar10`` or ``cifar100``.
        root: folder holding ``cifar-10-batches-py`` / ``cifar-100-python``.
        train: the training split (else the test split).
        size: stored side in pixels; 32 keeps the exact pixels, other sizes resize (see
            :func:`augkd.data.decode.resize_center_crop`).
        crop_fraction: centre-crop fraction when ``size`` < 32.
        download: let torchvision download the archive when it is missing.

    Raises:
        ValueError: unknown ``kind``.
        FileNotFoundError: the files are missing or corrupt and could not be downloaded (names the expected path).
    """
    if kind not in CIFAR_FOLDERS:
        raise ValueError(f"CIFAR kind must be one of {', '.join(CIFAR_FOLDERS)}; got {kind!r}")
    cls, folder, display = CIFAR_FOLDERS[kind]
    expected = Path(root).resolve() / folder
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        hint = "the download failed" if download else "set data.download=true where a network exists"
        raise FileNotFoundError(
            f"{display} not found or corrupt: expected torchvision's python-version files in {expected} ({hint})"
        ) from err
    except OSError as err:  # download attempted without a network (URLError, socket errors)
        raise FileNotFoundError(
            f"{display} not found in {expected} and the download failed: {err} "
            f"(no network? put torchvision's python-version files there)"
        ) from err
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    images = resize_center_crop(images, size, crop_fraction)
    return InMemoryDataset(
        images,
        torch.as_tensor(ds.targets, dtype=torch.int64),
        list(ds.classes),
        name=kind,
        split="train" if train else "test",
        source=str(expected),
    )
