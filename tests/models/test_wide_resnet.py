"""Wide-ResNet: published parameter counts, argument checks, dropout."""

from __future__ import annotations

import pytest
import torch

from augkd.models import count_parameters, create_model
from augkd.models.wide_resnet import WideBasicBlock, WideResNet


def _count(name: str, num_classes: int = 10) -> int:
    with torch.device("meta"):
        return count_parameters(create_model(name, num_classes=num_classes))


@pytest.mark.parametrize(
    ("name", "published_m", "tol_m"),
    [
        ("wrn_28_10", 36.5, 0.05),  # Zagoruyko & Komodakis, Table 5 (CIFAR-10)
        ("wrn_40_2", 2.2, 0.05),
        ("wrn_16_4", 2.7, 0.05),
        ("wrn_16_2", 0.7, 0.05),
        ("wrn_28_2", 1.5, 0.05),
    ],
)
def test_parameter_counts(name: str, published_m: float, tol_m: float) -> None:
    assert abs(_count(name) / 1e6 - published_m) <= tol_m


def test_wrn_28_10_exact_reference_count() -> None:
    # The reference implementation's WRN-28-10 for 10 classes.
    assert _count("wrn_28_10") == 36_479_194


@pytest.mark.parametrize("depth", [27, 12, 4, 0])
def test_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(depth, 2)


def test_bad_width_and_dropout() -> None:
    with pytest.raises(ValueError, match="width"):
        WideResNet(16, 0)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("wrn_16_2", num_classes=10, drop_rate=1.0)


def test_structure() -> None:
    model = WideResNet(16, 2, num_classes=5)
    blocks = [m for m in model.modules() if isinstance(m, WideBasicBlock)]
    assert len(blocks) == 6  # n = 2 per stage
    assert [b.conv2.out_channels for b in blocks[::2]] == [32, 64, 128]
    assert model.fc.in_features == 128
    assert torch.all(model.fc.bias == 0)


def test_dropout_between_convs() -> None:
    torch.manual_seed(0)
    model = create_model("wrn_16_2", num_classes=3, drop_rate=0.5).train()
    x = torch.randn(2, 3, 16, 16)
    for m in model.modules():  # freeze BN statistics so only dropout makes the outputs differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))
