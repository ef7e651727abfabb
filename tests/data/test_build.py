from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from augkd.data import DataConfig, build_datasets, dataset_stats, describe_dataset


def test_build_real_cifar10_subsets(cifar10_zip, cache_dir):
    cfg = DataConfig(
        root=str(cifar10_zip), cache_dir=str(cache_dir), subset_per_class=30, test_subset_per_class=10, subset_seed=5
    )
    train, test = build_datasets(cfg, quiet=True)
    assert train.images.shape == (300, 3, 32, 32) and test.images.shape == (100, 3, 32, 32)
    assert train.counts_per_class().tolist() == [30] * 10 and test.counts_per_class().tolist() == [10] * 10
    assert train.classes == test.classes and train.split == "train" and test.split == "test"
    assert train.split_size == 50_000 and test.split_size == 10_000
    assert int(train.sample_ids.max()) < 50_000 and train.name == "cifar10-jpg"
    again, _ = build_datasets(cfg, quiet=True)
    assert again.cache_hit and torch.equal(again.sample_ids, train.sample_ids)


def test_build_imagewoof_train_and_eval_sizes(woof_zip, cache_dir):
    cfg = DataConfig(
        root=str(woof_zip), cache_dir=str(cache_dir), image_size=64, eval_size=48, subset_per_class=5, decode_workers=2
    )
    train, test = build_datasets(cfg, quiet=True)
    assert train.images.shape == (50, 3, 64, 64) and test.images.shape == (500, 3, 48, 48)
    assert test.split == "val" and train.num_classes == 10


def test_dataset_stats():
    assert dataset_stats("cifar10")["mean"] == (0.4914, 0.4822, 0.4465)
    assert dataset_stats(DataConfig(root="x/cifar10-jpg.zip"))["name"] == "cifar10"
    assert dataset_stats(DataConfig(root="x/CIFAR100_png"))["name"] == "cifar100"
    assert dataset_stats(DataConfig(root="x/imagewoof320-mini.zip"))["std"] == (0.229, 0.224, 0.225)
    assert dataset_stats(DataConfig(dataset="cifar100", root="x"))["name"] == "cifar100"
    assert dataset_stats(DataConfig(root="x/cifar10-jpg.zip", norm_stats="imagenet"))["name"] == "imagenet"
    with pytest.raises(ValueError, match="cifar10, cifar100, imagenet"):
        dataset_stats("mnist")
    with pytest.raises(ValueError, match="norm_stats"):
        DataConfig(norm_stats="mnist")


def test_describe_scans_then_prepares(make_tree, tmp_path):
    root = make_tree(("train", "val"), per_class=6)
    cfg = DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), test_subset_per_class=2)
    scanned = describe_dataset(cfg)
    assert scanned["classes"] == ["cat", "dog", "ship"] and scanned["normalization"]["name"] == "imagenet"
    assert scanned["train"]["counts_per_class"] == {"cat": 6, "dog": 6, "ship": 6}
    assert scanned["eval"]["num_images"] == 6 and scanned["eval"]["split"] == "val"
    assert not scanned["train"]["cache_hit"] and "not decoded yet" in scanned["train"]["cache"]
    assert not (tmp_path / "cache" / "decoded").exists()  # scanning decodes nothing

    prepared = describe_dataset(cfg, prepare=True)
    assert "decoded now into" in prepared["train"]["cache"] and prepared["train"]["image_size"] == [32, 32]
    assert prepared["eval"]["counts_per_class"] == {"cat": 2, "dog": 2, "ship": 2}
    assert describe_dataset(cfg)["eval"]["cache_hit"]  # the scan now finds the cache entry
    assert "loaded from" in describe_dataset(cfg, prepare=True)["eval"]["cache"]
    json.dumps(prepared)  # plain data, printable by `augkd data --json`


def test_describe_reports_skipped_files(make_tree, tmp_path):
    root = make_tree(("train", "test"), per_class=3)
    (root / "test" / "ship" / "0001.jpg").write_bytes(b"\xff\xd8 truncated")
    cfg = DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), bad_files="skip")
    info = describe_dataset(cfg, prepare=True)
    assert len(info["bad_files"]) == 1 and "ship/0001.jpg" in info["bad_files"][0]
    assert info["eval"]["num_images"] == 8
    with pytest.raises(ValueError, match=r"unreadable image .*ship/0001\.jpg"):
        build_datasets(DataConfig(root=str(root), cache_dir=str(tmp_path / "cache")), quiet=True)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found: .*nothing-here"):
        build_datasets(DataConfig(root=str(tmp_path / "nothing-here"), cache_dir=str(tmp_path)))


