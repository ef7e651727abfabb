"""Gallery: a labelled PNG grid of real images across ops and levels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from augkd.bench.augment import sample_images
from augkd.experiments.gallery import make_gallery


@pytest.fixture(scope="module")
def images(cifar10_zip) -> torch.Tensor:
    return sample_images(cifar10_zip, 4)


def test_gallery_from_spec_writes_png(images: torch.Tensor, tmp_path: Path) -> None:
    out = make_gallery(images, "geo-n2-m5", tmp_path / "sub" / "gallery.png", levels=range(0, 11, 2))
    with Image.open(out) as png:
        assert png.format == "PNG"
        # 6 level columns + labels, 5 ops + 1 pair row, 100 dpi
        assert png.size == (round((1.1 * 6 + 1.2) * 100), round((1.1 * 6 + 0.6) * 100))
        pixels = torch.from_numpy(np.array(png.convert("L")))
    assert pixels.float().std() > 20  # images were drawn, not a blank canvas


def test_gallery_from_op_list(images: torch.Tensor, tmp_path: Path) -> None:
    out = make_gallery(images, ["rotate", "solarize"], tmp_path / "g.png", levels=[0, 5, 10], pair=())
    with Image.open(out) as png:
        assert png.size == (round((1.1 * 3 + 1.2) * 100), round((1.1 * 2 + 0.6) * 100))


def test_gallery_rejects_bad_input(images: torch.Tensor, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        make_gallery(images.float(), "geo-n2-m5", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no ops"):
        make_gallery(images, "none", tmp_path / "x.png")


def test_mix_gallery_shows_the_runs_mixed_images_with_their_weights(tmp_path, tiny_overrides, capsys):
    from augkd.cli import main
    from augkd.config import load_config
    from augkd.data import build_datasets
    from augkd.experiments.gallery import mixed_training_images
    from augkd.train.config import TrainConfig

    overrides = tiny_overrides(tmp_path, "augment.mixup=0.8", "augment.cutmix=1.0", "augment.policy=ra-n2-m9")
    cfg = load_config(TrainConfig, None, overrides)
    train_set, _ = build_datasets(cfg.data, quiet=True)
    images, targets = mixed_training_images(cfg, train_set, 8)
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    assert torch.allclose(targets.sum(1), torch.ones(8)) and (targets.max(1).values < 1).any()
    assert main(["gallery", "--mix", "--images", "8", "--out", str(tmp_path / "mix.png"), *overrides]) == 0
    with Image.open(tmp_path / "mix.png") as png:
        assert png.size == (round(1.8 * 4 * 100), round((1.9 * 2 + 0.3) * 100))
    assert main(["gallery", "--mix", *tiny_overrides(tmp_path)]) == 2
    assert "--mix shows Mixup/CutMix: pass augment.mixup" in capsys.readouterr().err
