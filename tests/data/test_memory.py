from __future__ import annotations

import os
import shutil

import pytest
import torch

from augkd.data.archive import resolve_root
from augkd.data.decode import decode_one
from augkd.data.memory import InMemoryDataset, load_folder_split, stratified_positions, subset_per_class


def test_cifar10_test_split(cifar10_test):
    ds = cifar10_test
    assert ds.images.shape == (10_000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.sample_ids.dtype == torch.int64
    assert torch.equal(ds.sample_ids, torch.arange(10_000)) and ds.split_size == 10_000
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and ds.num_classes == 10
    assert ds.counts_per_class().tolist() == [1000] * 10
    # Row i is the file at scan position i, decoded with its exact pixels (32x32 at size 32).
    path = os.path.join(ds.source, ds.files[1234])
    assert torch.equal(ds.images[1234], decode_one(path))
    info = ds.describe()
    assert info["num_images"] == 10_000 and info["image_size"] == [32, 32] and info["counts_per_class"]["cat"] == 1000
    assert info["cache_path"].endswith(".pt") and info["skipped"] == []


def test_tiny_imagenet_val(tiny100_zip, cache_dir):
    ds = load_folder_split(resolve_root(tiny100_zip, cache_dir), "auto", 32, 0.875, cache_dir, workers=2, quiet=True)
    assert ds.split == "val" and ds.images.shape == (5000, 3, 32, 32)
    assert ds.num_classes == 100 and ds.counts_per_class().tolist() == [50] * 100
    assert ds.classes[0] == "n01443537" and ds.classes == sorted(ds.classes)


def test_imagewoof_photos_resized(woof_zip, cache_dir):
    root = resolve_root(woof_zip, cache_dir)
    ds = load_folder_split(root, "val", 64, 0.875, cache_dir, workers=2, quiet=True)
    assert ds.images.shape == (500, 3, 64, 64) and ds.counts_per_class().tolist() == [50] * 10
    assert ds.classes[0] == "n02086240"
    # Stored pixels follow the documented rule: shorter side to round(64 / 0.875) = 73, centre crop 64.
    assert torch.equal(ds.images[7], decode_one(os.path.join(ds.source, ds.files[7]), 64, 0.875))
    assert ds.images.float().std() > 20  # real photos, not a constant fill


def test_cache_hit_and_redecode_on_change(make_tree, tmp_path):
    root = make_tree(("train",), per_class=4)
    cache = tmp_path / "cache"
    first = load_folder_split(root, "train", 32, 1.0, cache, quiet=True)
    assert not first.cache_hit and len(first) == 12
    again = load_folder_split(root, "train", 32, 1.0, cache, quiet=True)
    assert again.cache_hit and again.cache_path == first.cache_path and torch.equal(again.images, first.images)
    # Other decode parameters are another entry.
    assert not load_folder_split(root, "train", 24, 1.0, cache, quiet=True).cache_hit
    # Replace one image's content: the fingerprint changes and the folder is decoded again.
    target = root / "train" / "dog" / "0002.jpg"
    shutil.copy(root / "train" / "ship" / "0000.jpg", target)
    changed = load_folder_split(root, "train", 32, 1.0, cache, quiet=True)
    assert not changed.cache_hit and changed.cache_path != first.cache_path
    row = changed.files.index("dog/0002.jpg")
    assert torch.equal(changed.images[row], changed.images[changed.files.index("ship/0000.jpg")])
    assert not torch.equal(changed.images[row], first.images[row])
    # Removing a file changes the scan, so the split is decoded again with one image fewer.
    target.unlink()
    assert len(load_folder_split(root, "train", 32, 1.0, cache, quiet=True)) == 11


def test_bad_file_error_or_skip_with_stable_ids(make_tree, tmp_path):
    root = make_tree(("train",), per_class=4)
    (root / "train" / "dog" / "0001.jpg").write_bytes(b"")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"unreadable image .*dog/0001\.jpg"):
        load_folder_split(root, "train", 32, 1.0, cache, quiet=True)
    ds = load_folder_split(root, "train", 32, 1.0, cache, bad_files="skip", quiet=True)
    assert len(ds) == 11 and ds.split_size == 12
    assert 5 not in ds.sample_ids.tolist() and ds.sample_ids.tolist() == [i for i in range(12) if i != 5]
    assert [p.endswith("dog/0001.jpg") for p, _ in ds.skipped] == [True]
    assert ds.describe()["skipped"][0]["reason"]
    # The cached skip-mode decode still refuses the bad file in error mode.
    assert load_folder_split(root, "train", 32, 1.0, cache, bad_files="skip", quiet=True).cache_hit
    with pytest.raises(ValueError, match="unreadable image"):
        load_folder_split(root, "train", 32, 1.0, cache, quiet=True)


def test_subset_per_class_is_stratified_seeded_and_nested(cifar10_test):
    sub = subset_per_class(cifar10_test, 20, seed=1)
    assert len(sub) == 200 and sub.counts_per_class().tolist() == [20] * 10
    assert torch.equal(sub.images, cifar10_test.images[sub.sample_ids])  # ids index the full split
    assert torch.equal(sub.labels, cifar10_test.labels[sub.sample_ids])
    assert torch.equal(subset_per_class(cifar10_test, 20, seed=1).sample_ids, sub.sample_ids)
    other = subset_per_class(cifar10_test, 20, seed=2)
    assert set(other.sample_ids.tolist()) != set(sub.sample_ids.tolist())
    bigger = subset_per_class(cifar10_test, 50, seed=1)
    assert set(sub.sample_ids.tolist()) <= set(bigger.sample_ids.tolist())
    # A subset of a subset draws the same samples as the subset of the whole.
    assert torch.equal(subset_per_class(bigger, 20, seed=1).sample_ids, sub.sample_ids)
    assert sub.files == [cifar10_test.files[i] for i in sub.sample_ids.tolist()]
    assert sub.describe()["subset"] == {"per_class": 20, "seed": 1}


def test_subset_errors():
    ds = InMemoryDataset(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1]), ["a", "b"])
    with pytest.raises(ValueError, match=r"cannot keep 3 images per class: too few in b \(2\)"):
        subset_per_class(ds, 3, seed=0)
    with pytest.raises(ValueError, match="must be >= 1"):
        stratified_positions(ds.labels, ds.sample_ids, 0, seed=0)


def test_subset_decode_matches_full_decode(make_tree, tmp_path):
    root = make_tree(("train",), per_class=8)
    only_subset = load_folder_split(root, "train", 32, 1.0, tmp_path / "c1", per_class=3, subset_seed=4, quiet=True)
    assert len(only_subset) == 9 and only_subset.cache_path.endswith("-sub3s4.pt")
    full = load_folder_split(root, "train", 32, 1.0, tmp_path / "c2", quiet=True)
    from_full = load_folder_split(root, "train", 32, 1.0, tmp_path / "c2", per_class=3, subset_seed=4, quiet=True)
    assert from_full.cache_hit and from_full.cache_path == full.cache_path
    for a, b in ((only_subset, from_full), (only_subset, subset_per_class(full, 3, seed=4))):
        assert torch.equal(a.sample_ids, b.sample_ids) and torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels) and a.files == b.files


def test_dataset_checks_its_inputs():
    with pytest.raises(ValueError, match="uint8"):
        InMemoryDataset(torch.zeros(2, 3, 4, 4), torch.zeros(2), ["a"])
    with pytest.raises(ValueError, match="labels must be in"):
        InMemoryDataset(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a"])
