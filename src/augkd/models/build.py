"""Build the network a :class:`~augkd.models.config.ModelConfig` describes (the run's ``model.*`` section)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from augkd.models.config import ModelConfig
from augkd.models.external import (
    create_external,
    external_name,
    load_weights,
    read_weight_file,
    resolve_weights,
)
from augkd.models.registry import create_model

__all__ = ["build_model", "set_bn_momentum"]


def set_bn_momentum(model: nn.Module, momentum: float) -> int:
    """Set ``momentum`` (torch convention: 1 - TensorFlow's decay) on every BatchNorm layer; returns how many."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.momentum = momentum
    return len(layers)


def build_model(
    cfg: ModelConfig,
    num_classes: int,
    *,
    init_weights: bool = False,
    download: bool = False,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """The configured model (``model.name``, ``model.drop_rate``, ``model.drop_path_rate``, ``model.kwargs``,
    then ``model.bn_momentum`` on its BatchNorm layers).

    Args:
        cfg: the ``model.*`` section.
        num_classes: outputs of the network.
        init_weights: load ``model.weights`` (a new run; a checkpoint brings its own weights).
        download: allow ``model.weights=pretrained`` to fetch a file that is not cached (``data.download``).
        log: where the note about a left-out output layer goes.

    Raises:
        ValueError: unknown model, ``model.kwargs`` the builder does not take, ``model.bn_momentum`` on a model
            without BatchNorm layers, or ``model.weights`` missing, unsafe or not fitting (a ``WeightsError``).
    """
    kwargs = dict(cfg.kwargs)
    if cfg.drop_rate is not None:
        kwargs["drop_rate"] = cfg.drop_rate
    if cfg.drop_path_rate is not None:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    external = external_name(cfg.name)
    try:
        if external is not None:
            model = create_external(*external, num_classes=num_classes, **kwargs)
        else:
            model = create_model(cfg.name, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"model.kwargs {kwargs} do not fit model {cfg.name!r}: {exc}") from None
    if cfg.bn_momentum is not None and set_bn_momentum(model, cfg.bn_momentum) == 0:
        raise ValueError(f"model.bn_momentum is set but model {cfg.name!r} has no BatchNorm layers")
    if init_weights and cfg.weights:
        path = resolve_weights(cfg.name, cfg.weights, download=download)
        dropped = load_weights(model, read_weight_file(path), f"model.weights={path} into {cfg.name}", new_head=True)
        if dropped and log is not None:
            log(
                f"augkd: note: model.weights: the output layer of {path} ({', '.join(dropped)}) does not fit the "
                f"{num_classes} classes of the data; it was left out and starts from random weights"
            )
    return model
