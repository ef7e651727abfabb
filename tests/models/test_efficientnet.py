"""EfficientNet from timm: per-variant regularisation defaults, parameter counts, no network access."""

from __future__ import annotations

import socket

import pytest
import torch

from augkd.models import count_parameters, create_model
from augkd.models.efficientnet import EFFICIENTNET_DEFAULTS

# Tan & Le 2019, Table 2 (ImageNet, 1000 classes): B0..B7; Xie et al. 2020 (AdvProp): B8 88M.
PUBLISHED_M = {"b0": 5.3, "b1": 7.8, "b2": 9.2, "b3": 12, "b4": 19, "b5": 30, "b6": 43, "b7": 66, "b8": 88}


@pytest.mark.parametrize("variant", sorted(PUBLISHED_M))
def test_defaults_and_parameter_count(variant: str) -> None:
    with torch.device("meta"):
        model = create_model(f"efficientnet_{variant}", num_classes=1000)
    _, dropout, drop_connect = EFFICIENTNET_DEFAULTS[variant]
    assert model.get_classifier().out_features == 1000
    assert model.drop_rate == dropout
    drop_paths = [b.drop_path for stage in model.blocks for b in stage]
    # timm scales drop-connect linearly over the blocks, reaching drop_path_rate * (n - 1) / n at the last one.
    assert drop_paths[-1].drop_prob == pytest.approx(drop_connect * (len(drop_paths) - 1) / len(drop_paths))
    published = PUBLISHED_M[variant]
    rel = 0.06 if published >= 10 else 0.02  # the paper rounds to 2 significant figures
    assert abs(count_parameters(model) / 1e6 - published) <= rel * published


def test_dropout_defaults_match_paper() -> None:
    assert [EFFICIENTNET_DEFAULTS[f"b{i}"][1] for i in range(9)] == [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5, 0.5]


def test_overrides_and_tf_variant() -> None:
    with torch.device("meta"):
        model = create_model("efficientnet_b0", num_classes=10, drop_rate=0.1, drop_path_rate=0.0)
        tf_model = create_model("efficientnet_b0", num_classes=10, tf_variant=True)
    assert model.drop_rate == 0.1
    assert all(b.drop_path.__class__.__name__ == "Identity" for stage in model.blocks for b in stage)
    assert tf_model.bn1.eps == pytest.approx(1e-3)
    assert model.bn1.eps == pytest.approx(1e-5)


def test_rejects_pretrained_and_bad_rates() -> None:
    with pytest.raises(ValueError, match="pretrained"):
        create_model("efficientnet_b0", num_classes=10, pretrained=True)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("efficientnet_b0", num_classes=10, drop_rate=1.2)


def test_builds_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    model = create_model("efficientnet_b0", num_classes=5).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
