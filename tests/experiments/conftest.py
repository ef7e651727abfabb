"""Fixtures of the experiment tests: one tiny teacher trained on real CIFAR-10 images."""

from __future__ import annotations

from pathlib import Path

import pytest

from augkd.config import load_config
from augkd.train.config import TrainConfig
from augkd.train.loop import train


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_overrides) -> Path:
    """``best.pt`` of a 2-epoch narrow fastnet9 trained on 200 CIFAR-10 images."""
    out = tmp_path_factory.mktemp("teacher")
    train(load_config(TrainConfig, None, tiny_overrides(out, "epochs=2", "name=teacher")), quiet=True)
    return out / "teacher" / "best.pt"
