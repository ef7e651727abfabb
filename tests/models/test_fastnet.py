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


def test_group_norm_variant_treats_each_image_alone():
    torch.manual_seed(0)
    model = create_model("fastnet9", num_classes=10, width=8, norm="group").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(6, 3, 32, 32)
    # In training mode a BatchNorm net's output depends on the batch; this one's must not.
    torch.testing.assert_close(model(x)[:3], model(x[:3]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        create_model("fastnet9", norm="layer")


def test_average_pool_variant_has_no_max_pool_and_the_same_weights():
    plain = create_model("fastnet9", num_classes=10, width=8)
    smooth = create_model("fastnet9", num_classes=10, width=8, pool="avg")
    assert not any(isinstance(m, (torch.nn.MaxPool2d, torch.nn.AdaptiveMaxPool2d)) for m in smooth.modules())
    assert smooth.state_dict().keys() == plain.state_dict().keys()
    assert smooth(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="pool"):
        create_model("fastnet9", pool="min")
