"""Distributed training: 2 CPU processes under torchrun (gloo) train exactly as one process with the same global batch.

The model is fastnet9 with GroupNorm and average pools (``model.kwargs.norm=group``, ``pool=avg``): no statistic
crosses images, so splitting a global batch over two processes changes nothing but float rounding, and no
max-pool turns that rounding into a different gradient route. Four optimizer steps (two epochs of two
global batches of 100) cross an epoch boundary (reshuffle, per-epoch seeds) and a resume.

Measured gaps after four steps: about 1e-6 (with max-pools the same model drifts to 3e-4, as much as one
process run with 1 thread against 2 threads). A wrong shard, a summed instead of averaged gradient or a
per-rank schedule error moves weights by 1e-2 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from augkd.checkpoint import load_checkpoint
from augkd.config import load_config
from augkd.train import distributed
from augkd.train.config import TrainConfig
from augkd.train.distributed import DistEnv, DistributedError
from augkd.train.loop import train

SRC = Path(__file__).resolve().parents[2] / "src"


def _overrides(tiny_overrides, out_dir: Path, *extra: str) -> list[str]:
    return tiny_overrides(
        out_dir,
        "batch_size=100",
        "optim.schedule=constant",  # a run of 1 epoch resumed to 2 follows the same schedule as a run of 2
        "model.kwargs.norm=group",
        "model.kwargs.pool=avg",
        "model.kwargs.width=16",
        "channels_last=false",
        *extra,
    )


def _torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd += ["-m", "augkd", "train", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_overrides):
    """One process for 2 epochs; 2 processes for 1 epoch, then resumed by 2 processes to 2 epochs."""
    root = tmp_path_factory.mktemp("ddp")
    train(load_config(TrainConfig, None, _overrides(tiny_overrides, root / "single", "epochs=2")), quiet=True)
    first = _torchrun(_overrides(tiny_overrides, root / "ddp", "epochs=1"))
    after_one = load_checkpoint(root / "ddp" / "tiny" / "last.pt")
    resumed = _torchrun([*_overrides(tiny_overrides, root / "ddp", "epochs=2"), "--resume"])
    return {"root": root, "first": first, "after_one": after_one, "resumed": resumed}


def test_two_processes_equal_one_process_with_the_same_global_batch(runs):
    single = load_checkpoint(runs["root"] / "single" / "tiny" / "last.pt")
    ddp = load_checkpoint(runs["root"] / "ddp" / "tiny" / "last.pt")
    assert ddp["epoch"] == single["epoch"] == 2 and ddp["step"] == single["step"] == 4
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=0, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
    # The per-epoch figures are over both shards: the same as the single process's.
    for a, b in zip(single["history"], ddp["history"], strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-5)
        assert b["test_loss"] == pytest.approx(a["test_loss"], abs=1e-5)
        assert b["train_top1"] == a["train_top1"]


def test_resume_in_ddp_continues_the_saved_run(runs):
    after_one, resumed = runs["after_one"], load_checkpoint(runs["root"] / "ddp" / "tiny" / "last.pt")
    assert after_one["epoch"] == 1 and resumed["epoch"] == 2
    assert resumed["history"][0] == after_one["history"][0]  # epoch 1 carried over, not retrained
    assert "resuming after epoch 1 (step 2)" in runs["resumed"].stdout


def test_only_rank_zero_prints_and_writes(runs):
    out = runs["first"].stdout
    assert out.count("augkd train: fastnet9") == 1 and "2 processes x batch 50" in out
    assert out.count("epoch 1/1") == 1
    run_dir = runs["root"] / "ddp" / "tiny"
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["train_images"] == 200
    history = [json.loads(line) for line in (run_dir / "config_history.jsonl").read_text().splitlines()]
    assert [h["changes"]["epochs"] for h in history] == [[1, 2]]  # written once, by rank 0
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        [
            ".augkd.lock",
            "best.pt",
            "ckpt_epoch0001.pt",
            "ckpt_epoch0002.pt",
            "config.yaml",
            "config_history.jsonl",  # the resume went from 1 to 2 epochs
            "last.pt",
            "metrics.csv",
            "metrics.jsonl",
            "summary.json",
        ]
    )


def test_global_batch_must_split_evenly():
    env = DistEnv(rank=1, local_rank=1, world_size=4)
    assert distributed.per_rank_batch(128, env) == 32
    with pytest.raises(DistributedError, match=r"batch_size=130 \(the global batch\).*4 processes"):
        distributed.per_rank_batch(130, env)


def test_environment_and_single_process_defaults(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env, device = distributed.init(torch.device("cpu"))
    assert env == DistEnv() and env.is_main and not env.enabled and device == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "9")
    with pytest.raises(DistributedError, match="RANK=9, WORLD_SIZE=8"):
        distributed.env_from_environ()
    with pytest.raises(DistributedError, match="SyncBatchNorm does not run on the CPU"):
        distributed.convert_sync_bn(torch.nn.BatchNorm2d(4), DistEnv(0, 0, 2), torch.device("cpu"))
    with pytest.raises(DistributedError, match="use device=cuda or device=auto"):
        distributed.rank_device(torch.device("cuda", 1), DistEnv(0, 0, 2))


def _torchrun_failing(
    cmd_tail: list[str], fault: str | None, timeout: int = 240
) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    if fault:
        env["AUGKD_FAULT"] = fault
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *cmd_tail]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    return out, time.monotonic() - t0


def test_a_failing_rank_ends_the_run_with_its_one_line_error_shown_once(tmp_path, tiny_overrides):
    """AUGKD_FAULT on rank 1 only: the run ends (not at the 30-minute collective timeout) and the failing rank's
    one-line error is printed once; the other rank prints nothing of its own."""
    args = ["-m", "augkd", "train", "-q", *_overrides(tiny_overrides, tmp_path, "epochs=2")]
    out, _ = _torchrun_failing(args, "nan_loss_at_step:2@1")
    assert out.returncode != 0
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "augkd train: error:" in line]
    assert len(lines) == 1 and "epoch 1, step 2: the training loss is nan" in lines[0], out.stderr[-3000:]
    assert "[rank0]" not in out.stderr and "[rank1]" not in out.stderr  # no traceback of a rank


WATCHDOG = """
import time, torch, torch.distributed as dist
from augkd.train import distributed
env, _ = distributed.init(torch.device("cpu"))
if env.rank == 1:  # fails, tells the others, and then never exits (as a rank stuck tearing down NCCL)
    distributed.report_failure(RuntimeError("rank 1 broke"))
    time.sleep(600)
