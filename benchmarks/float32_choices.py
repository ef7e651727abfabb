"""The float32 CPU path of the main job: which memory format, and does torch.compile pay for itself?

One training step of the main job's student (fastnet9, batch 128, 32 px, SGD with Nesterov), one torch thread as
in ``scripts/demo.sh`` (two students side by side on two cores), in float32. Three settings, interleaved over
rounds in one process: contiguous (NCHW) eager, channels-last eager (augkd's default), channels-last with
``torch.compile`` (its compile time reported separately). Prints JSON; medians of ``--steps`` timed steps per
round, then the median over rounds.

Usage:
    OMP_WAIT_POLICY=PASSIVE python benchmarks/float32_choices.py --rounds 3 --out results/float32-cpu/choices.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from augkd.models import create_model


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    y = torch.arange(128) % 10
    x = torch.randn(128, 3, 32, 32)
    xcl = x.contiguous(memory_format=torch.channels_last)
    steps = {
        "contiguous": _step_fn(create_model("fastnet9", num_classes=10), x, y),
        "channels_last": _step_fn(
            create_model("fastnet9", num_classes=10).to(memory_format=torch.channels_last), xcl, y
        ),
    }
    compile_s = None
    if not args.no_compile:
        model = create_model("fastnet9", num_classes=10).to(memory_format=torch.channels_last)
        steps["channels_last_compiled"] = _step_fn(torch.compile(model), xcl, y)
        t0 = time.perf_counter()
        steps["channels_last_compiled"]()
        steps["channels_last_compiled"]()
        compile_s = time.perf_counter() - t0
    rows: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(2):
                step()  # warm-up
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            rows[name].append(128 / statistics.median(times))
    result = {
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "images_per_s": {name: round(statistics.median(v), 1) for name, v in rows.items()},
        "rounds": {name: [round(r, 1) for r in v] for name, v in rows.items()},
        "compile_and_first_two_steps_s": None if compile_s is None else round(compile_s, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
