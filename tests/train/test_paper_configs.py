"""The paper's CIFAR recipes (configs/paper) load, and their model and policy build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from augkd.augment import build_policy
from augkd.config import load_config
from augkd.models import count_parameters
from augkd.train.config import TrainConfig
from augkd.train.loop import build_model

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"
CONFIGS = sorted(PAPER.glob("*.yaml"))


def test_every_table2_row_has_a_config():
    names = {p.stem for p in CONFIGS}
    for dataset, nets in {
        "cifar10": ["wrn28-10", "shake26-2x32d", "shake26-2x96d", "shake26-2x112d", "pyramidnet272-shakedrop"],
        "cifar100": ["wrn28-10", "shake26-2x96d", "pyramidnet272-shakedrop"],
    }.items():
        for net in nets:
            assert f"{dataset}-{net}-aa" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_paper_config_builds(path):
    cfg = load_config(TrainConfig, path)
    num_classes = 100 if cfg.data.dataset == "cifar100" else 10
    with torch.device("meta"):  # shapes only: no memory, no compute
        model = build_model(cfg, num_classes)
        assert model(torch.empty(2, 3, 32, 32)).shape == (2, num_classes)
    assert count_parameters(model) > 2_000_000
    policy = build_policy(cfg.augment.policy, cfg.data.image_size, seed=cfg.seed, fill=cfg.augment.fill)
    images = torch.full((4, 3, 32, 32), 100, dtype=torch.uint8)
    assert policy(images, torch.arange(4), 0).shape == images.shape
