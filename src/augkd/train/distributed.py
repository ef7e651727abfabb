"""Data-parallel training under ``torchrun``: one process per device, gradients all-reduced by DDP.

The training loop calls the few functions here and otherwise does not know whether it runs alone or as one
of many ranks. ``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; without them (a plain
``augkd train``) every function is a no-op and :func:`init` returns a single-process :class:`DistEnv`.

Conventions (see the README's "Distributed training" section):

- ``batch_size`` in the config is the **global** batch; each rank takes ``batch_size / world_size`` samples
  of every global batch, chosen by sample index (:class:`~augkd.data.DeviceLoader` with ``rank`` and
  ``world_size``), so global batch ``k`` holds the same images, augmented the same way, whatever the number
  of ranks. Per-rank mean losses plus DDP's gradient average equal the single-process mean over the global
  batch.
- gloo on the CPU, NCCL on CUDA; rank ``r`` uses ``cuda:LOCAL_RANK``.
- Only rank 0 writes the run folder and prints; every rank loads ``last.pt`` to resume.
- A failing rank never leaves the others waiting for the collective timeout: :func:`report_failure` publishes
  its one-line error in torchrun's key-value store, and a watchdog thread in every rank (started by
  :func:`init`) polls the store every second and ends its process when another rank has failed. Only the
  failing rank prints its error; the others exit silently with status 1 (:data:`PEER_FAILED_EXIT`).
"""

from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistEnv",
    "DistributedError",
    "active",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "convert_sync_bn",
    "env_from_environ",
    "exit_after_peer_failure",
    "init",
    "peer_failure",
    "per_rank_batch",
    "rank_device",
    "report_failure",
    "unwrap",
    "wrap",
]

# Whether :func:`init` created the process group (then :func:`cleanup` destroys it; a caller's own group stays).
_OWNS_GROUP = False
#: Exit status of a rank ended by the watchdog because another rank failed.
PEER_FAILED_EXIT = 1
#: Seconds between two looks of the watchdog at the store.
WATCH_INTERVAL_S = 1.0
#: Seconds a rank waits, once it knows of another rank's failure, before it ends itself.
PEER_GRACE_S = 10.0


class DistributedError(ValueError):
    """A distributed setting that cannot work (indivisible batch, SyncBatchNorm on the CPU, bad device)."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands among the ranks of a run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        """True when more than one process trains (a process group exists)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def env_from_environ() -> DistEnv:
    """The rank layout torchrun exported (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); one process without them."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistEnv(rank=rank, local_rank=local, world_size=world)


def init(device: torch.device, timeout_s: float = 1800.0) -> tuple[DistEnv, torch.device]:
    """Join the process group when launched by torchrun; return this rank's layout and device.

    Args:
        device: the device the config resolved to (``cpu`` or ``cuda``). Under torchrun a CUDA run moves each
            rank to ``cuda:LOCAL_RANK``.
        timeout_s: how long a collective waits for a missing rank before failing.

    Returns:
        ``(env, device)``; single-process runs get ``DistEnv()`` and ``device`` unchanged.

    Raises:
        DistributedError: an explicit ``cuda:N`` under torchrun, or more local ranks than visible GPUs.
    """
    global _OWNS_GROUP
    env = env_from_environ()
    if not env.enabled:
        return env, device
    device = rank_device(device, env)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
        _OWNS_GROUP = True
        _Failures.start(env)
    return env, device


class _Failures:
    """The failure board of a run in torchrun's key-value store, and the watchdog thread that reads it."""

    store: dist.Store | None = None
    thread: threading.Thread | None = None
    stop = threading.Event()
    prefix = ""
    rank = 0
    lock = threading.Lock()

    @classmethod
    def start(cls, env: DistEnv) -> None:
        try:  # the process group's own store (torchrun's): no second connection to keep or close
            store = dist.distributed_c10d._get_default_store()
        except (RuntimeError, ValueError, AttributeError):
            return  # no board: the collective timeout still applies
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        cls.store, cls.rank = store, env.rank
        cls.prefix = f"augkd/{run_id}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/"
        cls.stop = threading.Event()
        cls.thread = threading.Thread(target=cls._watch, name="augkd-peer-watchdog", daemon=True)
        cls.thread.start()

    @classmethod
    def close(cls) -> None:
        """Stop the watchdog and drop the store client (before the process group goes)."""
        if cls.thread is not None:
            cls.stop.set()
            cls.thread.join()
        cls.store, cls.thread = None, None

    @classmethod
    def _get(cls) -> str | None:
        store = cls.store
        if store is None:
            return None
        with cls.lock:
            if not store.check([cls.prefix + "failed"]):
                return None
            return store.get(cls.prefix + "failed").decode(errors="replace")

    @classmethod
    def _watch(cls) -> None:
        while not cls.stop.wait(WATCH_INTERVAL_S):
            try:
                failed = cls._get()
            except (RuntimeError, OSError):  # the store is gone: torchrun's agent ended, so does this rank
                failed = "rank ?: the launcher's store is gone"
            if failed is not None and not failed.startswith(f"rank {cls.rank}:"):
                exit_after_peer_failure()  # the main thread may be blocked in a collective: end the process

    @classmethod
    def publish(cls, line: str) -> bool:
        store = cls.store
        if store is None:
            return False
        try:
            with cls.lock:
                if store.add(cls.prefix + "count", 1) == 1:  # the first failure is the one shown
                    store.set(cls.prefix + "failed", f"rank {cls.rank}: {line}")
                    return True
        except (RuntimeError, OSError):
            pass
        return False


