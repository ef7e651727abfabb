"""The model section of a run's config (``model.*``): which registered network, and its few training knobs.

Lives with the models so that anything that rebuilds a network from a saved config (a run checkpoint, a
teacher) needs no training code; :class:`~augkd.train.config.TrainConfig` holds one as its ``model`` field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from augkd.config import check_finite

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """Which network to train (any name from ``augkd models``)."""

    name: str = "fastnet9"
    """Registered model name, or ``timm:NAME`` / ``torchvision:NAME`` (any network of those libraries; ``kwargs``
    go to ``timm.create_model`` / ``torchvision.models.get_model``)."""
    drop_rate: float | None = None
    """Dropout before the classifier (None keeps the model's default)."""
    drop_path_rate: float | None = None
    """Drop-connect (stochastic depth) rate of models that take one, e.g. EfficientNet (None keeps the model's
    default: 0.2 for EfficientNet-B0..B8)."""
    bn_momentum: float | None = None
    """Momentum of every BatchNorm layer in torch's convention (weight of the new batch statistic), set after the
    model is built: TensorFlow's decay 0.99 (EfficientNet) is 0.01 here. At most 0.5, so that a TensorFlow decay
    written by mistake is an error. None keeps the model's own (torch's 0.1)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra builder arguments, e.g. ``{width: 32}``."""
    weights: str = ""
    """Start from these weights (fine-tuning): a ``.safetensors`` or ``.pth``/``.pt`` state dict (read with
    ``weights_only=True``), or ``pretrained`` for a ``timm:``/``torchvision:`` network (from the hub caches on this
    machine; downloaded only with ``data.download=true``). An output layer of another class count is left out
    (the log says so) and starts random. Empty: random initialization."""

    def __post_init__(self) -> None:
        check_finite(self, "model.")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum <= 0.5:
            raise ValueError(
                f"model.bn_momentum must be in (0, 0.5] in torch's convention (TF's decay 0.99 is 0.01); "
                f"got {self.bn_momentum!r}"
            )
        if self.drop_path_rate is not None and not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"model.drop_path_rate must be in [0, 1); got {self.drop_path_rate!r}")
