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
    # @<rank>: only that rank of a torchrun run
    assert parse_faults("raise_at_step:3@1,kill_at_step:2", rank=0) == {"kill_at_step": {2}}
    assert parse_faults("raise_at_step:3@1,kill_at_step:2", rank=1) == {"raise_at_step": {3}, "kill_at_step": {2}}
    for bad in ("kill_at_step", "kill_at_step:0", "explode:3", "kill_at_step:x", "kill_at_step:2@x"):
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


# ----------------------------------------------------------------------------------------------------------------
# The soak: many kills at seeded random points, each followed by a resume (AUGKD_SOAK_SEED replays a failing draw)

SOAK_SEED = int(os.environ.get("AUGKD_SOAK_SEED", "17"))
SOAK_KILLS = 20
SOAK_EPOCHS, SOAK_STEPS_PER_EPOCH = 6, 4  # 200 images in batches of 50
SOAK_RUN = (*RUN[3:], "epochs=6", "eval_every=1", "threads=1", "checkpoint.keep_last=2", "kd.k=3")


@pytest.fixture(scope="module")
def soak(tmp_path_factory, tiny_overrides, one_thread) -> dict:
    """A teacher, its cache of the soak run's 6 epochs built in one go, and the uninterrupted KD-from-cache run."""
    root = tmp_path_factory.mktemp("soak")
    _train(tiny_overrides(root / "teacher", "model.kwargs.width=12", "augment.policy=none"))
    teacher = root / "teacher" / "tiny" / "best.pt"
    cache_args = ["--teacher", str(teacher), "--epochs", str(SOAK_EPOCHS), "--k", "5", "-q"]
    cache_args += tiny_overrides(root, *SOAK_RUN)
    assert main(["teacher-cache", "--out", str(root / "cache"), *cache_args]) == 0
    run_args = tiny_overrides(root / "reference", *SOAK_RUN, f"kd.cache={root / 'cache'}")
    _train(run_args)
    return {"root": root, "cache_args": cache_args, "reference": _snapshot(root / "reference" / "tiny")}


def _run_step(run_dir: Path) -> int:
    last = run_dir / "last.pt"
    return int(load_checkpoint(last)["step"]) if last.is_file() else 0


def _soak_fault(rng: random.Random, step: int) -> str:
    """A fault the next process is sure to reach before the run ends: a step, or (with two epochs or more to go,
    so that at least two checkpoint writes and two evaluation passes lie ahead) a checkpoint write or an
    evaluation pass."""
    total = SOAK_EPOCHS * SOAK_STEPS_PER_EPOCH
    kinds = ["step", "save", "eval"] if total - step >= 2 * SOAK_STEPS_PER_EPOCH else ["step"]
    kind = rng.choice(kinds)
    if kind == "step":
        return f"kill_at_step:{rng.randint(step + 1, min(total, step + 2 * SOAK_STEPS_PER_EPOCH))}"
    return f"kill_during_save:{rng.randint(1, 2)}" if kind == "save" else f"kill_in_eval:{rng.randint(1, 2)}"


@pytest.mark.slow
def test_soak_kd_from_a_cache_killed_20_times_resumes_to_the_uninterrupted_run(tmp_path, tiny_overrides, soak):
    rng = random.Random(SOAK_SEED)
    args = tiny_overrides(tmp_path, *SOAK_RUN, f"kd.cache={soak['root'] / 'cache'}")
    run_dir = tmp_path / "tiny"
    faults = []
    for i in range(SOAK_KILLS):
        faults.append(_soak_fault(rng, _run_step(run_dir)))
        proc = _start(args + (["--resume"] if i else []), faults[-1])
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, (faults, err[-2000:])
    assert {f.partition(":")[0] for f in faults} == {"kill_at_step", "kill_during_save", "kill_in_eval"}, faults
    _train(args, "--resume")
    _assert_same(soak["reference"], _snapshot(run_dir), f"AUGKD_SOAK_SEED={SOAK_SEED}: {faults}")


@pytest.mark.slow
def test_soak_teacher_cache_killed_at_random_points_equals_one_built_in_one_go(tmp_path, soak):
    rng = random.Random(SOAK_SEED + 1)
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "augkd", "teacher-cache", "--out", str(out), *soak["cache_args"]]
    faults = []
    for _ in range(8):
        done = len(list(out.glob("epoch_*.bin")))  # finished epochs: the next process builds the others
        left = SOAK_EPOCHS - done
        if rng.random() < 0.5:
            faults.append(f"kill_at_teacher_batch:{rng.randint(1, left * SOAK_STEPS_PER_EPOCH)}")
        else:
            faults.append(f"kill_during_cache_write:{rng.randint(1, left)}")
        proc = subprocess.run(cmd, env={**env, "AUGKD_FAULT": faults[-1]}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, (faults, proc.stderr[-2000:])
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300).returncode == 0
    reference = soak["root"] / "cache"
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names, faults
    for name in names:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), (name, faults)
