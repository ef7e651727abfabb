"""Atomic, verified checkpoints that load without unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts. :func:`save_checkpoint` serializes it
with ``torch.save`` and *seals* it: the file holds ``{"format": "augkd-sealed/1", "sha256": <hex digest>,
"payload": <the serialized bytes as a uint8 tensor>}``. The file is written to a temp file beside the target,
flushed, fsynced, read back and checked against the digest, and only then renamed over the target: a crash, a
full disk or a bad write leaves the previous checkpoint intact. :func:`load_checkpoint` verifies the digest before
it trusts a byte of the payload, and both layers load with ``torch.load(weights_only=True)``, which refuses
pickled code. Checkpoints written before sealing (a plain dict) still load.

A run folder keeps ``last.pt`` plus the last ``checkpoint.keep_last`` epoch checkpoints ``ckpt_epoch<NNNN>.pt``
(hard links to the same bytes where the file system allows): :func:`save_training_checkpoint` writes them and
:func:`load_latest_checkpoint` falls back to the newest good one when ``last.pt`` is damaged.

Example:
    >>> save_checkpoint("/tmp/c.pt", {"epoch": 3, "w": torch.zeros(2)})
    >>> load_checkpoint("/tmp/c.pt")["epoch"]
    3
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import pickle
import re
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch

from augkd import faults
from augkd.io import TEMP_SUFFIX, WriteError, atomic_write_bytes

__all__ = [
    "LAST",
    "SEALED_FORMAT",
    "CheckpointError",
    "check_run_folder",
    "epoch_checkpoint_name",
    "epoch_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "save_checkpoint",
    "save_training_checkpoint",
    "tensor_bytes",
]

SEALED_FORMAT = "augkd-sealed/1"
#: The checkpoint a run resumes from.
LAST = "last.pt"
_EPOCH_FILE = re.compile(r"^ckpt_epoch(\d+)\.pt$")
_SAVES = itertools.count(1)  # checkpoint writes of this process, for AUGKD_FAULT=kill_during_save:<n>


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt, unwritable, or holds objects that are not plain data."""


# ----------------------------------------------------------------------------------------------------------------
# One file


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_outer(path: Path) -> Any:
    """The file's top level, memory-mapped where the format allows (the payload is hashed, not copied)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError):
        return _torch_load(path, path, "cpu")  # not a zip-format file: the plain load gives the clear error


def _torch_load(source: str | Path | IO[bytes], path: Path, map_location: Any) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load (weights_only): {_first_line(exc)}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({_first_line(exc)})") from None


def _sealed_payload(path: Path, outer: Any) -> memoryview | None:
    """The verified payload bytes of a sealed checkpoint; None for an older, unsealed one."""
    if not (isinstance(outer, dict) and outer.get("format") == SEALED_FORMAT):
        return None
    payload, digest = outer.get("payload"), outer.get("sha256")
    if not (isinstance(payload, torch.Tensor) and payload.dtype == torch.uint8 and isinstance(digest, str)):
        raise CheckpointError(f"{path}: damaged checkpoint (the sealed wrapper lacks its payload or checksum)")
    data = memoryview(payload.contiguous().numpy())
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise CheckpointError(
            f"{path}: corrupt checkpoint: checksum mismatch (sha256 of the content {actual[:12]}..., "
            f"stored {digest[:12]}...)"
        )
    return data


def _verify(path: Path) -> None:
    """Read a just-written checkpoint back and check its checksum (before it replaces the previous one)."""
    if _sealed_payload(path, _load_outer(path)) is None:
        raise CheckpointError(f"{path}: the written checkpoint is not sealed")


def _write_failed(exc: WriteError) -> CheckpointError:
    return CheckpointError(f"cannot write checkpoint {exc.filename}: {exc.reason}; the previous checkpoint is intact")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Seal ``state`` (sha256 inside) and write it atomically to ``path``, verified on disk before the rename.

    Raises:
        CheckpointError: the folder or the disk refused the write (full, read-only, no permission) or the read-back
            did not match; ``path`` keeps its previous content and no temp file is left behind.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()
    sealed = {
        "format": SEALED_FORMAT,
        "sha256": hashlib.sha256(data).hexdigest(),
        "payload": torch.frombuffer(data, dtype=torch.uint8),
    }
    n = next(_SAVES)

    def write(f: IO[bytes]) -> None:
        if faults.armed("kill_during_save", n):  # a process killed mid-write, for the resume tests
            out = io.BytesIO()
            torch.save(sealed, out)
            f.write(out.getbuffer()[: out.tell() // 2])
            f.flush()
            os.fsync(f.fileno())
            faults.kill_now()
        torch.save(sealed, f)

    try:
        atomic_write_bytes(path, write, verify=_verify)
    except WriteError as exc:
        raise _write_failed(exc) from None
    except CheckpointError as exc:
        raise CheckpointError(
            f"cannot write checkpoint {path}: the copy on disk does not read back ({exc}); the previous checkpoint "
            "is intact"
        ) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by augkd, verifying its checksum (``weights_only=True``: no code runs).

    Raises:
        CheckpointError: missing file, truncated or corrupt data (checksum mismatch), or a payload that is not
            plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    outer = _load_outer(path)
    payload = _sealed_payload(path, outer)
    if payload is None:  # written before checkpoints were sealed
        state = _torch_load(path, path, map_location)  # read in full: no mapping of a file that may change
    else:
        state = _torch_load(io.BytesIO(payload), path, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    return state


# ----------------------------------------------------------------------------------------------------------------
# The checkpoints of a run folder


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint written after ``epoch`` finished epochs: ``ckpt_epoch0005.pt``."""
    return f"ckpt_epoch{epoch:04d}.pt"


