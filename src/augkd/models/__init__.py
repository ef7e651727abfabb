"""Model zoo: the paper's CIFAR networks, EfficientNet from timm, small CPU-friendly nets."""

from augkd.models.registry import count_parameters, create_model, get_model_info, list_models, register_model

# Importing the model modules registers their builders.
from augkd.models import (  # noqa: F401  isort: skip
    efficientnet,
    fastnet,
    pyramidnet,
    resnet_cifar,
    shake_shake,
    wide_resnet,
)

__all__ = ["count_parameters", "create_model", "get_model_info", "list_models", "register_model"]
