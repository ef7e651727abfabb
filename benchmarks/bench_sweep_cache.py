"""CPU time of a KD sweep with and without ``augkd sweep --cache``; prints JSON.

The same grid (KD lambda in {0.1, 0.5, 1, 2} at K=3, one seed, so four KD runs that see one augmentation stream)
runs twice, one run at a time: first with a live teacher in every run, then with ``--cache``, where the first run
to start builds one teacher cache and all four read it. Each sweep is a child process; its CPU time (user + system
of it and every process it waited for: the runs and the cache builder) comes from ``resource.getrusage``, which
a loaded machine inflates less than wall time. The final test errors of both sweeps are reported too: on the CPU
with ``amp=off`` a cached run reproduces the live one, so they must match.

Default recipe (``--images``, ``--epochs``): ``fastnet9`` on 2,000 CIFAR-10 images (200 per class), 4 epochs,
``geo-n2-m6``, the main job's teacher (``results/demo/teacher/best.pt``), one thread.

Usage:
    python benchmarks/bench_sweep_cache.py                 # about 5 CPU-minutes on a 2-core AMD EPYC
    python benchmarks/bench_sweep_cache.py --epochs 8 --out results/sweep-cache-cpu.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from augkd.bench.augment import default_data_dir

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = "0.1,0.5,1,2"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sweep(out: Path, overrides: list[str], cache: bool) -> dict[str, object]:
    cmd = [
        sys.executable, "-m", "augkd", "sweep", "--grid", f"kd.lambda={LAMBDAS}", "--seeds", "1", "--jobs", "1",
        "--out", str(out), "--no-report", *(["--cache"] if cache else []), *overrides,
    ]  # fmt: skip
    cpu, wall = _cpu_seconds(), time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    cpu, wall = _cpu_seconds() - cpu, time.perf_counter() - wall
    errors = {
        run.name: json.loads((run / "summary.json").read_text())["final_error"]
        for run in sorted(out.iterdir())
        if (run / "summary.json").is_file()
    }
    manifest = json.loads((out / "sweep.json").read_text())
    return {"cpu_seconds": cpu, "wall_seconds": wall, "final_error": errors, "caches": manifest.get("caches", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200, help="training images per class")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    data = default_data_dir() / "cifar10-jpg.zip"
    overrides = [
        "name=student", f"epochs={args.epochs}", "batch_size=128", f"eval_every={args.epochs}", "amp=off",
        "threads=1", "model.name=fastnet9", "data.dataset=folder", f"data.root={data}", "data.image_size=32",
        "data.base_aug=crop-flip", f"data.subset_per_class={args.images}", "augment.policy=geo-n2-m6",
        "optim.lr=0.1", "optim.schedule=onecycle", "optim.warmup_epochs=1",
        f"kd.teacher={ROOT / 'results/demo/teacher/best.pt'}", "kd.preset=cifar10",
    ]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="augkd-sweep-cache-"))
    try:
        live = _sweep(tmp / "live", overrides, cache=False)
        cached = _sweep(tmp / "cached", overrides, cache=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    same = live["final_error"] == cached["final_error"]
    report = {
        "grid": f"kd.lambda={LAMBDAS} (K=3, T=2), 1 seed, --jobs 1",
        "recipe": f"fastnet9, {args.images * 10} CIFAR-10 images, {args.epochs} epochs, geo-n2-m6, amp=off, threads=1",
        "live": live,
        "cached": cached,
        "cpu_saved_fraction": 1 - cached["cpu_seconds"] / live["cpu_seconds"],
        "same_final_errors": same,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
