"""Atomic checkpoints that load without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, written with ``torch.save`` to a
temporary file in the same folder, flushed to disk, then renamed over the target: a crash mid-write leaves
the previous checkpoint intact. Loading uses ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from augkd.io import atomic_write_bytes

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt, or holds objects that are not plain data."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically to ``path``."""
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by augkd (``weights_only=True``: plain data only, no code runs).

    Raises:
        CheckpointError: missing file, truncated or corrupt data, or a payload that is not plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "not plain data"
        raise CheckpointError(f"{path}: refused to load (weights_only): {first}") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state
