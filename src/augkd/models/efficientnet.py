"""EfficientNet-B0..B8 (Tan & Le, ICML 2019; B8 from Xie et al., "Adversarial Examples Improve Image Recognition",
CVPR 2020), built by timm from scratch, never with downloaded weights.

Each builder passes the paper's regularisation defaults to timm: dropout before the classifier of 0.2, 0.2, 0.3,
0.3, 0.4, 0.4, 0.5, 0.5, 0.5 for B0..B8 and a drop-connect (stochastic depth) rate of 0.2. ``input_size`` in the
registry is the native resolution (224, 240, 260, 300, 380, 456, 528, 600, 672). By default the PyTorch-native timm
variants (``efficientnet_bN``: symmetric padding, BN eps 1e-5) are built; ``tf_variant=True`` builds
``tf_efficientnet_bN`` (TensorFlow "same" padding, BN eps 1e-3), the port of the original TPU models. Both use
timm's default BN momentum.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from augkd.models.registry import register_model

__all__ = ["EFFICIENTNET_DEFAULTS", "build_efficientnet"]

#: variant -> (native input size, dropout rate, drop-connect rate), from the EfficientNet / AdvProp papers.
EFFICIENTNET_DEFAULTS: dict[str, tuple[int, float, float]] = {
    "b0": (224, 0.2, 0.2),
    "b1": (240, 0.2, 0.2),
    "b2": (260, 0.3, 0.2),
    "b3": (300, 0.3, 0.2),
    "b4": (380, 0.4, 0.2),
    "b5": (456, 0.4, 0.2),
    "b6": (528, 0.5, 0.2),
    "b7": (600, 0.5, 0.2),
    "b8": (672, 0.5, 0.2),
}


def build_efficientnet(
    variant: str,
    num_classes: int = 1000,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
    tf_variant: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a randomly initialised EfficientNet with timm.

    Args:
        variant: ``"b0"`` .. ``"b8"``.
        num_classes: classifier outputs.
        drop_rate: dropout before the classifier; None for the paper's per-variant default.
        drop_path_rate: drop-connect rate of the MBConv blocks; None for the paper's 0.2.
        tf_variant: build timm's ``tf_efficientnet_*`` (TensorFlow padding and BN eps) instead of ``efficientnet_*``.
        **kwargs: further keyword arguments for ``timm.create_model`` (e.g. ``in_chans``, ``bn_eps``).

    Returns:
        The timm model; ``model.default_cfg`` holds timm's preprocessing config.

    Raises:
        ValueError: for an unknown variant, a rate outside [0, 1), or a request for pretrained weights.
    """
    if variant not in EFFICIENTNET_DEFAULTS:
        raise ValueError(f"unknown EfficientNet variant {variant!r}; choose one of {sorted(EFFICIENTNET_DEFAULTS)}")
    if kwargs.pop("pretrained", False):
        raise ValueError("augkd builds EfficientNets from scratch; pretrained weights are not supported")
    _, default_drop, default_path = EFFICIENTNET_DEFAULTS[variant]
    drop_rate = default_drop if drop_rate is None else drop_rate
    drop_path_rate = default_path if drop_path_rate is None else drop_path_rate
    for name, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    timm_name = f"{'tf_' if tf_variant else ''}efficientnet_{variant}"
    return timm.create_model(
        timm_name,
        pretrained=False,
        num_classes=num_classes,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        **kwargs,
    )


def _register(variant: str):
    size = EFFICIENTNET_DEFAULTS[variant][0]

    def builder(
        num_classes: int = 1000,
        drop_rate: float | None = None,
        drop_path_rate: float | None = None,
        tf_variant: bool = False,
        **kwargs: Any,
    ) -> nn.Module:
        return build_efficientnet(variant, num_classes, drop_rate, drop_path_rate, tf_variant, **kwargs)

    _, dropout, drop_connect = EFFICIENTNET_DEFAULTS[variant]
    builder.__name__ = builder.__qualname__ = f"efficientnet_{variant}"
    builder.__doc__ = (
        f"EfficientNet-{variant.upper()} from timm ({size}px native; dropout {dropout}, "
        f"drop-connect {drop_connect}).\n\n"
        "See :func:`build_efficientnet` for the arguments."
    )
    return register_model(input_size=size, family="efficientnet")(builder)


efficientnet_b0 = _register("b0")
efficientnet_b1 = _register("b1")
efficientnet_b2 = _register("b2")
efficientnet_b3 = _register("b3")
efficientnet_b4 = _register("b4")
efficientnet_b5 = _register("b5")
efficientnet_b6 = _register("b6")
efficientnet_b7 = _register("b7")
efficientnet_b8 = _register("b8")
