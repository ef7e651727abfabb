"""Wide Residual Networks for 32x32 inputs (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

WRN-d-k has ``n = (d - 4) / 6`` pre-activation basic blocks per stage, three stages of ``16k, 32k, 64k``
channels after a 16-channel 3x3 stem, and a final BN-ReLU-global-average-pool-linear head. Dropout (if any)
sits between the two 3x3 convolutions of each block. WRN-28-10 has 36.5M parameters on CIFAR-10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augkd.models.layers import add_stages, init_he
from augkd.models.registry import register_model

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus identity or 1x1-conv shortcut.

    When the shortcut needs a projection (channel or stride change), it is applied to the pre-activated input,
    as in the reference implementation.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward pass."""
        o = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.drop_rate > 0:
            o = F.dropout(o, p=self.drop_rate, training=self.training)
        o = self.conv2(o)
        return o + identity


class WideResNet(nn.Module):
    """WRN-depth-width for 32x32 images.

    Args:
        depth: total depth ``d``; must satisfy ``d = 6n + 4`` with ``n >= 1``.
        width: widening factor ``k`` (channels 16k, 32k, 64k).
        num_classes: classifier outputs.
        drop_rate: dropout probability between the two convolutions of every block.

    Raises:
        ValueError: for a depth not of the form 6n+4, a non-positive width, or a drop rate outside [0, 1).
    """

    def __init__(self, depth: int = 28, width: int = 10, num_classes: int = 10, drop_rate: float = 0.0) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"WideResNet width must be a positive int, got {width!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        n = (depth - 4) // 6
        self.depth, self.width = depth, width
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        plan = zip(channels[1:], (1, 2, 2))
        in_ch = add_stages(self, channels[0], plan, n, lambda i, o, s: WideBasicBlock(i, o, s, drop_rate))
        self.bn = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``."""
        x = self.conv1(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.relu(self.bn(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


@register_model(family="wide_resnet", description="WRN-28-10 (36.5M params), the paper's CIFAR network")
def wrn_28_10(num_classes: int = 10, drop_rate: float = 0.0) -> WideResNet:
    """Wide-ResNet 28-10 (36.5M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        drop_rate: dropout probability between the two convolutions of every block.
    """
    return WideResNet(28, 10, num_classes=num_classes, drop_rate=drop_rate)


@register_model(family="wide_resnet")
def wrn_28_2(num_classes: int = 10, drop_rate: float = 0.0) -> WideResNet:
    """Wide-ResNet 28-2 (1.5M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        drop_rate: dropout probability between the two convolutions of every block.
    """
    return WideResNet(28, 2, num_classes=num_classes, drop_rate=drop_rate)


@register_model(family="wide_resnet")
def wrn_40_2(num_classes: int = 10, drop_rate: float = 0.0) -> WideResNet:
    """Wide-ResNet 40-2 (2.2M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        drop_rate: dropout probability between the two convolutions of every block.
    """
    return WideResNet(40, 2, num_classes=num_classes, drop_rate=drop_rate)


@register_model(family="wide_resnet")
def wrn_16_4(num_classes: int = 10, drop_rate: float = 0.0) -> WideResNet:
    """Wide-ResNet 16-4 (2.7M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        drop_rate: dropout probability between the two convolutions of every block.
    """
    return WideResNet(16, 4, num_classes=num_classes, drop_rate=drop_rate)


@register_model(family="wide_resnet")
def wrn_16_2(num_classes: int = 10, drop_rate: float = 0.0) -> WideResNet:
    """Wide-ResNet 16-2 (0.7M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        drop_rate: dropout probability between the two convolutions of every block.
    """
    return WideResNet(16, 2, num_classes=num_classes, drop_rate=drop_rate)
