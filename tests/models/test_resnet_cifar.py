"""CIFAR ResNets: published parameter counts (option A), option B, argument checks."""

from __future__ import annotations

import pytest
import torch

from augkd.models import count_parameters, create_model
from augkd.models.resnet_cifar import CifarResNet


@pytest.mark.parametrize(("name", "published_m"), [("resnet20", 0.27), ("resnet32", 0.46), ("resnet56", 0.85)])
def test_parameter_counts_option_a(name: str, published_m: float) -> None:
    # He et al. 2016, Table 6 (CIFAR-10), figures rounded to 0.01M.
    assert abs(count_parameters(create_model(name, num_classes=10)) / 1e6 - published_m) <= 0.005


def test_option_b_adds_projections() -> None:
    a = count_parameters(create_model("resnet20", num_classes=10))
    b = count_parameters(create_model("resnet20", num_classes=10, shortcut="B"))
    # Two projections: 1x1 16->32 and 32->64 convs, each with a BN.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    out = create_model("resnet20", num_classes=4, shortcut="B")(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet20", num_classes=10, shortcut="C")
