"""Pieces shared by the CIFAR networks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

__all__ = ["add_stages", "init_he"]


def add_stages(
    net: nn.Module,
    in_ch: int,
    plan: Iterable[tuple[int, int]],
    depth: int,
    make_block: Callable[[int, int, int], nn.Module],
) -> int:
    """Add ``stage1``, ``stage2``, ... to ``net``: for each ``(out_ch, stride)`` of ``plan``, ``depth`` blocks
    ``make_block(in_ch, out_ch, stride)`` (the stride on the first block only). Returns the last width."""
    for i, (out_ch, stride) in enumerate(plan):
        blocks = []
        for j in range(depth):
            blocks.append(make_block(in_ch, out_ch, stride if j == 0 else 1))
            in_ch = out_ch
        net.add_module(f"stage{i + 1}", nn.Sequential(*blocks))
    return in_ch


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
