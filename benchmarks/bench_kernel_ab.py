"""ra-n2-m9 with the fused C kernel and with the grouped torch path, interleaved in one process; prints JSON.

Usage:
    python benchmarks/bench_kernel_ab.py

One thread; 32 px (batch 1024) and 224 px (batch 128) of real images; median of 6 batches each after one
warm-up, plus the kernel path's split into sampling and apply (packing + the C call).
"""

import json
import statistics
import time

import torch

from augkd.augment import kernel
from augkd.augment.spec import build_policy
from augkd.bench.augment import _benchmark_images, default_data_dir

torch.set_num_threads(1)
out = {}
for size, bs in ((32, 1024), (224, 128)):
    x = _benchmark_images(size, bs, default_data_dir())
    idx = torch.arange(bs)
    p = build_policy("ra-n2-m9", image_size=size, seed=0)
    t = {True: [], False: []}
    for r in range(7):
        for flag in (True, False):
            kernel.set_enabled(flag)
            s = time.perf_counter()
            p(x, idx, r)
            t[flag].append(time.perf_counter() - s)
    kernel.set_enabled(True)
    # split of the kernel path: sampling, packing + C (apply), of which the C call alone
    samp, app = [], []
    for r in range(5):
        s = time.perf_counter()
        prm = p.sample(idx, r)
        samp.append(time.perf_counter() - s)
        s = time.perf_counter()
        p.apply(x, prm)
        app.append(time.perf_counter() - s)
    out[size] = {
        "kernel_images_per_s": bs / statistics.median(t[True][1:]),
        "torch_path_images_per_s": bs / statistics.median(t[False][1:]),
        "speedup": statistics.median(t[False][1:]) / statistics.median(t[True][1:]),
        "sample_ms": 1e3 * statistics.median(samp),
        "apply_ms": 1e3 * statistics.median(app),
    }
print(json.dumps(out))