def epoch_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the epoch checkpoints in ``run_dir``, newest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), run_dir / m.group(0)) for m in map(_EPOCH_FILE.match, os.listdir(run_dir)) if m]
    return sorted(found, reverse=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` hold the bytes of ``src``: a hard link, or a copy where links are not supported."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        return
    except OSError:
        tmp.unlink(missing_ok=True)
    with open(src, "rb") as f:
        atomic_write_bytes(dst, lambda out: shutil.copyfileobj(f, out, 1 << 20), verify=_verify)


def save_training_checkpoint(run_dir: str | Path, state: dict[str, Any], epoch: int, keep_last: int) -> Path:
    """Write ``last.pt`` after ``epoch`` finished epochs, keep it as ``ckpt_epoch<epoch>.pt`` too, prune older ones.

    Order matters: the new ``last.pt`` is verified on disk before it replaces the old one, and an older epoch
    checkpoint is deleted only after the new one exists. Epoch checkpoints beyond ``epoch`` (left by a run that
    resumed from an older one) are removed.

    Raises:
        CheckpointError: a write failed (full disk, read-only folder); the previous checkpoints are intact.
    """
    run_dir = Path(run_dir)
    last = run_dir / LAST
    save_checkpoint(last, state)
    if keep_last > 0:
        try:
            _link_or_copy(last, run_dir / epoch_checkpoint_name(epoch))
        except WriteError as exc:
            raise _write_failed(exc) from None
    kept = 0
    for e, path in epoch_checkpoints(run_dir):
        if e <= epoch and kept < keep_last:
            kept += 1
            continue
        path.unlink(missing_ok=True)
    return last


def load_latest_checkpoint(
    run_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest readable checkpoint of a run folder: ``last.pt``, else the newest good ``ckpt_epoch*.pt``.

    Returns:
        ``(path, state, problems)`` with one line per damaged checkpoint passed over, or None when the folder
        holds no checkpoint at all.

    Raises:
        CheckpointError: there are checkpoints but none of them is readable (the message lists why).
    """
    run_dir = Path(run_dir)
    candidates = [run_dir / LAST] if (run_dir / LAST).exists() else []
    candidates += [path for _, path in epoch_checkpoints(run_dir)]
    problems: list[str] = []
    for path in candidates:
        try:
            return path, load_checkpoint(path, map_location=map_location), problems
        except CheckpointError as exc:
            problems.append(str(exc))
    if problems:
        raise CheckpointError(f"no readable checkpoint in {run_dir}: {'; '.join(problems)}")
    return None


def tensor_bytes(state: Any) -> int:
    """Bytes of all tensors in a nested dict/list (the size of a checkpoint, give or take its metadata)."""
    if isinstance(state, torch.Tensor):
        return state.nelement() * state.element_size()
    if isinstance(state, Mapping):
        return sum(tensor_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(tensor_bytes(v) for v in state)
    return 0


def check_run_folder(run_dir: str | Path, need_bytes: int) -> None:
    """Fail early when the run folder cannot take the run's checkpoints: not creatable, not writable, or too full.

    Raises:
        CheckpointError: one line naming the folder and the reason.
    """
    run_dir = Path(run_dir)
    probe = run_dir / ".augkd-write-test"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(probe, lambda f: f.write(b"augkd"))
        probe.unlink()
    except OSError as exc:
        reason = exc.reason if isinstance(exc, WriteError) else exc.strerror or _first_line(exc)
        raise CheckpointError(f"run folder {run_dir} is not writable: {reason}") from None
    free = shutil.disk_usage(run_dir).free
    if free < need_bytes:
        raise CheckpointError(
            f"not enough free space for checkpoints in {run_dir}: {free / 2**20:.1f} MiB free, the run needs about "
            f"{need_bytes / 2**20:.1f} MiB (checkpoint.keep_last sets how many are kept)"
        )
