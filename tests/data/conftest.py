"""Fixtures for the data tests (``real_jpegs`` and ``make_tree`` live in the top-level conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from augkd.data.archive import resolve_root
from augkd.data.memory import InMemoryDataset, load_folder_split


@pytest.fixture(scope="session")
def cifar10_test(cifar10_zip: Path, cache_dir: Path) -> InMemoryDataset:
    """The full CIFAR-10 test split (10,000 images), decoded once and cached across test runs."""
    root = resolve_root(cifar10_zip, cache_dir)
    return load_folder_split(root, "test", 32, 1.0, cache_dir, workers=2, quiet=True, name="cifar10-jpg")
