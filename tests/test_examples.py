"""examples/: the own-loop example trains with augkd's policy, Mixup/CutMix and top-K KD in a plain loop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from augkd.config import load_config
from augkd.train.config import TrainConfig
from augkd.train.loop import train

REPO = Path(__file__).resolve().parents[1]


def test_own_loop_example_runs_on_a_small_subset(tmp_path, tiny_overrides, cifar10_zip, cache_dir):
    train(load_config(TrainConfig, None, tiny_overrides(tmp_path)), quiet=True)  # a small teacher
    args = ["--teacher", str(tmp_path / "tiny" / "best.pt"), "--data", str(cifar10_zip), "--cache-dir", str(cache_dir)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(REPO / "examples" / "own_loop.py"), *args, "--subset", "10", "--epochs", "2"]
    out = subprocess.run([*cmd, "--batch-size", "25"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    pattern = r"epoch \d: loss \d+\.\d{3} \(kd \d+\.\d{3}, agreement \d+%\), test top-1 \d+\.\d{2}%"
    assert len(lines) == 2 and all(re.fullmatch(pattern, line) for line in lines), lines
    assert len(REPO.joinpath("examples", "own_loop.py").read_text().splitlines()) <= 75