def report_failure(error: BaseException) -> bool:
    """Tell the other ranks that this one fails with ``error``: their watchdogs end them within seconds.

    Returns:
        True when this is the run's first failure (its rank should show the error), False when another rank
        failed first (this error is a consequence, e.g. a collective broken by the dead peer) or when there is
        no failure board (not under torchrun).
    """
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return _Failures.publish(line)


def exit_after_peer_failure() -> NoReturn:
    """End this process quietly because another rank failed (after a moment, so that torchrun sees the failing
    rank exit first and names it as the root cause)."""
    time.sleep(PEER_GRACE_S)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(PEER_FAILED_EXIT)


def peer_failure() -> str | None:
    """The one-line error of the rank that failed first (``"rank 1: ..."``), or None."""
    try:
        return _Failures._get()
    except (RuntimeError, OSError):
        return None


def rank_device(device: torch.device, env: DistEnv) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for a distributed CUDA run, else ``device`` itself.

    Raises:
        DistributedError: an explicit ``cuda:N`` under torchrun, or more local ranks than visible GPUs.
    """
    if not env.enabled or device.type != "cuda":
        return device
    if device.index is not None:
        raise DistributedError(
            f"device={device} under torchrun: use device=cuda or device=auto (rank r takes cuda:LOCAL_RANK)"
        )
    if env.local_rank >= torch.cuda.device_count():
        raise DistributedError(
            f"LOCAL_RANK={env.local_rank} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    return torch.device("cuda", env.local_rank)


def cleanup(failed: bool = False) -> None:
    """Leave the process group :func:`init` joined (safe when there is none, and after an error).

    Args:
        failed: this rank is failing; an NCCL group is not destroyed (with peers blocked in a collective, that
            can wait for the collective timeout) but left to the end of the process.
    """
    global _OWNS_GROUP
    _Failures.close()
    if _OWNS_GROUP and dist.is_initialized() and not (failed and dist.get_backend() == "nccl"):
        dist.destroy_process_group()
    _OWNS_GROUP = False


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait until every rank gets here (no-op for one process)."""
    if active():
        dist.barrier()


def wrap(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` for a distributed run (rank 0's weights are broadcast), else ``model``."""
    if not env.enabled:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (the one whose ``state_dict`` is saved)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def convert_sync_bn(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by SyncBatchNorm (statistics over the global batch) in a distributed run.

    Raises:
        DistributedError: on the CPU, where torch's SyncBatchNorm does not run.
    """
    if not env.enabled:
        return model
    if device.type != "cuda":
        raise DistributedError("sync_bn=true needs CUDA devices: torch's SyncBatchNorm does not run on the CPU")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def per_rank_batch(global_batch: int, env: DistEnv, key: str = "batch_size") -> int:
    """The share of each rank in a global batch.

    Raises:
        DistributedError: when the global batch does not split evenly over the ranks.
    """
    if global_batch % env.world_size:
        raise DistributedError(
            f"{key}={global_batch} (the global batch) does not split evenly over {env.world_size} processes; "
            f"use a multiple of {env.world_size}"
        )
    return global_batch // env.world_size


@torch.no_grad()
def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    Without SyncBatchNorm each rank updates its running statistics from its own shard; before evaluating or
    saving, every rank takes rank 0's, so evaluation is of the very model rank 0 checkpoints.
    """
    if not active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks (returned; the input is left alone). Identity for one process."""
    if not active():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
