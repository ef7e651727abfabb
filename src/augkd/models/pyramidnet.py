"""PyramidNet (Han, Kim & Kim, "Deep Pyramidal Residual Networks", CVPR 2017) with optional ShakeDrop
(Yamada et al., "ShakeDrop Regularization for Deep Residual Learning", 2018), for 32x32 inputs.

A 16-channel 3x3 conv + BN stem is followed by ``3N`` residual blocks in three stages (strides 1, 2, 2). The width
grows additively: block ``k`` (1-based) has ``round(16 + k * alpha / (3N))`` bottleneck/base channels, so the
last block has ``16 + alpha`` (times 4 at the output of a bottleneck block). Shortcuts are parameter-free: a 2x2
average pool when downsampling, then zero channels padded to the residual branch's width. The head is
BN-ReLU-global-average-pool-linear. ``N = (depth - 2) / 6`` for basic blocks and ``(depth - 2) / 9`` for
bottlenecks. PyramidNet-272 (alpha=200, bottleneck) has 26.2M parameters on CIFAR-10 (26.3M on CIFAR-100;
the PyramidNet paper's table says 26.0M, below what the authors' released code builds).

ShakeDrop multiplies the residual branch of block ``l`` (of ``L``) by ``b + alpha - b * alpha`` in training, with a
per-image gate ``b ~ Bernoulli(1 - p_l)`` and ``alpha ~ U(-1, 1)``, and its gradient by ``b + beta - b * beta``
with ``beta ~ U(0, 1)``; in evaluation by the expectation ``1 - p_l``. The death probability follows the linear
decay rule ``p_l = l / L * p_L`` with ``p_L = 0.5``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augkd.models.layers import init_he
from augkd.models.registry import register_model

__all__ = [
    "PyramidBasicBlock",
    "PyramidBottleneck",
    "PyramidNet",
    "ShakeDrop",
    "ShakeDropFunction",
    "shakedrop_probabilities",
]


class ShakeDropFunction(torch.autograd.Function):
    """Forward ``x * (b + alpha - b * alpha)``, backward ``g * (b + beta - b * beta)``.

    ``gate`` (``b``), ``alpha`` and ``beta`` must broadcast against ``x`` (e.g. shape ``(N, 1, 1, 1)``).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, beta)
        return x * (gate + alpha - gate * alpha)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        gate, beta = ctx.saved_tensors
        return grad_output * (gate + beta - gate * beta), None, None, None


class ShakeDrop(nn.Module):
    """ShakeDrop on a residual branch output.

    Args:
        p_drop: death probability ``p_l`` of this block's gate, in [0, 1].
        alpha_range: range of the forward coefficient ``alpha`` (the paper's ``[-1, 1]``).
        beta_range: range of the backward coefficient ``beta`` (the paper's ``[0, 1]``).
    """

    def __init__(
        self,
        p_drop: float,
        alpha_range: tuple[float, float] = (-1.0, 1.0),
        beta_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if not 0.0 <= p_drop <= 1.0:
            raise ValueError(f"ShakeDrop p_drop must be in [0, 1], got {p_drop!r}")
        self.p_drop = float(p_drop)
        self.alpha_range = alpha_range
        self.beta_range = beta_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Randomly perturbed branch in training; ``(1 - p_drop) * x`` in evaluation."""
        if not self.training:
            # E[b + alpha - b * alpha] = (1 - p) + p * E[alpha] = 1 - p for the symmetric alpha range.
            a_lo, a_hi = self.alpha_range
            return x * ((1.0 - self.p_drop) + self.p_drop * 0.5 * (a_lo + a_hi))
        shape = (x.size(0),) + (1,) * (x.dim() - 1)
        gate = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p_drop)
        alpha = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(*self.alpha_range)
        beta = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(*self.beta_range)
        return ShakeDropFunction.apply(x, gate, alpha, beta)

    def extra_repr(self) -> str:
        return f"p_drop={self.p_drop:.4f}"


def shakedrop_probabilities(num_blocks: int, p_last: float = 0.5) -> list[float]:
    """Linear decay rule: death probability ``p_l = l / L * p_last`` for blocks ``l = 1..L``.

    Args:
        num_blocks: ``L``, the number of residual blocks.
        p_last: death probability of the last block (the paper's 0.5).

    Returns:
        ``L`` probabilities, increasing linearly to ``p_last``.
    """
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be positive, got {num_blocks!r}")
    if not 0.0 <= p_last <= 1.0:
        raise ValueError(f"p_last must be in [0, 1], got {p_last!r}")
    return [p_last * (i + 1) / num_blocks for i in range(num_blocks)]


class _PyramidBlock(nn.Module):
    expansion = 1

    def __init__(self, stride: int, p_drop: float | None) -> None:
        super().__init__()
        self.stride = stride
        self.shakedrop = ShakeDrop(p_drop) if p_drop is not None else None

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch (optionally ShakeDropped) plus the pooled, zero-padded identity."""
        out = self.residual(x)
        if self.shakedrop is not None:
            out = self.shakedrop(out)
        shortcut = x
        if self.stride != 1:
            shortcut = F.avg_pool2d(shortcut, 2, stride=2, ceil_mode=True)
        extra = out.size(1) - shortcut.size(1)
        if extra > 0:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, extra))
        return out + shortcut


