"""On-disk cache of decoded tensors: ``<name>.pt`` (plain tensors) beside ``<name>.json`` (metadata).

Tensors are written with :func:`torch.save` and read back with ``torch.load(weights_only=True)``, so loading a
cache never runs pickled code. Both files are written to a temporary name and renamed into place, the JSON
last: a cache entry exists exactly when its JSON does, and a killed writer leaves nothing half-written behind.
Entries are keyed by :func:`fingerprint_files`, a hash of the source files' relative paths, sizes and
modification times together with the decode parameters, so editing, adding or removing a file re-decodes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from augkd.io import atomic_write_bytes, atomic_write_text

__all__ = ["CACHE_VERSION", "fingerprint_files", "load_tensors", "save_tensors"]

#: Bump when the decode output for the same files and parameters changes (new resize rule, new decoder).
CACHE_VERSION = 1


def fingerprint_files(root: str | Path, files: Sequence[str], params: Mapping[str, Any]) -> str:
    """Hex SHA-256 of (relative path, size, mtime in ns) of each file under ``root`` plus ``params``.

    Raises:
        FileNotFoundError: a listed file vanished.
    """
    prefix = f"{root}{os.sep}"
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **params}, sort_keys=True).encode())
    for rel in files:
        st = os.stat(prefix + rel)  # string paths: pathlib joins cost more than the stat itself
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write ``path.pt`` (the tensors) and then ``path.json`` (``meta``), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".pt"), lambda f: torch.save(dict(tensors), f))
    atomic_write_text(path.with_suffix(".json"), json.dumps(dict(meta), indent=1))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read a cache entry written by :func:`save_tensors`; None when it is missing or unreadable."""
    path = Path(path)
    meta_path, tensor_path = path.with_suffix(".json"), path.with_suffix(".pt")
    if not (meta_path.is_file() and tensor_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = torch.load(tensor_path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError):  # a damaged entry is re-decoded, not fatal
        return None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        return None
    return tensors, meta
