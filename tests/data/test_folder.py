from __future__ import annotations

import pytest

from augkd.data.archive import resolve_root
from augkd.data.folder import resolve_split, scan_image_folder

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_scan_real_archive(cifar10_zip, cache_dir):
    root = resolve_root(cifar10_zip, cache_dir)
    split = scan_image_folder(root, "test")
    assert split.classes == CIFAR10_CLASSES
    assert len(split.files) == 10_000
    assert [split.labels.count(c) for c in range(10)] == [1000] * 10
    # Sorted by class then file name, labels follow the class folder.
    assert split.files[0] == "airplane/0000.jpg" and split.labels[0] == 0
    assert split.files == sorted(split.files, key=lambda f: (split.classes.index(f.split("/")[0]), f))
    assert all(split.classes[lab] == f.split("/")[0] for f, lab in zip(split.files, split.labels))


def test_auto_split_prefers_val_then_test(make_tree):
    assert resolve_split(make_tree(("train", "val", "test"), name="both"), "auto") == "val"
    assert resolve_split(make_tree(("train", "test"), name="test_only"), "auto") == "test"
    with pytest.raises(FileNotFoundError, match=r"split folder not found: .*val or .*test \(folders there: train\)"):
        resolve_split(make_tree(("train",), name="train_only"), "auto")
    with pytest.raises(FileNotFoundError, match=r"split folder not found: .*holdout"):
        scan_image_folder(make_tree(("train",), name="again"), "holdout")


def test_ignores_non_images_and_hidden_files(make_tree):
    root = make_tree(("train",), per_class=2)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.jpg").write_bytes(b"")
    (root / "train" / "stray.jpg").write_bytes(b"")  # not inside a class folder
    (root / "train" / "dog" / "UPPER.JPEG").write_bytes((root / "train" / "dog" / "0000.jpg").read_bytes())
    split = scan_image_folder(root, "train")
    assert split.files == [
        "cat/0000.jpg",
        "cat/0001.jpg",
        "dog/0000.jpg",
        "dog/0001.jpg",
        "dog/UPPER.JPEG",
        "ship/0000.jpg",
        "ship/0001.jpg",
    ]
    assert split.labels == [0, 0, 1, 1, 1, 2, 2]


def test_clear_errors(make_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found: .*absent"):
        scan_image_folder(tmp_path / "absent", "train")
    root = make_tree(("train", "val"), per_class=2)
    (root / "train" / "zebra").mkdir()
    (root / "train" / "zebra" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder has no images .*train/zebra"):
        scan_image_folder(root, "train")
    (root / "empty_split").mkdir()
    with pytest.raises(ValueError, match="no class folders in .*empty_split"):
        scan_image_folder(root, "empty_split")
    with pytest.raises(ValueError, match="differ from training's: missing zebra, extra none"):
        scan_image_folder(root, "val", classes=["cat", "dog", "ship", "zebra"])


def test_one_class_folder_is_refused(make_tree):
    root = make_tree(("train",), per_class=2)
    for extra in sorted((root / "train").iterdir())[1:]:
        for f in extra.iterdir():
            f.unlink()
        extra.rmdir()
    with pytest.raises(ValueError, match=r"only one class folder \('.+'\) in .*train: a classifier needs at least 2"):
        scan_image_folder(root, "train")
