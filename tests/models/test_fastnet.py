"""augkd.models.fastnet: the CPU demo nets."""

from __future__ import annotations

import pytest
import torch

from augkd.models import count_parameters, create_model


def test_fastnet9_size_and_shapes():
    model = create_model("fastnet9", num_classes=10)
    assert 400_000 < count_parameters(model) < 420_000  # a quarter-width ResNet-9
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert 1_550_000 < count_parameters(create_model("fastnet9_w32", num_classes=10)) < 1_650_000


def test_fastnet_width_and_dropout_are_checked():
    assert create_model("fastnet9", num_classes=3, width=8).fc.weight.shape == (3, 64)
    with pytest.raises(ValueError, match="width"):
        create_model("fastnet9", width=0)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model("fastnet9", drop_rate=1.5)
