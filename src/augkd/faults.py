"""Fault injection for the reliability tests: ``AUGKD_FAULT`` makes a run fail on purpose at a chosen point.

The variable holds comma-separated ``<point>:<n>`` entries::

    AUGKD_FAULT=kill_at_step:6            SIGKILL the process right after optimizer step 6 (counted over the run)
    AUGKD_FAULT=kill_during_save:3        SIGKILL it in the middle of its 3rd checkpoint write (half the bytes
                                          are in the temp file, none in the checkpoint)
    AUGKD_FAULT=nan_loss_at_step:6        the loss of optimizer step 6 is NaN (what ``optim.nonfinite`` acts on)
    AUGKD_FAULT=raise_at_step:6           an exception (RuntimeError) right after optimizer step 6
    AUGKD_FAULT=raise_at_step:6@1         ... in rank 1 of a torchrun run only (``@<rank>`` works for every point)

Example (then ``augkd train ... --resume`` continues the run exactly)::

    AUGKD_FAULT=kill_at_step:6 augkd train --config configs/cifar10-demo.yaml

Unset (the normal case) every check is one dictionary lookup. ``docs/reliability.md`` lists the tests built on it.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

__all__ = ["ENV", "POINTS", "armed", "kill_now", "parse_faults", "raise_now"]

ENV = "AUGKD_FAULT"
#: The fault points and what each does.
POINTS = {
    "kill_at_step": "SIGKILL right after optimizer step n",
    "kill_during_save": "SIGKILL in the middle of the n-th checkpoint write of the process",
    "nan_loss_at_step": "the loss of optimizer step n is NaN",
    "raise_at_step": "a RuntimeError right after optimizer step n",
    "kill_in_eval": "SIGKILL in the n-th evaluation pass of the process (at its first batch)",
    "kill_at_teacher_batch": "SIGKILL after the n-th teacher batch of the process (augkd teacher-cache)",
    "kill_during_cache_write": "SIGKILL in the middle of the n-th teacher-cache epoch-file write of the process",
}


def parse_faults(text: str, rank: int = 0) -> dict[str, set[int]]:
    """``"kill_at_step:6,kill_during_save:3"`` -> ``{"kill_at_step": {6}, "kill_during_save": {3}}``.

    Entries ending in ``@<r>`` count only for rank ``r`` (the others are left out for any other ``rank``).

    Raises:
        ValueError: an unknown point, a count that is not a positive integer, or a rank that is not an integer.
    """
    faults: dict[str, set[int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        entry, at, only = item.partition("@")
        point, _, count = entry.partition(":")
        if point not in POINTS or not count.isdigit() or int(count) < 1 or (at and not only.isdigit()):
            raise ValueError(
                f"{ENV}: bad entry {item!r}; expected <point>:<n>[@<rank>] with point one of {', '.join(POINTS)}"
            )
        if not at or int(only) == rank:
            faults.setdefault(point, set()).add(int(count))
    return faults


def armed(point: str, n: int) -> bool:
    """Whether ``AUGKD_FAULT`` asks for fault ``point`` at occurrence ``n`` (1-based) in this process's rank."""
    text = os.environ.get(ENV)
    return bool(text) and n in parse_faults(text, int(os.environ.get("RANK", "0") or 0)).get(point, ())


def raise_now(point: str, n: int) -> NoReturn:
    """Raise the injected exception of ``point`` at occurrence ``n`` (a bug in one rank, for the DDP tests)."""
    raise RuntimeError(f"{ENV}: injected {point}:{n} in rank {os.environ.get('RANK', '0')}")


def kill_now() -> NoReturn:
    """SIGKILL this process: no cleanup, no ``finally`` blocks, no flushing (like a power cut for the process)."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # pragma: no cover - not reached
