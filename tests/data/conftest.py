"""Fixtures for the data tests: real JPEG bytes from the archives and tiny ImageFolder trees built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from augkd.data.archive import resolve_root
from augkd.data.memory import InMemoryDataset, load_folder_split

TreeFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def real_jpegs(cifar10_zip: Path, cache_dir: Path) -> dict[str, list[bytes]]:
    """Eight real 32x32 CIFAR-10 JPEGs of each of three classes (from the archive's cached extraction)."""
    test = resolve_root(cifar10_zip, cache_dir) / "test"
    return {cls: [(test / cls / f"{i:04d}.jpg").read_bytes() for i in range(8)] for cls in ("cat", "dog", "ship")}


@pytest.fixture
def make_tree(tmp_path: Path, real_jpegs: dict[str, list[bytes]]) -> TreeFactory:
    """Factory: ``make_tree(splits=("train", "val"), per_class=4)`` writes a tiny ImageFolder tree of real JPEGs."""

    def make(splits: tuple[str, ...] = ("train", "val"), per_class: int = 4, name: str = "tree") -> Path:
        root = tmp_path / name
        for split in splits:
            for cls, images in real_jpegs.items():
                folder = root / split / cls
                folder.mkdir(parents=True)
                for i, data in enumerate(images[:per_class]):
                    (folder / f"{i:04d}.jpg").write_bytes(data)
        return root

    return make


@pytest.fixture(scope="session")
def cifar10_test(cifar10_zip: Path, cache_dir: Path) -> InMemoryDataset:
    """The full CIFAR-10 test split (10,000 images), decoded once and cached across test runs."""
    root = resolve_root(cifar10_zip, cache_dir)
    return load_folder_split(root, "test", 32, 1.0, cache_dir, workers=2, quiet=True, name="cifar10-jpg")
