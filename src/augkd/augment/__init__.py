"""Batched, replayable augmentation of uint8 image tensors.

- :mod:`augkd.augment.rng`: counter-based randomness, every number a pure function of (seed, epoch, index, slot).
- :mod:`augkd.augment.ops`: the op table and :func:`apply_op`, one op on a batch with per-image levels.
- :mod:`augkd.augment.policies`: AutoAugment, RandAugment, the paper's geometric space, TrivialAugment-wide.
- :mod:`augkd.augment.spec`: spec strings (``aa-cifar10``, ``ra-n2-m9``, ``geo-n2-m5``, ...) to policies.

The names below are imported on first use, so ``import augkd.augment.rng`` stays light.

Example:
    >>> from augkd.augment import build_policy
    >>> policy = build_policy("ra-n2-m9", image_size=32, seed=0)
    >>> out = policy(images, indices, epoch)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "OPS": "ops",
    "apply_op": "ops",
    "AutoAugment": "policies",
    "NoAugment": "policies",
    "Policy": "policies",
    "RandAugment": "policies",
    "TrivialAugmentWide": "policies",
    "PolicySpec": "spec",
    "build_policy": "spec",
    "parse_spec": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
