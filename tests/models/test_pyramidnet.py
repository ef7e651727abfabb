"""PyramidNet + ShakeDrop: parameter counts, widening rule, ShakeDrop probabilities and coefficients."""

from __future__ import annotations

import pytest
import torch

from augkd.models import count_parameters, create_model
from augkd.models.pyramidnet import (
    PyramidBasicBlock,
    PyramidBottleneck,
    PyramidNet,
    ShakeDrop,
    ShakeDropFunction,
    shakedrop_probabilities,
)


@pytest.fixture(scope="module")
def pyramidnet_272() -> PyramidNet:
    """The registered PyramidNet-272 for CIFAR-100, on the meta device (built once: it has 900 modules)."""
    with torch.device("meta"):
        return create_model("pyramidnet_272_a200_shakedrop", num_classes=100)


def test_pyramidnet_272_parameter_count(pyramidnet_272: PyramidNet) -> None:
    count_100 = count_parameters(pyramidnet_272)
    count_10 = count_100 - 90 * (pyramidnet_272.num_features + 1)  # 90 fewer classifier rows
    # PyramidNet-272 (alpha=200, bottleneck) + ShakeDrop on CIFAR-10: 26.2M, as listed in the AutoAugment and
    # AugKD result tables. The authors' released PyTorch PyramidNet builds exactly this network.
    assert abs(count_10 / 1e6 - 26.2) <= 0.05
    assert count_10 == 26_210_842
    assert count_100 == 26_288_692


def test_widening_rule(pyramidnet_272: PyramidNet) -> None:
    model = pyramidnet_272
    blocks = [m for m in model.modules() if isinstance(m, PyramidBottleneck)]
    assert len(blocks) == 90
    widths = [b.conv1.out_channels for b in blocks]
    assert widths == [round(16 + (k + 1) * 200 / 90) for k in range(90)]
    assert widths[-1] == 216
    assert model.num_features == 864 == model.fc.in_features
    basic = PyramidNet(20, 48, 10, bottleneck=False, shakedrop=False)
    assert [b.conv1.out_channels for b in basic.modules() if isinstance(b, PyramidBasicBlock)] == [
        round(16 + k * 48 / 9) for k in range(1, 10)
    ]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="9N\\+2"):
        PyramidNet(30, 48, bottleneck=True)
    with pytest.raises(ValueError, match="6N\\+2"):
        PyramidNet(21, 48, bottleneck=False)
    with pytest.raises(ValueError, match="p_last"):
        create_model("pyramidnet_20_a48_shakedrop", num_classes=10, p_last=1.5)


def test_linear_decay_rule(pyramidnet_272: PyramidNet) -> None:
    probs = shakedrop_probabilities(90)
    assert probs[-1] == 0.5
    torch.testing.assert_close(torch.tensor(probs), torch.arange(1, 91) / 90 * 0.5, check_dtype=False)
    assert pyramidnet_272.shakedrop_probabilities() == probs
    small = create_model("pyramidnet_20_a48_shakedrop", num_classes=10)
    assert small.shakedrop_probabilities() == pytest.approx([0.5 * k / 9 for k in range(1, 10)])
    assert create_model("pyramidnet_110_a48", num_classes=10).shakedrop_probabilities() == []


def test_function_coefficients() -> None:
    x = torch.ones(4, 3, requires_grad=True)
    gate = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    alpha = torch.tensor([[-0.5], [0.7], [-0.5], [0.7]])
    beta = torch.tensor([[0.3], [0.3], [0.3], [0.9]])
    out = ShakeDropFunction.apply(x, gate, alpha, beta)
    # gate 1: identity; gate 0: forward scaled by alpha, backward by beta.
    torch.testing.assert_close(out[:, 0], torch.tensor([1.0, 1.0, -0.5, 0.7]))
    out.sum().backward()
    torch.testing.assert_close(x.grad[:, 0], torch.tensor([1.0, 1.0, 0.3, 0.9]))


def test_shakedrop_module_training_and_eval() -> None:
    torch.manual_seed(0)
    sd = ShakeDrop(0.5)
    x = torch.ones(4000, 1, requires_grad=True)
    out = sd(x)
    coeff = out.detach()[:, 0]
    kept = coeff == 1
    assert 0.4 < kept.float().mean() < 0.6  # survival probability 1 - p
    assert (coeff[~kept].abs() <= 1).all() and (coeff[~kept] < 0).any()  # alpha ~ U(-1, 1)
    out.sum().backward()
    g = x.grad[:, 0]
    torch.testing.assert_close(g[kept], torch.ones_like(g[kept]))
    assert ((g[~kept] >= 0) & (g[~kept] <= 1)).all()  # beta ~ U(0, 1)
    assert not torch.allclose(g[~kept], coeff[~kept])
    sd.eval()
    torch.testing.assert_close(sd(torch.full((2, 3), 2.0)), torch.full((2, 3), 1.0))  # scaled by 1 - p


def test_model_eval_scaling() -> None:
    torch.manual_seed(0)
    model = create_model("pyramidnet_20_a48_shakedrop", num_classes=10).eval()
    x = torch.randn(2, 3, 16, 16)
    block = model.stage2[1]
    with torch.inference_mode():
        h = model.stage2[0](model.stage1(model.bn1(model.conv1(x))))
        padded = torch.nn.functional.pad(h, (0, 0, 0, 0, 0, block.conv2.out_channels - h.size(1)))
        expected = block.residual(h) * (1 - block.shakedrop.p_drop) + padded
        torch.testing.assert_close(block(h), expected)
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_zero_padded_shortcut_shapes() -> None:
    block = PyramidBasicBlock(16, 21, stride=2)
    out = block(torch.randn(2, 16, 8, 8))
    assert out.shape == (2, 21, 4, 4)
