"""float32 CPU training step of fastnet9 (batch 256): memory format x threads x torch.compile; prints JSON.

Usage:
    python benchmarks/bench_float32_step.py cl,nchw,cl_t1,nchw_t1 3 3    # variants, steps per round, rounds
    python benchmarks/bench_float32_step.py nchw,nchw_compile 3 3

A variant name holds ``cl`` (channels-last, else NCHW), ``t1`` (1 thread, else 2) and ``compile``
(``torch.compile`` of the model). Rounds of every variant are interleaved; the median round is reported, and
``first_step_s`` is the first (untimed) step, which includes compilation.
"""

import json
import statistics
import sys
import time

import torch
from torch import nn

from augkd.bench.augment import default_data_dir, sample_images
from augkd.models import create_model

torch.manual_seed(0)
x8 = sample_images(default_data_dir() / "cifar10-jpg.zip", 256)
x = (x8.float() / 255 - 0.47) / 0.25
y = torch.randint(0, 10, (256,))
variants = sys.argv[1].split(",")
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3


def make(v):
    m = create_model("fastnet9", num_classes=10)
    cl = "cl" in v
    if cl:
        m = m.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    fwd = torch.compile(m) if "compile" in v else m
    threads = 1 if "t1" in v else 2
    inp = x.contiguous(memory_format=torch.channels_last) if cl else x

    def step():
        out = fwd(inp)
        loss = crit(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, threads


runs = {}
for v in variants:
    step, th = make(v)
    torch.set_num_threads(th)
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    runs[v] = (step, th, first)
res = {v: [] for v in variants}
for _round in range(rounds):
    for v in variants:
        step, th, _ = runs[v]
        torch.set_num_threads(th)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        res[v].append(steps * 256 / (time.perf_counter() - t))
out = {v: {"images_per_s": statistics.median(res[v]), "rounds": res[v], "first_step_s": runs[v][2]} for v in variants}
print(json.dumps(out))
