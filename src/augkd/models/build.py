"""Build the network a :class:`~augkd.models.config.ModelConfig` describes (the run's ``model.*`` section)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from augkd.models.config import ModelConfig
from augkd.models.registry import create_model

__all__ = ["build_model", "set_bn_momentum", "weights_mismatch"]


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set ``momentum`` (torch convention: 1 - TensorFlow's decay) on every BatchNorm layer; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = momentum
    return len(layers)


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The configured model (``model.name``, ``model.drop_rate``, ``model.drop_path_rate``, ``model.kwargs``,
    then ``model.bn_momentum`` on its BatchNorm layers).

    Raises:
        ValueError: unknown model, ``model.kwargs`` the builder does not take, or ``model.bn_momentum`` on a model
            without BatchNorm layers.
    """
    kwargs = dict(cfg.kwargs)
    if cfg.drop_rate is not None:
        kwargs["drop_rate"] = cfg.drop_rate
    if cfg.drop_path_rate is not None:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    try:
        model = create_model(cfg.name, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model.kwargs {kwargs} do not fit model {cfg.name!r}: {exc}") from None
    if cfg.bn_momentum is not None and set_bn_momentum(model, cfg.bn_momentum) == 0:
        raise ValueError(f"model.bn_momentum is set but model {cfg.name!r} has no BatchNorm layers")
    return model


def weights_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str | None:
    """None when the state dict ``state`` fits ``model`` exactly, else its first misfit in one phrase: a key the
    model needs and the file lacks, a shape that differs, or a key the model does not have."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            return f"the file has no {key!r}"
        theirs = getattr(state[key], "shape", None)
        if theirs is not None and tuple(theirs) != tuple(value.shape):
            return f"{key!r} is {tuple(theirs)} in the file and {tuple(value.shape)} in the model"
    extra = next((k for k in state if k not in own), None)
    return None if extra is None else f"the model has no {extra!r}"
