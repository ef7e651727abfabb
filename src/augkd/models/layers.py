"""Pieces shared by the CIFAR networks."""

from __future__ import annotations

from torch import nn

__all__ = ["init_he"]


def init_he(model: nn.Module) -> None:
    """The CIFAR reference initialisation: He-normal (fan-out) convs, BN at (1, 0), zero linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
