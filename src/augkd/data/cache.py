"""On-disk cache of decoded tensors: ``<name>.pt`` (plain tensors) beside ``<name>.json`` (metadata).

Tensors are written with :func:`torch.save` and read back with ``torch.load(weights_only=True)``, so loading a
cache never runs pickled code. Both files are written to a temporary name and renamed into place, the JSON
last: a cache entry exists exactly when its JSON does, and a killed writer leaves nothing half-written behind.
Entries are keyed by :func:`fingerprint_files`, a hash of the source files' relative paths, sizes and
modification times together with the decode parameters and :data:`~augkd.data.decode.DECODER_VERSION`, so
editing, adding or removing a file, or a change in decoding, re-decodes.

The JSON holds the *seal* of the ``.pt`` (:mod:`augkd.digest`, the teacher cache's mechanism): its SHA-256,
size and entry name. :func:`load_tensors` checks it before unpickling a byte, so a flipped label byte, a
truncated file or a ``.pt`` copied from another entry is a one-line :class:`DataCacheError` naming the file,
never wrong labels or pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from augkd.data.decode import DECODER_VERSION
from augkd.digest import SealError, check_seal, seal_file
from augkd.io import atomic_write_bytes, atomic_write_text

__all__ = ["CACHE_VERSION", "DataCacheError", "fingerprint_files", "load_tensors", "save_tensors"]

#: Bump when the layout of an entry changes (2: the JSON holds the seal of the ``.pt``). Changes of the decoded
#: pixels are keyed by :data:`~augkd.data.decode.DECODER_VERSION`.
CACHE_VERSION = 2


class DataCacheError(ValueError):
    """A damaged decoded-data cache entry (one line naming the file; deleting the entry decodes again)."""


def fingerprint_files(root: str | Path, files: Sequence[str], params: Mapping[str, Any]) -> str:
    """Hex SHA-256 of (relative path, size, mtime in ns) of each file under ``root`` plus ``params``.

    Raises:
        FileNotFoundError: a listed file vanished.
    """
    prefix = f"{root}{os.sep}"
    version = {"version": CACHE_VERSION, "decoder": DECODER_VERSION}
    h = hashlib.sha256(json.dumps({**version, **params}, sort_keys=True).encode())
    for rel in files:
        try:
            st = os.stat(prefix + rel)  # string paths: pathlib joins cost more than the stat itself
        except OSError:  # a link that cannot be followed (a loop, dangling): the link itself; decoding reports it
            st = os.lstat(prefix + rel)  # a file that vanished: FileNotFoundError
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _entry_key(path: Path) -> dict[str, str]:
    """What a ``.pt`` is sealed for: its entry (the name holds the fingerprint of the files and parameters)."""
    return {"entry": path.stem}


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write ``path.pt`` (the tensors) and then ``path.json`` (``meta`` and the seal of the ``.pt``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seal: dict[str, Any] = {}
    # The seal is taken from the temp file just before its rename: the bytes hashed are the bytes renamed.
    atomic_write_bytes(
        path.with_suffix(".pt"),
        lambda f: torch.save(dict(tensors), f),
        verify=lambda tmp: seal.update(seal_file(tmp, _entry_key(path))),
    )
    atomic_write_text(path.with_suffix(".json"), json.dumps({**meta, "seal": seal}, indent=1))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read a cache entry written by :func:`save_tensors`; None when there is none (no JSON or no ``.pt``).

    Raises:
        DataCacheError: an unreadable JSON, a ``.pt`` that fails its seal (flipped or truncated bytes, a file of
            another entry) or that does not hold plain tensors; the message names the file.
    """
    path = Path(path)
    meta_path, tensor_path = path.with_suffix(".json"), path.with_suffix(".pt")
    if not (meta_path.is_file() and tensor_path.is_file()):
        return None
    hint = f"delete {meta_path.name} and {tensor_path.name} to decode again"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataCacheError(f"{meta_path}: unreadable decoded-data cache metadata ({exc}); {hint}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("seal"), dict):
        raise DataCacheError(f"{meta_path}: damaged decoded-data cache metadata (no seal); {hint}")
    try:
        check_seal(tensor_path, meta["seal"], _entry_key(path))
    except SealError as exc:
        raise DataCacheError(f"{exc}; {hint}") from None
    try:
        tensors = torch.load(tensor_path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataCacheError(f"{tensor_path}: unreadable ({reason}); {hint}") from None
    if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise DataCacheError(f"{tensor_path}: not a dict of tensors; {hint}")
    return tensors, meta