else:  # blocked in a collective that rank 1 never joins: only the watchdog can end it
    dist.barrier()
    print("barrier returned", flush=True)
"""


def test_the_watchdog_ends_a_rank_blocked_in_a_collective_within_seconds(tmp_path):
    script = tmp_path / "watchdog.py"
    script.write_text(WATCHDOG)
    out, seconds = _torchrun_failing([str(script)], None)
    assert out.returncode != 0 and "barrier returned" not in out.stdout
    # Start-up of two processes plus one watch interval and the grace period; nowhere near the 30-minute timeout
    # or rank 1's 600-second sleep.
    assert seconds < 120, seconds
    assert "exitcode  : 1" in out.stderr  # rank 0 ended by its watchdog (PEER_FAILED_EXIT)


def test_mixup_cutmix_kd_and_agreement_in_two_processes_equal_one(runs, tiny_overrides):
    """Partners are drawn by sample id, so each rank mixes its shard as the single process does; the agreement
    figures are summed over the shards."""
    root, teacher = runs["root"], runs["root"] / "single" / "tiny" / "best.pt"
    extra = ("epochs=1", "augment.mixup=0.8", "augment.cutmix=1.0", f"kd.teacher={teacher}")
    train(load_config(TrainConfig, None, _overrides(tiny_overrides, root / "mix1", *extra)), quiet=True)
    _torchrun(_overrides(tiny_overrides, root / "mix2", *extra))
    single = load_checkpoint(root / "mix1" / "tiny" / "last.pt")
    ddp = load_checkpoint(root / "mix2" / "tiny" / "last.pt")
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=0, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
    a, b = single["history"][-1], ddp["history"][-1]
    for key in ("train_loss", "train_kd_loss", "train_teacher_kl", "test_teacher_kl"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key
    for key in ("train_top1", "train_agree_top1", "test_agree_top1", "test_agree_top5"):
        assert b[key] == pytest.approx(a[key], abs=1e-9), key
