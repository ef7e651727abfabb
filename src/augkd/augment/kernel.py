"""The fused CPU kernel: every op step of every image of a batch in one call of a small C library.

:meth:`augkd.augment.policies.Policy.apply` groups a batch by op and runs the torch functions of
:mod:`augkd.augment.functional` once per (step, op): about 30 calls of 50-70 small torch ops each per batch, plus
a sort and two whole-batch gathers. On the CPU that fixed cost, not the pixel work, dominated. This module does
the same work one image at a time in C (``_kernel.c``, beside this file): all steps of an image while it sits in
the cache, no sort, no gather, no temporaries, the batch split over threads (ctypes releases the GIL).

The bytes are the torch path's (and so Pillow's): the level-to-argument tables of :mod:`augkd.augment.ops` and
the fixed-point set-up of :mod:`augkd.augment.functional` (rotation matrices, shear steps, cutout boxes) run in
torch here, vectorised over the batch, and the C side does only integer and float32 pixel arithmetic in the
order the torch functions do (tests compare both paths on every op).

The library is compiled on first use with the system C compiler (``$CC``, else ``cc``) into
``$AUGKD_KERNEL_DIR`` (default ``~/.cache/augkd/kernel``), keyed by a hash of the source and the flags, written
atomically; later processes load it. Without a compiler, with ``AUGKD_KERNEL=0``, on other devices or for
images that are not RGB, the policies use the torch path, which gives the same bytes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from augkd.augment import functional as F
from augkd.augment.ops import _arg, _lookup

__all__ = ["KERNEL_OPS", "apply_steps", "available", "load", "set_enabled", "supports"]

_SOURCE = Path(__file__).with_name("_kernel.c")
# No -ffast-math and no FMA contraction: the float32 blends must round each operation as torch does.
_FLAGS = ("-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
_IARGS = 6  # integer arguments per (image, step), as IARGS in _kernel.c
_VERSION = 1  # augkd_kernel_version() of a library this module can drive

Packed = tuple[torch.Tensor | None, torch.Tensor | None]  # (n, <= _IARGS) int64 arguments, (n,) float32 factor


def _none(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
    return None, None


def _factor(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
    return None, arg


def _threshold(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
    return arg.clamp(0, 256).view(-1, 1), None


def _posterize_mask(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
    return ((0xFF << (8 - arg.clamp(0, 8))) & 0xFF).view(-1, 1), None


def _rotate(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
    base, step = F._rotate_fixed(arg.to(torch.float64), *hw)
    # bx, by, x per output column, x per output row, y per output column, y per output row
    return torch.cat([base, step.reshape(-1, 4)], dim=1), None


def _shear(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
    base, step = F._shear_fixed(arg)
    return torch.stack([base, step], dim=1), None


def _shift(limit: Callable[[tuple[int, int]], int]) -> Callable[[torch.Tensor | None, tuple[int, int]], Packed]:
    def pack(arg: torch.Tensor | None, hw: tuple[int, int]) -> Packed:
        pixels = torch.floor(arg.to(torch.float64) + 0.5).clamp_(-limit(hw), limit(hw)).to(torch.int64)
        return pixels.view(-1, 1), None

    return pack


#: Op name -> (kind id of ``_kernel.c``, packer of the op's argument into the kernel's per-entry arguments).
KERNEL_OPS: dict[str, tuple[int, Callable[[torch.Tensor | None, tuple[int, int]], Packed]]] = {
    "invert": (0, _none),
    "autocontrast": (1, _none),
    "equalize": (2, _none),
    "rotate": (3, _rotate),
    "solarize": (4, _threshold),
    "posterize": (5, _posterize_mask),
    "color": (6, _factor),
    "contrast": (7, _factor),
    "brightness": (8, _factor),
    "sharpness": (9, _factor),
    "shear_x": (10, _shear),
    "shear_y": (11, _shear),
    "translate_x": (12, _shift(lambda hw: hw[1])),
    "translate_y": (13, _shift(lambda hw: hw[0] + 1)),
    "cutout": (14, _none),  # packed from the sizes and centres in apply_steps
}

_lock = threading.Lock()
_state: dict[str, object] = {"enabled": os.environ.get("AUGKD_KERNEL", "1") != "0"}
_pool: ThreadPoolExecutor | None = None


def set_enabled(enabled: bool) -> bool:
    """Use the kernel (``True``, the default unless ``AUGKD_KERNEL=0``) or the torch path; returns the old value."""
    old = bool(_state["enabled"])
    _state["enabled"] = bool(enabled)
    return old


def _library_path() -> Path:
    source = _SOURCE.read_bytes()
    compiler = os.environ.get("CC", "cc")
    digest = hashlib.sha256(source + " ".join((compiler, *_FLAGS, platform.machine())).encode()).hexdigest()[:16]
    root = Path(os.environ.get("AUGKD_KERNEL_DIR", Path.home() / ".cache" / "augkd" / "kernel"))
    return root / f"augkd_kernel-{digest}.so"


def _build(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        compiler = os.environ.get("CC", "cc")
        subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", tmp], check=True, capture_output=True, timeout=120)
        os.replace(tmp, path)  # atomic: a concurrent process loads the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load() -> ctypes.CDLL | None:
    """The compiled kernel library (built on first use), or ``None`` when it cannot be built or is disabled."""
    if not _state["enabled"]:
        return None
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        try:
            path = _library_path()
            if not path.exists():
                _build(path)
            lib = ctypes.CDLL(str(path))
            if lib.augkd_kernel_version() != _VERSION:
                raise OSError(f"{path} is kernel version {lib.augkd_kernel_version()}, expected {_VERSION}")
            c_int, c_i64, c_ptr = ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
            # images, first, last, c, h, w, steps, kind, iarg, farg, fill
            args = [c_ptr, c_i64, c_i64, c_int, c_int, c_int, c_int, c_ptr, c_ptr, c_ptr, c_int]
            lib.augkd_apply_steps.argtypes = args
            lib.augkd_apply_steps.restype = c_int
        except (OSError, subprocess.SubprocessError) as err:
            failed = isinstance(err, subprocess.CalledProcessError)
            detail = err.stderr.decode(errors="replace")[-300:] if failed else err
            warnings.warn(f"augkd's C augmentation kernel is unavailable ({detail}); torch path used", stacklevel=3)
            lib = None
        _state["lib"] = lib
        return lib


def available() -> bool:
    """Whether the kernel is enabled and loads (building it if needed)."""
    return load() is not None


def supports(images: torch.Tensor, op_names: Sequence[str]) -> bool:
    """Whether :func:`apply_steps` can take this batch: contiguous uint8 RGB on the CPU, ops it knows, kernel up."""
    return (
        images.device.type == "cpu"
        and images.dtype == torch.uint8
        and images.ndim == 4
        and images.shape[1] == 3
        and all(name == "identity" or name in KERNEL_OPS for name in op_names)
        and available()
    )


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child (a DataLoader worker) has no threads behind the parent's pool


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers != torch.get_num_threads():
        _pool = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()), thread_name_prefix="augkd-kernel")
    return _pool


def apply_steps(
    images: torch.Tensor,
    op_names: Sequence[str],
    space: str,
    op: torch.Tensor,
    level: torch.Tensor,
    active: torch.Tensor,
    center: torch.Tensor,
    fill: int,
) -> torch.Tensor:
    """A policy's sampled steps applied to a batch by the kernel; the same bytes as the grouped torch path.

    Args:
        images: uint8 (B, 3, H, W) on the CPU (see :func:`supports`); not modified.
        op_names: the names ``op`` ids index into.
        space: the level scale of the op tables (``"autoaugment"`` or ``"geometric"``).
        op: (B, N) int64 op ids; level: (B, N) float32 signed levels; active: (B, N) bool, whether each step
            runs (identity steps may be active: they do nothing); center: (B, N, 2) cutout centres (y, x).
        fill: grey level of uncovered pixels and of cutout.

    Returns:
        A new uint8 batch.
    """
    lib = load()
    if lib is None:
        raise RuntimeError("the C augmentation kernel is not available; check augkd.augment.kernel.supports first")
    out = images.contiguous().clone()
    b, c, h, w = out.shape
    steps = op.shape[1]
    entries = b * steps
    kind = torch.full((entries,), -1, dtype=torch.int32)
    iarg = torch.zeros(entries, _IARGS, dtype=torch.int64)
    farg = torch.zeros(entries, dtype=torch.float32)
    num_ops = len(op_names)
    keys = torch.where(active, op, num_ops).reshape(-1)
    counts = torch.bincount(keys, minlength=num_ops + 1).tolist()
    order = torch.argsort(keys, stable=True)
    flat_level = level.reshape(-1)
    start = 0
    for op_id in range(num_ops):
        count = counts[op_id]
        if count == 0:
            continue
        entry = order[start : start + count]
        start += count
        name = op_names[op_id]
        if name == "identity":
            continue
        code, pack = KERNEL_OPS[name]
        arg = _arg(_lookup(name, space), flat_level.index_select(0, entry), (h, w))
        if name == "cutout":
            # AutoAugment's cutout clips at the border; the geometric space's moves the box inside the image
            first, stop = F._cutout_box(arg, center.reshape(-1, 2).index_select(0, entry), h, w, space == "geometric")
            ints, factor = torch.cat([first, stop], dim=1), None
        else:
            ints, factor = pack(arg, (h, w))
        kind[entry] = code
        if ints is not None:
            iarg[entry, : ints.shape[1]] = ints.to(torch.int64)
        if factor is not None:
            farg[entry] = factor.to(torch.float32)
    ptrs = (out.data_ptr(), kind.data_ptr(), iarg.data_ptr(), farg.data_ptr())
    chunks = max(1, min(torch.get_num_threads(), b))
    bounds = [(i * b // chunks, (i + 1) * b // chunks) for i in range(chunks)]

    def run(bound: tuple[int, int]) -> int:
        return lib.augkd_apply_steps(ptrs[0], bound[0], bound[1], c, h, w, steps, ptrs[1], ptrs[2], ptrs[3], fill)

    codes = [run(bounds[0])] if chunks == 1 else list(_threads().map(run, bounds))
    if any(codes):
        raise MemoryError(f"the C augmentation kernel could not allocate {c * h * w} bytes of scratch")
    return out
