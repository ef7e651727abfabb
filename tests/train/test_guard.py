"""augkd.train.guard: a NaN or infinite loss stops the run (last checkpoint intact) or skips the step."""

from __future__ import annotations

import json
import re

import pytest
import torch

from augkd.checkpoint import load_checkpoint
from augkd.config import load_config
from augkd.train.config import TrainConfig
from augkd.train.guard import NonFiniteError, NonFiniteGuard
from augkd.train.loop import train

NAN, INF, ONE = torch.tensor(float("nan")), torch.tensor(float("inf")), torch.tensor(1.0)
CPU = torch.device("cpu")


def test_error_mode_names_epoch_and_step():
    guard = NonFiniteGuard("error", 3, CPU)
    assert guard.step_ok(ONE, epoch=1, step=4)
    with pytest.raises(NonFiniteError, match=r"^epoch 2, step 6: the training loss is inf; .*last checkpoint"):
        guard.step_ok(INF, epoch=1, step=5)


def test_skip_mode_counts_and_gives_up_after_patience():
    guard = NonFiniteGuard("skip", 3, CPU)
    assert [guard.step_ok(x, 0, i) for i, x in enumerate([NAN, ONE, NAN, NAN, ONE])] == [
        False,
        True,
        False,
        False,
        True,
    ]
    assert guard.skipped == 3
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 8: .*not finite for 3 steps in a row"):
        for i in range(5, 8):
            guard.step_ok(NAN, 0, i)


def test_deferred_check_reports_the_first_bad_step():
    guard = NonFiniteGuard("error", 3, CPU)
    guard.lazy = True  # the GPU path: flags on the device, read back every CUDA_CHECK_EVERY steps
    assert guard.step_ok(ONE, 0, 0) and guard.step_ok(NAN, 0, 1) and guard.step_ok(INF, 0, 2)
    with pytest.raises(NonFiniteError, match=r"^epoch 1, step 2: the training loss is not finite"):
        guard.check()
    with pytest.raises(ValueError, match="optim.nonfinite must be error or skip"):
        NonFiniteGuard("ignore", 3, CPU)


@pytest.fixture
def tiny_config(tiny_overrides):
    def make(out_dir, *extra: str) -> TrainConfig:
        return load_config(TrainConfig, None, tiny_overrides(out_dir, "epochs=2", *extra))

    return make


def _finite(state: dict) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


def test_nan_stops_the_run_and_the_last_checkpoint_survives(tmp_path, tiny_config, monkeypatch):
    run = tmp_path / "tiny"
    monkeypatch.setenv("AUGKD_FAULT", "nan_loss_at_step:6")  # epoch 2 (4 steps an epoch)
    with pytest.raises(NonFiniteError, match=r"^epoch 2, step 6: the training loss is nan"):
        train(tiny_config(tmp_path), quiet=True)
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 1 and last["step"] == 4 and _finite(last)
    assert (run / "last.pt").samefile(run / "ckpt_epoch0001.pt")  # untouched since epoch 1
    hidden = sorted(p.name for p in run.iterdir() if p.name.startswith("."))
    assert hidden == [".augkd.lock"]  # the run folder's lock (augkd.lock), and no temp files
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1

    # The same run resumed with optim.nonfinite=skip: the poisoned step is left out and counted.
    train(tiny_config(tmp_path, "optim.nonfinite=skip"), resume=True, quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["nonfinite_skipped"] == 1 and rows[1]["step"] == 8
    assert _finite(load_checkpoint(run / "last.pt"))


def test_a_real_divergence_is_caught_and_never_saved(tmp_path, tiny_config):
    # lr 0.05 in epoch 1, 5e6 from epoch 2 on: the weights blow up in epoch 2.
    cfg = tiny_config(tmp_path, "optim.schedule=step", "optim.milestones=[1]", "optim.gamma=1e8")
    with pytest.raises(NonFiniteError) as info:
        train(cfg, quiet=True)
    # BatchNorm statistics may overflow while the loss stays finite; either check stops the run in epoch 2.
    assert re.match(r"epoch 2(, step \d+: the training loss is|: the model holds non-finite)", str(info.value))
    assert load_checkpoint(tmp_path / "tiny" / "last.pt")["epoch"] == 1
    for path in (tmp_path / "tiny").glob("*.pt"):
        assert _finite(load_checkpoint(path)), path


def test_non_finite_weights_are_caught():
    from augkd.train.guard import check_finite_state

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    check_finite_state({"model": model, "ema": None}, 0)
    model[1].running_var.fill_(float("inf"))
    with pytest.raises(
        NonFiniteError, match=r"^epoch 3: the model holds non-finite values after training \(1\.running_var\)"
    ):
        check_finite_state({"model": model}, 2)
