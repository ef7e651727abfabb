"""Model registry: ``@register_model`` on a builder, ``create_model(name, num_classes, **kwargs)`` to build.

Example:
    >>> from augkd.models import create_model, list_models
    >>> "wrn_28_10" in list_models()
    True
    >>> model = create_model("resnet20", num_classes=10)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

__all__ = ["count_parameters", "create_model", "get_model_info", "list_models", "register_model"]

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}
_INFO: dict[str, dict] = {}


def register_model(
    fn: ModelBuilder | None = None, *, input_size: int = 32, family: str = "", description: str = ""
) -> ModelBuilder | Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder ``fn(num_classes: int, **kwargs) -> nn.Module`` under its function name.

    Usable bare (``@register_model``) or with metadata (``@register_model(input_size=224, family="efficientnet")``).
    ``input_size`` is the native training resolution (32 for the CIFAR networks).
    """

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        doc = (builder.__doc__ or "").strip().splitlines()
        _INFO[name] = {
            "name": name,
            "input_size": input_size,
            "family": family,
            "description": description or (doc[0] if doc else ""),
        }
        return builder

    return wrap(fn) if fn is not None else wrap


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def get_model_info(name: str) -> dict:
    """Metadata of a registered model: input_size, family, description."""
    _check_name(name)
    return dict(_INFO[name])


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the classifier output.
        **kwargs: passed to the builder (e.g. ``drop_rate``, ``width``).

    Raises:
        ValueError: unknown name (the message lists close matches) or bad ``num_classes``.
    """
    _check_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (see `augkd models` for the {len(_REGISTRY)} known names)")
