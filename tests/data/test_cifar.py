"""CIFAR in torchvision's format. No real pickles exist here, so a tiny fake set is written in the same layout."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar

from augkd.data import DataConfig, build_datasets
from augkd.data.cifar import load_cifar

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _fake_cifar10(root: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    """torchvision's ``cifar-10-batches-py``: pickled dicts with ``data`` (N, 3072) planar RGB rows and ``labels``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        _write(folder / name, {"data": data, "labels": labels})
        rows[name] = data
    _write(folder / "batches.meta", {"label_names": CLASSES})
    return rows


@pytest.fixture
def no_md5(monkeypatch):
    """The fake files cannot match torchvision's MD5 sums; everything else runs torchvision's real code."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


def test_missing_files_name_the_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found .*cifar-10-batches-py .*data\.download=true"):
        load_cifar("cifar10", tmp_path, train=True)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-100 not found .*cifar-100-python"):
        build_datasets(DataConfig(dataset="cifar100", root=str(tmp_path)))


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found in .*cifar-10-batches-py and the download failed"):
        load_cifar("cifar10", tmp_path, train=True, download=True)


def test_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="cifar10, cifar100"):
        load_cifar("cifar1000", tmp_path, train=True)


def test_fake_cifar10_loads_exactly(tmp_path, no_md5):
    rows = _fake_cifar10(tmp_path)
    train = load_cifar("cifar10", tmp_path, train=True)
    test = load_cifar("cifar10", tmp_path, train=False)
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8 and len(test) == 20
    assert train.classes == CLASSES and train.counts_per_class().tolist() == [10] * 10
    # Row layout: 1024 red, 1024 green, 1024 blue values, each row-major 32x32.
    assert torch.equal(train.images[25], torch.from_numpy(rows["data_batch_2"][5].reshape(3, 32, 32)))
    assert torch.equal(test.images[3], torch.from_numpy(rows["test_batch"][3].reshape(3, 32, 32)))
    assert torch.equal(train.sample_ids, torch.arange(100)) and train.labels[13] == 3
    assert train.source.endswith("cifar-10-batches-py") and train.cache_path is None


def test_build_cifar10_with_subsets_and_size(tmp_path, no_md5):
    _fake_cifar10(tmp_path)
    cfg = DataConfig(dataset="cifar10", root=str(tmp_path), subset_per_class=3, test_subset_per_class=1)
    train, test = build_datasets(cfg, quiet=True)
    assert train.counts_per_class().tolist() == [3] * 10 and test.counts_per_class().tolist() == [1] * 10
    big, _ = build_datasets(DataConfig(dataset="cifar10", root=str(tmp_path), image_size=48), quiet=True)
    assert big.images.shape == (100, 3, 48, 48)


def test_fake_cifar100(tmp_path, no_md5):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.arange(6 * 3072, dtype=np.int64).reshape(6, 3072).astype(np.uint8)
    _write(folder / "train", {"data": data, "fine_labels": [0, 1, 2, 0, 1, 2], "coarse_labels": [0] * 6})
    _write(folder / "test", {"data": data[:3], "fine_labels": [2, 1, 0], "coarse_labels": [0] * 3})
    _write(folder / "meta", {"fine_label_names": ["apple", "bee", "cup"], "coarse_label_names": ["all"]})
    train = load_cifar("cifar100", tmp_path, train=True)
    assert train.classes == ["apple", "bee", "cup"] and train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(train.images[4], torch.from_numpy(data[4].reshape(3, 32, 32)))
