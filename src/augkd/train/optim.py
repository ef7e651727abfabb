"""Optimizers by name (``optim.name``): a registry of builders that all get the same parameter groups.

The learning rate is set every step from :func:`~augkd.train.schedule.lr_factor`, so a builder only fixes the
update rule. Adding an optimizer is adding a row to :data:`OPTIMIZERS`; the config's ``optim.name`` accepts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from augkd.registry import Registry

if TYPE_CHECKING:
    from augkd.train.config import OptimConfig, TrainConfig

__all__ = ["OPTIMIZERS", "build_optimizer"]


def _sgd(groups: list[dict[str, Any]], o: OptimConfig) -> torch.optim.Optimizer:
    """torch's SGD (Nesterov with ``optim.nesterov`` and momentum > 0)."""
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def _rmsproptf(groups: list[dict[str, Any]], o: OptimConfig) -> torch.optim.Optimizer:
    """timm's RMSpropTF: TensorFlow's RMSProp, EfficientNet's recipe."""
    from timm.optim import RMSpropTF

    # weight decay as an L2 term in the gradient, as TF's EfficientNet adds it to the loss
    return RMSpropTF(groups, lr=o.lr, alpha=o.alpha, eps=o.eps, momentum=o.momentum)


#: ``optim.name`` -> ``(parameter groups, optim config) -> optimizer``.
OPTIMIZERS: Registry[Callable[[list[dict[str, Any]], Any], torch.optim.Optimizer]] = Registry(
    "optimizer", {"sgd": _sgd, "rmsproptf": _rmsproptf}
)


def _param_groups(model: nn.Module, weight_decay: float, no_decay_bn: bool) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_bn and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``optim.name`` names, over ``model``'s parameters.

    Every optimizer gets the same parameter groups (weight decay off for normalization parameters and biases with
    ``optim.no_decay_bn``); the learning rate is set every step from :func:`~augkd.train.schedule.lr_factor`.
    """
    groups = _param_groups(model, cfg.optim.weight_decay, cfg.optim.no_decay_bn)
    return OPTIMIZERS[cfg.optim.name](groups, cfg.optim)
