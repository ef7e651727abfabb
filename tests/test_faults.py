"""Runs killed with SIGKILL at chosen and at random points, then resumed: nothing lost, the result is exact.

Each case starts ``python -m augkd train`` in a subprocess, kills it (``AUGKD_FAULT`` makes the process SIGKILL
itself at a step or in the middle of a checkpoint write; one case kills it from outside at a random moment),
resumes it with ``augkd train ... --resume`` and compares everything the run folder holds with one uninterrupted
run of the same config: weights, EMA weights, optimizer state, best.pt, metrics.jsonl and summary.json (minus
timings). Deterministic on the CPU with ``amp=off``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from augkd.checkpoint import load_checkpoint
from augkd.cli import main
from augkd.faults import parse_faults

REPO = Path(__file__).resolve().parents[1]
TIMING = {"train_time_s", "images_per_s", "elapsed_s", "wall_time_s", "run_dir"}
# 3 epochs of 4 steps; dropout, EMA and a RandAugment policy make every piece of state matter; evaluating only at the
# end makes the checkpoint writes countable: last.pt after epochs 1, 2 (writes 1, 2), best.pt then last.pt (3, 4).
RUN = (
    "epochs=3",
    "eval_every=3",
    "threads=1",
    "model.drop_rate=0.2",
    "ema.enabled=true",
    "ema.decay=0.9",
    "augment.policy=ra-n2-m9",
    "optim.warmup_epochs=0.5",
)


def test_parse_faults():
    assert parse_faults("kill_at_step:6, kill_during_save:3,kill_at_step:9") == {
        "kill_at_step": {6, 9},
        "kill_during_save": {3},
    }
    assert parse_faults("") == {}
    for bad in ("kill_at_step", "kill_at_step:0", "explode:3", "kill_at_step:x"):
        with pytest.raises(ValueError, match="AUGKD_FAULT: bad entry"):
            parse_faults(bad)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # `threads=1` in the runs below sets it for the whole process


def _train(args: list[str], *extra: str) -> None:
    assert main(["train", "-q", *args, *extra]) == 0


def _snapshot(run_dir: Path) -> dict:
    """Everything a run folder holds that must not depend on interruptions."""
    last, best = load_checkpoint(run_dir / "last.pt"), load_checkpoint(run_dir / "best.pt")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "files": sorted(p.name for p in run_dir.iterdir()),
        "last": {k: last[k] for k in ("model", "ema", "optimizer", "epoch", "step", "best_top1")},
        "best": best["model"],
        "metrics": [{k: v for k, v in r.items() if k not in TIMING} for r in rows],
        "summary": {k: v for k, v in summary.items() if k not in TIMING},
    }


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_overrides, one_thread) -> dict:
    out = tmp_path_factory.mktemp("reference")
    _train(tiny_overrides(out, *RUN))
    return _snapshot(out / "tiny")


def _start(args: list[str], fault: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "AUGKD_FAULT": fault}
    cmd = [sys.executable, "-m", "augkd", "train", "-q", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _killed(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err


@pytest.mark.slow
@pytest.mark.parametrize(
    "faults",
    [
        ["kill_at_step:7"],  # mid epoch 2
        ["kill_during_save:2"],  # half-written last.pt of epoch 2: last.pt of epoch 1 is used
        ["kill_during_save:3"],  # half-written best.pt
        # killed twice: mid epoch 1 (no checkpoint yet: the resume starts over), then during its final last.pt
        ["kill_at_step:3", "kill_during_save:4"],
    ],
    ids=lambda f: "+".join(f),
)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_overrides, reference, faults):
    args = tiny_overrides(tmp_path, *RUN)
    for i, fault in enumerate(faults):
        _killed(_start(args + (["--resume"] if i else []), fault))
    assert not (tmp_path / "tiny" / "summary.json").exists()
    _train(args, "--resume")
    _assert_same(reference, _snapshot(tmp_path / "tiny"))


@pytest.mark.slow
def test_sigkill_at_a_random_moment(tmp_path, tiny_overrides, reference):
    seed = int(os.environ.get("AUGKD_KILL_SEED", time.time_ns() % 10**6))
    delay = random.Random(seed).uniform(0.0, 1.5)
    args = tiny_overrides(tmp_path, *RUN)
    proc = _start(args)
    metrics = tmp_path / "tiny" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not metrics.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the run is training (epoch 1 finished): from here, any moment
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=300)
    _train(args, "--resume")
    _assert_same(reference, _snapshot(tmp_path / "tiny"), f"AUGKD_KILL_SEED={seed} (kill {delay:.2f}s after epoch 1)")
