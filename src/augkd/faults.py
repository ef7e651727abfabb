"""Fault injection for the reliability tests: ``AUGKD_FAULT`` makes a run fail on purpose at a chosen point.

The variable holds comma-separated ``<point>:<n>`` entries::

    AUGKD_FAULT=kill_at_step:6            SIGKILL the process right after optimizer step 6 (counted over the run)
    AUGKD_FAULT=kill_during_save:3        SIGKILL it in the middle of its 3rd checkpoint write (half the bytes
                                          are in the temp file, none in the checkpoint)
    AUGKD_FAULT=nan_loss_at_step:6        the loss of optimizer step 6 is NaN (what ``optim.nonfinite`` acts on)

Example (then ``augkd train ... --resume`` continues the run exactly)::

    AUGKD_FAULT=kill_at_step:6 augkd train --config configs/cifar10-demo.yaml

Unset (the normal case) every check is one dictionary lookup. ``docs/reliability.md`` lists the tests built on it.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

__all__ = ["ENV", "POINTS", "armed", "kill_now", "parse_faults"]

ENV = "AUGKD_FAULT"
#: The fault points and what each does.
POINTS = {
    "kill_at_step": "SIGKILL right after optimizer step n",
    "kill_during_save": "SIGKILL in the middle of the n-th checkpoint write of the process",
    "nan_loss_at_step": "the loss of optimizer step n is NaN",
}


def parse_faults(text: str) -> dict[str, set[int]]:
    """``"kill_at_step:6,kill_during_save:3"`` -> ``{"kill_at_step": {6}, "kill_during_save": {3}}``.

    Raises:
        ValueError: an unknown point or a count that is not a positive integer.
    """
    faults: dict[str, set[int]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, count = item.partition(":")
        if point not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}: bad entry {item!r}; expected <point>:<n> with point one of {', '.join(POINTS)}")
        faults.setdefault(point, set()).add(int(count))
    return faults


def armed(point: str, n: int) -> bool:
    """Whether ``AUGKD_FAULT`` asks for fault ``point`` at occurrence ``n`` (1-based)."""
    text = os.environ.get(ENV)
    return bool(text) and n in parse_faults(text).get(point, ())


def kill_now() -> NoReturn:
    """SIGKILL this process: no cleanup, no ``finally`` blocks, no flushing (like a power cut for the process)."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # pragma: no cover - not reached