class PyramidBasicBlock(_PyramidBlock):
    """BN-conv3x3-BN-ReLU-conv3x3-BN residual branch of PyramidNet (no ReLU after the addition)."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, p_drop: float | None = None) -> None:
        super().__init__(stride, p_drop)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch."""
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        return self.bn3(out)


class PyramidBottleneck(_PyramidBlock):
    """BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(4x)-BN residual branch of PyramidNet."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, p_drop: float | None = None) -> None:
        super().__init__(stride, p_drop)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * self.expansion, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(channels * self.expansion)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch."""
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return self.bn4(out)


class PyramidNet(nn.Module):
    """PyramidNet for 32x32 images, optionally with ShakeDrop.

    Args:
        depth: total depth; ``9N + 2`` with bottleneck blocks, ``6N + 2`` with basic blocks.
        alpha: total width increase over the ``3N`` blocks (the paper's widening factor).
        num_classes: classifier outputs.
        bottleneck: bottleneck blocks (output 4x wider) if True, basic blocks otherwise.
        shakedrop: apply ShakeDrop to every residual branch.
        p_last: ShakeDrop death probability of the last block (linear decay rule; 0.5 in the paper).

    Raises:
        ValueError: for a depth incompatible with the block type, a negative alpha or a bad ``p_last``.
    """

    def __init__(
        self,
        depth: int = 272,
        alpha: float = 200,
        num_classes: int = 100,
        bottleneck: bool = True,
        shakedrop: bool = True,
        p_last: float = 0.5,
    ) -> None:
        super().__init__()
        per_block = 9 if bottleneck else 6
        kind = "bottleneck" if bottleneck else "basic"
        if not isinstance(depth, int) or depth < per_block + 2 or (depth - 2) % per_block != 0:
            raise ValueError(f"PyramidNet depth with {kind} blocks must be {per_block}N+2 with N >= 1, got {depth!r}")
        if alpha < 0:
            raise ValueError(f"PyramidNet alpha must be non-negative, got {alpha!r}")
        if not 0.0 <= p_last <= 1.0:
            raise ValueError(f"p_last must be in [0, 1], got {p_last!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        block = PyramidBottleneck if bottleneck else PyramidBasicBlock
        n = (depth - 2) // per_block
        num_blocks = 3 * n
        self.depth, self.alpha, self.bottleneck = depth, alpha, bottleneck
        probs: list[float | None] = (
            list(shakedrop_probabilities(num_blocks, p_last)) if shakedrop else [None] * num_blocks
        )

        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_ch = 16
        width = 16.0
        step = alpha / num_blocks
        k = 0
        for stage, stride in enumerate((1, 2, 2)):
            blocks = []
            for j in range(n):
                width += step
                channels = round(width)
                blocks.append(block(in_ch, channels, stride if j == 0 else 1, probs[k]))
                in_ch = channels * block.expansion
                k += 1
            self.add_module(f"stage{stage + 1}", nn.Sequential(*blocks))
        self.bn_final = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch

        init_he(self)

    def shakedrop_probabilities(self) -> list[float]:
        """Death probabilities of the ShakeDrop modules, in block order (empty without ShakeDrop)."""
        return [m.p_drop for m in self.modules() if isinstance(m, ShakeDrop)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``."""
        x = self.bn1(self.conv1(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.relu(self.bn_final(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


@register_model(family="pyramidnet", description="PyramidNet-272 (alpha=200, bottleneck) + ShakeDrop, 26.2M params")
def pyramidnet_272_a200_shakedrop(num_classes: int = 100, p_last: float = 0.5) -> PyramidNet:
    """PyramidNet-272, alpha=200, bottleneck blocks, ShakeDrop (26.2M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        p_last: ShakeDrop death probability of the last block.
    """
    return PyramidNet(272, 200, num_classes, bottleneck=True, shakedrop=True, p_last=p_last)


@register_model(family="pyramidnet")
def pyramidnet_110_a48(num_classes: int = 10, shakedrop: bool = False, p_last: float = 0.5) -> PyramidNet:
    """PyramidNet-110, alpha=48, basic blocks (1.77M parameters on CIFAR-10; the paper rounds to 1.7M).

    Args:
        num_classes: classifier outputs.
        shakedrop: add ShakeDrop to every block.
        p_last: ShakeDrop death probability of the last block.
    """
    return PyramidNet(110, 48, num_classes, bottleneck=False, shakedrop=shakedrop, p_last=p_last)


@register_model(family="pyramidnet")
def pyramidnet_20_a48_shakedrop(num_classes: int = 10, p_last: float = 0.5) -> PyramidNet:
    """PyramidNet-20, alpha=48, basic blocks, ShakeDrop: a small CPU-friendly ShakeDrop network (0.31M parameters).

    Args:
        num_classes: classifier outputs.
        p_last: ShakeDrop death probability of the last block.
    """
    return PyramidNet(20, 48, num_classes, bottleneck=False, shakedrop=True, p_last=p_last)
