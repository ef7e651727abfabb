"""Read cost of a teacher cache per batch and per epoch opened, float32 and float16 layouts, before and after.

``TeacherCache.lookup`` of a batch of 256 random rows (K=10, T=2) from a 50,000-row epoch, and the first open of
an epoch (its seal hashed, its values checked, the float16 layout decoded), for this checkout's
``augkd.distill.cache`` and for an older copy of that file given on the command line (loaded beside it; the
rest of augkd is this checkout's). The cases are timed interleaved, round after round, so a machine's changing
load falls on all alike; medians are reported.

Usage (from the repository root):
    git show 9bf2654:src/augkd/distill/cache.py > /tmp/cache_before.py
    python results/teacher-cache-cpu/read_cost.py /tmp/cache_before.py > results/teacher-cache-cpu/read_cost.json
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import augkd.distill.cache as after

ROWS, BATCH, ROUNDS, CALLS = 50_000, 256, 41, 100


def load_module(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("augkd_cache_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(module: ModuleType, root: Path, k: int, classes: int, dtype: str, temperature: float = 2.0) -> Any:
    """A one-epoch cache of real top-K summaries of random logits, written by ``module``; opened for reading."""
    kwargs = {"temperature": temperature} if "temperature" in inspect.signature(module.CacheLayout).parameters else {}
    layout = module.CacheLayout(ROWS, k, classes, dtype, **kwargs)
    header = {"key": {}, "k": k, "temperature": temperature, "num_classes": classes, "rows": ROWS}
    header.update(logits_dtype=dtype, **(layout.header_entries() if hasattr(layout, "header_entries") else {}))
    module.prepare_cache_dir(root, header, torch.arange(ROWS))
    z = torch.randn(ROWS, classes, generator=torch.Generator().manual_seed(0)) * 3
    values, indices = z.topk(k, dim=1)
    log_p = torch.log_softmax(z, dim=1)
    stats = torch.stack(
        [torch.logsumexp(z / temperature, 1), torch.logsumexp(z, 1), -(log_p.exp() * log_p).sum(1), log_p[:, 0]], 1
    )
    module.write_epoch(root, 0, layout, indices, values, stats, header)
    return module.TeacherCache(root)


def main(before_path: str) -> None:
    torch.set_num_threads(1)
    before = load_module(before_path)
    ids = torch.randperm(ROWS, generator=torch.Generator().manual_seed(1))[:BATCH]
    tmp = tempfile.TemporaryDirectory()
    cases: dict[str, dict[str, Any]] = {}
    for k, classes in ((10, 1000), (3, 10)):
        for dtype in ("float32", "float16"):
            for name, module in (("before", before), ("after", after)):
                root = Path(tmp.name) / f"{name}-{dtype}-{k}-{classes}"
                cache = build(module, root, k, classes, dtype)
                cases[f"{name} {dtype} K={k} C={classes}"] = {
                    "cache": cache,
                    "k": k,
                    "bytes_per_sample": cache.bytes_per_sample,
                    "lookup": [],
                    "open": [],
                }
    for _ in range(ROUNDS):
        for case in cases.values():
            cache, k = case["cache"], case["k"]
            cache._verified.clear()
            cache._epoch = None
            t0 = time.perf_counter()
            cache.lookup(0, ids, k, 2.0)  # the first lookup of an epoch opens it: hash, checks, decoding
            case["open"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(CALLS):
                cache.lookup(0, ids, k, 2.0)
            case["lookup"].append((time.perf_counter() - t0) / CALLS)
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": 1,
        "rows": ROWS,
        "batch": BATCH,
        "rounds": ROUNDS,
        "cases": {
            name: {
                "bytes_per_sample": c["bytes_per_sample"],
                "lookup_us_median": statistics.median(c["lookup"]) * 1e6,
                "lookup_us_min": min(c["lookup"]) * 1e6,
                "first_open_ms_median": statistics.median(c["open"]) * 1e3,
            }
            for name, c in cases.items()
        },
    }
    tmp.cleanup()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
