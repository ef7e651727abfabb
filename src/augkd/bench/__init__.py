"""Benchmarks against the anchors, side by side in one process; each returns a JSON-ready dict.

- :mod:`augkd.bench.augment`: augmentation policies against torchvision, timm and kornia.
- :mod:`augkd.bench.data`: the in-memory loader + base augmentation against torchvision's per-image pipeline.
"""

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["cpu_name", "interleaved_medians"]


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``"unknown"`` where there is none), for benchmark reports.

    Standard library only: scripts that must set OpenMP's environment before torch is imported can call it.
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def interleaved_medians(
    contenders: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 0
) -> dict[str, float]:
    """Median seconds per call of each contender, timed in interleaved rounds (``a, b, c, a, b, c, ...``) so that a
    busy machine slows them all alike; the first ``warmup`` rounds run untimed."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(warmup + rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
