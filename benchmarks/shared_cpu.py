"""Throughput of augkd's augmentation and of training steps on an idle and on a loaded CPU, per OpenMP setting.

Each setting runs in a fresh Python process, because OpenMP reads its environment (``OMP_WAIT_POLICY``,
``GOMP_SPINCOUNT``) once, when torch is imported. "Loaded" starts one busy-looping process (``while True: pass``)
beside the measurement, as another user's job on a laptop or a shared server would, and stops it afterwards.

Settings:

- ``spin-2``: torch's defaults (one thread per core, libgomp's active spin-wait), what augkd did before.
- ``spin-1``: ``threads=1``.
- ``passive-2``: one thread per core with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep instead of
  spinning), what the ``augkd`` command sets now before torch is imported.
- ``default-2``: no variable set (libgomp spins about 300,000 iterations, then sleeps).
- ``spin10k-2``, ``spin100k-2``: ``GOMP_SPINCOUNT`` of 10,000 and 100,000 (a bounded spin, then sleep).

Usage:
    python benchmarks/shared_cpu.py --out results/shared-cpu/shared-cpu.json
    python benchmarks/shared_cpu.py --conditions loaded --settings spin-2 passive-2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from augkd.bench import cpu_name

SETTINGS: dict[str, tuple[dict[str, str], int]] = {
    # name -> (environment set before torch is imported, torch threads; 0: torch's default)
    "spin-2": ({"OMP_WAIT_POLICY": "ACTIVE"}, 0),
    "spin-1": ({"OMP_WAIT_POLICY": "ACTIVE"}, 1),
    "passive-2": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0),
    "default-2": ({}, 0),  # libgomp's own default: spin about 300,000 iterations, then sleep
    "spin10k-2": ({"GOMP_SPINCOUNT": "10000"}, 0),  # a short spin, then sleep
    "spin100k-2": ({"GOMP_SPINCOUNT": "100000"}, 0),
}


def _worker(threads: int, repeats: int) -> dict[str, float]:
    """Images/s of one augmentation batch and of one training step (median of ``repeats``), in this process."""
    import torch

    from augkd.augment.spec import build_policy
    from augkd.bench.augment import default_data_dir, sample_images
    from augkd.models import create_model

    if threads:
        torch.set_num_threads(threads)
    images = sample_images(default_data_dir() / "cifar10-jpg.zip", 1024)
    policy = build_policy("ra-n2-m9", image_size=32, seed=0)
    index = torch.arange(images.shape[0])

    def timed(fn, n: int) -> float:
        fn(0)  # warm-up
        times = []
        for r in range(1, n + 1):
            start = time.perf_counter()
            fn(r)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    augment_s = timed(lambda r: policy(images, index, r), repeats)

    torch.manual_seed(0)
    model = create_model("fastnet9", num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batch = (images[:256].float() / 255).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(256) % 10

    def step(_: int) -> None:
        loss = torch.nn.functional.cross_entropy(model(batch), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_s = timed(step, repeats)
    return {
        "threads": torch.get_num_threads(),
        "augment_images_per_s": images.shape[0] / augment_s,
        "train_images_per_s": batch.shape[0] / train_s,
    }


def _measure(setting: str, repeats: int) -> dict[str, float]:
    env_extra, threads = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(env_extra)
    cmd = [sys.executable, __file__, "--worker", str(threads), "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--conditions", nargs="+", default=["idle", "loaded"], choices=["idle", "loaded"])
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting and condition (medians)")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per process (median)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.repeats)))
        return

    rows = []
    for condition in args.conditions:
        spinner = None
        if condition == "loaded":
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for rnd in range(args.rounds):
                for setting in args.settings:  # interleaved, so a change in the others' load hits every setting
                    load = os.getloadavg()[0]
                    res = _measure(setting, args.repeats)
                    rows.append({"condition": condition, "setting": setting, "round": rnd, "load1": load, **res})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
                spinner.wait()

    summary = {}
    for condition in args.conditions:
        for setting in args.settings:
            mine = [r for r in rows if r["condition"] == condition and r["setting"] == setting]
            summary[f"{condition}/{setting}"] = {
                key: round(statistics.median(r[key] for r in mine), 1)
                for key in ("augment_images_per_s", "train_images_per_s", "load1")
            }
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "summary": summary, "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
