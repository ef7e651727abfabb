"""Shared fixtures: the real image archives in ../shared/data and a persistent decode cache."""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision.io import decode_jpeg

from augkd.config import load_config
from augkd.data.archive import resolve_root
from augkd.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUGKD_SHARED_DATA", REPO.parent / "shared" / "data"))
# Decoded tensors and unzipped archives survive between test runs (keyed by content, so never stale).
TEST_CACHE = Path(os.environ.get("AUGKD_TEST_CACHE", REPO / ".cache" / "augkd-test"))

torch.set_num_threads(min(2, os.cpu_count() or 1))

TreeFactory = Callable[..., Path]


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
def tiny_overrides(cifar10_zip: Path, cache_dir: Path) -> Callable[..., list[str]]:
    """Factory: config overrides for a tiny real run (200 CIFAR-10 images, a narrow fastnet9, float32) in
    ``out_dir``; later overrides in ``extra`` win."""

    def make(out_dir: Path, *extra: str) -> list[str]:
        return [
            f"out_dir={out_dir}",
            "name=tiny",
            "epochs=1",
            "batch_size=50",
            "eval_batch_size=100",
            "amp=off",
            "model.name=fastnet9",
            "model.kwargs.width=8",
            f"data.root={cifar10_zip}",
            f"data.cache_dir={cache_dir}",
            "data.subset_per_class=20",
            "data.test_subset_per_class=10",
            "optim.lr=0.05",
            *extra,
        ]

    return make


def _read_jpegs(archive: Path, names: list[str]) -> list[torch.Tensor]:
    with zipfile.ZipFile(archive) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points image IO to torchcodec
        return [decode_jpeg(torch.frombuffer(bytearray(z.read(n)), dtype=torch.uint8)) for n in names]


@pytest.fixture(scope="session")
def read_jpegs() -> Callable[[Path, list[str]], list[torch.Tensor]]:
    """``read_jpegs(archive, names)``: the named JPEGs of a zip archive, decoded to uint8 (3, H, W) tensors."""
    return _read_jpegs


@pytest.fixture(scope="session")
def load_cfg() -> Callable[..., TrainConfig]:
    """``load_cfg(path, overrides)``: a shipped config loaded with overrides."""
    return lambda path, overrides=None: load_config(TrainConfig, path, list(overrides or []))


@pytest.fixture
def bad_tree(make_tree: TreeFactory) -> tuple[Path, list[str]]:
    """A tiny ImageFolder tree whose train split holds every kind of bad input next to real JPEGs.

    Returns ``(root, bad)``: ``bad`` lists the unreadable files of the train split (relative, sorted): a truncated
    JPEG, a zero-byte file, random bytes behind a PNG signature, text named ``.jpg``. Readable but unusual:
    greyscale, 16-bit greyscale, CMYK and RGBA images.
    """
    import io

    import numpy as np
    from PIL import Image

    root = make_tree(("train", "val"), per_class=4)
    train = root / "train"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    photo = Image.fromarray(pixels)
    jpeg = io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=90)
    (train / "cat" / "trunc.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (train / "cat" / "zero.jpg").write_bytes(b"")
    (train / "dog" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (train / "dog" / "text.jpg").write_text("not an image\n")
    photo.convert("L").save(train / "ship" / "grey.png")
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(train / "ship" / "grey16.png")
    photo.convert("CMYK").save(train / "ship" / "cmyk.jpg")
    photo.convert("RGBA").save(train / "dog" / "rgba.png")
    return root, ["cat/trunc.jpg", "cat/zero.jpg", "dog/garbage.png", "dog/text.jpg"]


@pytest.fixture
def sealed_teacher_cache(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``sealed_teacher_cache(cfg, epochs)`` writes a small valid teacher cache whose key fits ``cfg``
    (with a made-up training-set fingerprint) and returns its folder: for commands that check a cache's header
    and files without reading the training set."""
    from augkd.distill.cache import CacheLayout, cache_key, prepare_cache_dir, write_epoch
    from augkd.train.build import pipeline_key

    def make(cfg: TrainConfig, epochs: int, name: str = "cache") -> Path:
        root, rows, k = tmp_path / name, 4, 5
        header = {
            "key": cache_key(pipeline_key(cfg), "0" * 64, None, None),
            "k": k,
            "temperature": cfg.kd.temperature,
            "num_classes": 10,
            "rows": rows,
            "logits_dtype": "float32",
            "dataset": {"name": "cifar10-jpg", "split": "train", "num_images": rows},
        }
        prepare_cache_dir(root, header, torch.arange(rows))
        layout = CacheLayout(rows, k, 10)
        indices, logits = torch.arange(k).expand(rows, k), torch.linspace(2.0, 0.0, k).expand(rows, k)
        for epoch in range(epochs):
            write_epoch(root, epoch, layout, indices, logits, torch.zeros(rows, 4), header)
        return root

    return make
