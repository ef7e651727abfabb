"""FastNet-9: a narrow ResNet-9 (the DAWNBench "Myrtle" layout) for quick CPU runs on 32x32 images.

Layout (``w`` = base width, 16 by default, about 0.41M parameters for 10 classes)::

    prep   conv3x3(3 -> w)            BN ReLU                32x32
    layer1 conv3x3(w -> 2w)  maxpool2 BN ReLU + residual(2w)  16x16
    layer2 conv3x3(2w -> 4w) maxpool2 BN ReLU                 8x8
    layer3 conv3x3(4w -> 8w) maxpool2 BN ReLU + residual(8w)  4x4
    head   global max pool, linear(8w -> classes), scaled by ``head_scale``

At ``w = 64`` this is the 6.5M-parameter ResNet-9 of the DAWNBench CIFAR-10 entries; the quarter-width default
keeps an epoch of CIFAR-10 near a minute on two CPU cores. The output scale (0.125) follows those entries: it
keeps initial logits small so a high one-cycle learning rate is stable.

``norm="group"`` swaps every BatchNorm for a GroupNorm (8 groups, or fewer when the width does not divide):
each image is then normalized on its own, so a batch split over several processes trains as the whole batch
in one process. ``pool="avg"`` swaps the max-pools for average pools: a max-pool routes a whole gradient to one
of two near-equal values, so float rounding (a different batch split or thread count) can flip where it goes;
averages keep two such runs within float tolerance. The distributed-training test uses both.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from augkd.models.registry import register_model

__all__ = ["FastNet"]


#: Normalization layers by name: ``batch`` (the default) or ``group`` (per-image, batch-independent).
NORMS = ("batch", "group")
#: Pooling by name: ``max`` (the default) or ``avg`` (smooth in its inputs).
POOLS = ("max", "avg")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    return nn.BatchNorm2d(channels)


def _conv_bn(c_in: int, c_out: int, pool: str = "", norm: str = "batch") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2))
    layers += [_norm(norm, c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels, norm=norm), _conv_bn(channels, channels, norm=norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FastNet(nn.Module):
    """Narrow ResNet-9 for 32x32 inputs.

    Args:
        num_classes: classifier outputs.
        width: base width ``w`` (channels ``w, 2w, 4w, 8w``).
        head_scale: multiplier of the logits.
        drop_rate: dropout before the classifier.
        norm: ``batch`` (BatchNorm) or ``group`` (GroupNorm: no dependence between the images of a batch).
        pool: ``max`` (max-pools, the default) or ``avg`` (average pools).
    """

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 16,
        head_scale: float = 0.125,
        drop_rate: float = 0.0,
        norm: str = "batch",
        pool: str = "max",
    ):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w, norm=norm),
            _conv_bn(w, 2 * w, pool=pool, norm=norm),
            _Residual(2 * w, norm=norm),
            _conv_bn(2 * w, 4 * w, pool=pool, norm=norm),
            _conv_bn(4 * w, 8 * w, pool=pool, norm=norm),
            _Residual(8 * w, norm=norm),
            nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x))) * self.head_scale


@register_model(family="fastnet")
def fastnet9(num_classes: int = 10, **kwargs) -> FastNet:
    """Quarter-width ResNet-9 (0.41M parameters): the CPU demo model."""
    return FastNet(num_classes=num_classes, width=kwargs.pop("width", 16), **kwargs)


@register_model(family="fastnet")
def fastnet9_w32(num_classes: int = 10, **kwargs) -> FastNet:
    """Half-width ResNet-9 (1.6M parameters): a stronger CPU teacher."""
    return FastNet(num_classes=num_classes, width=kwargs.pop("width", 32), **kwargs)
