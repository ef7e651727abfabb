"""Shake-Shake regularised ResNets for 32x32 inputs (Gastaldi, "Shake-Shake regularization", 2017).

Shake-Shake 26 2xND: a 16-channel 3x3 conv + BN stem, three stages of four blocks with ``D, 2D, 4D`` channels,
then ReLU-global-average-pool-linear. Every block has two residual branches (ReLU-conv3x3-BN-ReLU-conv3x3-BN)
mixed with random per-image coefficients ("Shake-Shake-Image"): ``alpha ~ U(0, 1)`` in the forward pass and an
independent ``beta ~ U(0, 1)`` in the backward pass; at evaluation both branches are weighted 0.5. A shortcut
that changes width or resolution is ReLU, then two paths (a 1x1 strided average pool + 1x1 conv, and the same on
the input shifted by one pixel) concatenated, then BN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from augkd.models.layers import add_stages, init_he
from augkd.models.registry import register_model

__all__ = ["ShakeShakeBlock", "ShakeShakeFunction", "ShakeShakeResNet", "shake_shake_mix"]


class ShakeShakeFunction(torch.autograd.Function):
    """``alpha * x1 + (1 - alpha) * x2`` forward; gradients ``beta * g`` and ``(1 - beta) * g`` backward.

    ``alpha`` and ``beta`` must broadcast against the inputs (e.g. shape ``(N, 1, 1, 1)`` for per-image).
    """

    @staticmethod
    def forward(ctx, x1: torch.Tensor, x2: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(beta)
        return alpha * x1 + (1 - alpha) * x2

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        (beta,) = ctx.saved_tensors
        return beta * grad_output, (1 - beta) * grad_output, None, None


def shake_shake_mix(
    x1: torch.Tensor,
    x2: torch.Tensor,
    training: bool,
    forward_shake: bool = True,
    backward_shake: bool = True,
) -> torch.Tensor:
    """Mix two branch outputs with Shake-Shake-Image coefficients.

    Args:
        x1: first branch, shape ``(N, ...)``.
        x2: second branch, same shape.
        training: random per-image coefficients if True, a deterministic 0.5/0.5 average otherwise.
        forward_shake: draw ``alpha ~ U(0, 1)`` (else 0.5) for the forward pass.
        backward_shake: draw an independent ``beta ~ U(0, 1)`` (else 0.5) for the backward pass.

    Returns:
        The mixed tensor.
    """
    if not training:
        return 0.5 * (x1 + x2)
    shape = (x1.size(0),) + (1,) * (x1.dim() - 1)
    alpha = torch.rand(shape, device=x1.device, dtype=x1.dtype) if forward_shake else x1.new_full(shape, 0.5)
    beta = torch.rand(shape, device=x1.device, dtype=x1.dtype) if backward_shake else x1.new_full(shape, 0.5)
    return ShakeShakeFunction.apply(x1, x2, alpha, beta)


class _Branch(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class _TwoPathShortcut(nn.Module):
    """ReLU, then [avgpool(1, stride)-conv1x1 ; shift-by-one-pixel-avgpool(1, stride)-conv1x1], concat, BN."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"Shake-Shake shortcut needs an even number of output channels, got {out_channels}")
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_channels, out_channels // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        y1 = F.avg_pool2d(x, kernel_size=1, stride=self.stride)
        # Shift one pixel right and down (drop the last row/column, zero-pad the first), as the reference code.
        shifted = F.pad(x[:, :, :-1, :-1], (1, 0, 1, 0))
        y2 = F.avg_pool2d(shifted, kernel_size=1, stride=self.stride)
        return self.bn(torch.cat([self.conv1(y1), self.conv2(y2)], dim=1))


class ShakeShakeBlock(nn.Module):
    """Two-branch residual block whose branches are mixed by :func:`shake_shake_mix`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        forward_shake: bool = True,
        backward_shake: bool = True,
    ) -> None:
        super().__init__()
        self.branch1 = _Branch(in_channels, out_channels, stride)
        self.branch2 = _Branch(in_channels, out_channels, stride)
        self.forward_shake = forward_shake
        self.backward_shake = backward_shake
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels and stride == 1
            else _TwoPathShortcut(in_channels, out_channels, stride)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shortcut plus shaken branches."""
        mixed = shake_shake_mix(
            self.branch1(x), self.branch2(x), self.training, self.forward_shake, self.backward_shake
        )
        return self.shortcut(x) + mixed


