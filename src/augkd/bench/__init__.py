"""Benchmarks against the anchors, side by side in one process; each returns a JSON-ready dict.

- :mod:`augkd.bench.augment`: augmentation policies against torchvision, timm and kornia.
- :mod:`augkd.bench.data`: the in-memory loader + base augmentation against torchvision's per-image pipeline.
"""

from pathlib import Path

__all__ = ["cpu_name"]


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