def test_every_kind_of_bad_input_is_reported_or_stops(bad_tree, tmp_path):
    bad_tree, bad = bad_tree
    cfg = DataConfig(root=str(bad_tree), cache_dir=str(tmp_path / "cache"), bad_files="skip")
    train, _ = build_datasets(cfg, quiet=True)
    # Every bad file reported with its path and a one-line reason; nothing else left out.
    assert [p.split("train/", 1)[1] for p, _ in train.skipped] == bad
    assert all(reason and "\n" not in reason for _, reason in train.skipped)
    assert len(train) == 12 + 4 and train.split_size == 12 + 4 + len(bad)
    # Never a wrong label: every kept image's label is its folder's class.
    assert [train.classes[y] for y in train.labels.tolist()] == [f.split("/")[0] for f in train.files]
    # Greyscale, 16-bit greyscale, CMYK and RGBA decode to 8-bit RGB; greyscale ones to equal channels.
    for name in ("ship/grey.png", "ship/grey16.png", "ship/cmyk.jpg", "dog/rgba.png"):
        image = train.images[train.files.index(name)]
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    grey, grey16 = (train.images[train.files.index(f"ship/{n}.png")] for n in ("grey", "grey16"))
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey16[1], grey16[2])
    # 16-bit values v * 257 read as the 8-bit v (a plain cast would wrap them around)
    from PIL import Image

    from augkd.data.decode import decode_one

    with Image.open(bad_tree / "train" / "ship" / "grey16.png") as im:
        Image.fromarray((np.asarray(im) // 257).astype(np.uint8)).save(tmp_path / "grey8.png")
    assert torch.equal(grey16, decode_one(tmp_path / "grey8.png", 32))
    info = describe_dataset(cfg, prepare=True)
    assert [b.split(": ", 1)[0].split("train/", 1)[1] for b in info["bad_files"]] == bad

    # Stop: the first bad file by path, and what to do about it.
    with pytest.raises(ValueError, match=r"unreadable image .*train/cat/trunc\.jpg: .*set data\.bad_files=skip"):
        build_datasets(DataConfig(root=str(bad_tree), cache_dir=str(tmp_path / "cache2")), quiet=True)


@pytest.mark.parametrize("bad_files", ["error", "skip"])
def test_empty_class_folders_stop_in_both_modes(make_tree, tmp_path, bad_files):
    root = make_tree(("train", "val"), per_class=2)
    for split in ("train", "val"):
        (root / split / "yak").mkdir()
        (root / split / "yak" / "notes.txt").write_text("no images")
    cfg = DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), bad_files=bad_files)
    with pytest.raises(ValueError, match=r"class folder has no images .*train/yak"):
        build_datasets(cfg, quiet=True)
    # Only unreadable images: empty once they are left out, which is the same mistake.
    for split in ("train", "val"):
        (root / split / "yak" / "0000.jpg").write_bytes(b"")
    match = r"class folder has no readable images: .*train/yak \(1 unreadable" if bad_files == "skip" else "0000.jpg"
    with pytest.raises(ValueError, match=match):
        build_datasets(cfg, quiet=True)


def test_links_that_cannot_be_followed_are_bad_files(make_tree, tmp_path):
    """A link loop or a dangling link among the images used to be a traceback from the folder scan."""
    import os

    root = make_tree(("train", "val"), per_class=2)
    cat = root / "train" / "cat"
    os.symlink("b.jpg", cat / "a.jpg")
    os.symlink("a.jpg", cat / "b.jpg")
    os.symlink("nowhere.jpg", cat / "c.jpg")
    cfg = DataConfig(root=str(root), cache_dir=str(tmp_path / "cache"), bad_files="skip")
    train, _ = build_datasets(cfg, quiet=True)
    assert sorted(p.rsplit("/", 1)[1] for p, _ in train.skipped) == ["a.jpg", "b.jpg", "c.jpg"]
    assert "symbolic links" in dict(train.skipped)[str(cat / "a.jpg")] and len(train) == 6
    with pytest.raises(ValueError, match=r"unreadable image .*train/cat/a\.jpg: .*symbolic links"):
        build_datasets(DataConfig(root=str(root), cache_dir=str(tmp_path / "c2")), quiet=True)
    os.symlink("zloop", root / "train" / "zloop")  # a class folder that is a link to itself
    with pytest.raises(ValueError, match=r"cannot read the folder .*zloop: Too many levels of symbolic links"):
        build_datasets(cfg, quiet=True)