class ShakeShakeResNet(nn.Module):
    """Shake-Shake ResNet-``depth`` 2x``base_width``D for 32x32 images.

    Args:
        depth: total depth; must be ``6n + 2`` (26 gives 4 blocks per stage).
        base_width: ``D``, the width of the first stage (stages have D, 2D, 4D channels); must be even.
        num_classes: classifier outputs.
        forward_shake: random forward coefficients in training (the paper's "Shake"; False gives "Even").
        backward_shake: random backward coefficients in training (False gives "Even").

    Raises:
        ValueError: for a depth not of the form 6n+2 or a non-positive or odd width.
    """

    def __init__(
        self,
        depth: int = 26,
        base_width: int = 32,
        num_classes: int = 10,
        forward_shake: bool = True,
        backward_shake: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"Shake-Shake depth must be 6n+2 with n >= 1 (8, 14, 20, 26, ...), got {depth!r}")
        if not isinstance(base_width, int) or base_width < 2 or base_width % 2:
            raise ValueError(f"Shake-Shake base_width must be a positive even int, got {base_width!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes!r}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        plan = zip((base_width, 2 * base_width, 4 * base_width), (1, 2, 2))
        in_ch = add_stages(self, 16, plan, n, lambda i, o, s: ShakeShakeBlock(i, o, s, forward_shake, backward_shake))
        self.fc = nn.Linear(in_ch, num_classes)
        self.num_features = in_ch
        init_he(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, num_classes)``."""
        x = self.bn1(self.conv1(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.relu(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def _shake_shake(num_classes: int, base_width: int, forward_shake: bool, backward_shake: bool) -> ShakeShakeResNet:
    return ShakeShakeResNet(26, base_width, num_classes, forward_shake=forward_shake, backward_shake=backward_shake)


@register_model(family="shake_shake")
def shake_shake_26_2x32d(
    num_classes: int = 10, forward_shake: bool = True, backward_shake: bool = True
) -> ShakeShakeResNet:
    """Shake-Shake 26 2x32d (2.9M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        forward_shake: random forward coefficients in training (False: "Even", 0.5).
        backward_shake: random backward coefficients in training (False: "Even", 0.5).
    """
    return _shake_shake(num_classes, 32, forward_shake, backward_shake)


@register_model(family="shake_shake")
def shake_shake_26_2x64d(
    num_classes: int = 10, forward_shake: bool = True, backward_shake: bool = True
) -> ShakeShakeResNet:
    """Shake-Shake 26 2x64d (11.7M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        forward_shake: random forward coefficients in training (False: "Even", 0.5).
        backward_shake: random backward coefficients in training (False: "Even", 0.5).
    """
    return _shake_shake(num_classes, 64, forward_shake, backward_shake)


@register_model(family="shake_shake")
def shake_shake_26_2x96d(
    num_classes: int = 10, forward_shake: bool = True, backward_shake: bool = True
) -> ShakeShakeResNet:
    """Shake-Shake 26 2x96d (26.2M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        forward_shake: random forward coefficients in training (False: "Even", 0.5).
        backward_shake: random backward coefficients in training (False: "Even", 0.5).
    """
    return _shake_shake(num_classes, 96, forward_shake, backward_shake)


@register_model(family="shake_shake")
def shake_shake_26_2x112d(
    num_classes: int = 10, forward_shake: bool = True, backward_shake: bool = True
) -> ShakeShakeResNet:
    """Shake-Shake 26 2x112d (35.6M parameters on CIFAR-10).

    Args:
        num_classes: classifier outputs.
        forward_shake: random forward coefficients in training (False: "Even", 0.5).
        backward_shake: random backward coefficients in training (False: "Even", 0.5).
    """
    return _shake_shake(num_classes, 112, forward_shake, backward_shake)
