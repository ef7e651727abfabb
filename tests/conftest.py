"""Shared fixtures: the real image archives in ../shared/data and a persistent decode cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUGKD_SHARED_DATA", REPO.parent / "shared" / "data"))
# Decoded tensors and unzipped archives survive between test runs (keyed by content, so never stale).
TEST_CACHE = Path(os.environ.get("AUGKD_TEST_CACHE", REPO / ".cache" / "augkd-test"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _archive(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.fail(f"shared data archive missing: {path} (the tests need ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def cifar10_zip() -> Path:
    return _archive("cifar10-jpg.zip")


@pytest.fixture(scope="session")
def tiny100_zip() -> Path:
    return _archive("tinyimagenet32-100.zip")


@pytest.fixture(scope="session")
def woof_zip() -> Path:
    return _archive("imagewoof320-mini.zip")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    return TEST_CACHE
