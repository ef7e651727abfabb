"""CIFAR ResNets (He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2).

ResNet-``6n+2`` for 32x32 inputs: a 16-channel 3x3 conv-BN-ReLU stem, three stages of ``n`` post-activation basic
blocks (conv-BN-ReLU-conv-BN, add, ReLU) with 16, 32 and 64 channels, global average pooling and a linear layer.

Shortcuts that change shape default to the paper's CIFAR choice, **option A**: a parameter-free identity that
subsamples by striding and appends zero channels. **Option B** (``shortcut="B"``) uses a strided 1x1 conv + BN
projection instead. With option A, ResNet-20/32/56 have 0.27M/0.46M/0.85M parameters, as in the paper's Table 6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augkd.models.layers import add_stages, init_he
from augkd.models.registry import register_model

__all__ = ["CifarBasicBlock", "CifarResNet"]


class _ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class CifarBasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, add the shortcut, ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the shortcut).
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (1x1 conv + BN projection) when the shape changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            if shortcut == "A":
                self.shortcut = _ZeroPadShortcut(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward pass."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 images.

    Args:
        depth: total depth; must be ``6n + 2`` (20, 32, 44, 56, 110, ...).
        num_classes: classifier outputs.
        shortcut: ``"A"`` (zero-padding identity, the paper's CIFAR setting) or ``"B"`` (projection).
        base_width: channels of the first stage (16 in the paper; stages have 1x, 2x, 4x).

    Raises:
        ValueError: for a depth not of the form 6n+2, an unknown shortcut type or a non-positive width.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, shortcut: str = "A", base_width: int = 16) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, ...), got {depth!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}")
        if not isinstance(base_width, int) or base_width < 1:
            raise ValueError(f"base_width must be a positive int, got {base_width!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        n = (depth - 2) // 6
        self.depth, self.shortcut_type = depth, shortcut
        self.conv1 = nn.Conv2d(3, base_width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        plan = [(base_width * 2**i, stride) for i, stride in enumerate((1, 2, 2))]
        in_ch = add_stages(self, base_width, plan, n, lambda i, o, s: CifarBasicBlock(i, o, s, shortcut))
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


@register_model(family="resnet_cifar")
def resnet20(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-20 (0.27M parameters with option A shortcuts).

    Args:
        num_classes: classifier outputs.
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (1x1 conv projection).
    """
    return CifarResNet(20, num_classes, shortcut)


@register_model(family="resnet_cifar")
def resnet32(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-32 (0.46M parameters with option A shortcuts).

    Args:
        num_classes: classifier outputs.
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (1x1 conv projection).
    """
    return CifarResNet(32, num_classes, shortcut)


@register_model(family="resnet_cifar")
def resnet56(num_classes: int = 10, shortcut: str = "A") -> CifarResNet:
    """CIFAR ResNet-56 (0.85M parameters with option A shortcuts).

    Args:
        num_classes: classifier outputs.
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (1x1 conv projection).
    """
    return CifarResNet(56, num_classes, shortcut)
