"""The ImageNet-style pipeline on the shared Imagewoof photos: stream loader, EfficientNet recipe, KD, eval size.

The recipe pieces are checked one by one (RMSpropTF's update, BN momentum, drop-connect, exact resume with the
stream loader), then one tiny end-to-end run: a narrow teacher, EfficientNet-B0 distilled from it with
RandAugment on worker-decoded JPEGs, and ``augkd eval`` of its checkpoint at another resolution.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from timm.optim import RMSpropTF
from torch import nn

from augkd.checkpoint import load_checkpoint
from augkd.cli import main
from augkd.config import load_config
from augkd.data.stream import StreamLoader
from augkd.models.build import build_model
from augkd.train.config import TrainConfig
from augkd.train.loop import setup_run, train
from augkd.train.optim import build_optimizer


def _config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, list(overrides))


def test_rmsproptf_is_tensorflows_rmsprop_with_the_configured_hyperparameters():
    cfg = _config(
        "optim.name=rmsproptf", "optim.lr=0.016", "optim.momentum=0.9", "optim.weight_decay=1e-5", "optim.alpha=0.9"
    )
    assert cfg.optim.eps == 1e-3  # EfficientNet's epsilon is the default
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, RMSpropTF)
    decay, no_decay = opt.param_groups
    assert [(g["lr"], g["alpha"], g["eps"], g["momentum"]) for g in opt.param_groups] == [(0.016, 0.9, 1e-3, 0.9)] * 2
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2, 4} and {p.ndim for p in no_decay["params"]} == {1}
    # One step by TensorFlow's rule: mean square starts at 1, epsilon inside the square root, L2 decay in the
    # gradient, lr inside the momentum buffer. torch's RMSprop (eps outside, mean square from 0) moves 10x further.
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(2, 3, 8, 8)).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads):
        wd = 1e-5 if p.ndim > 1 else 0.0
        g = g + wd * p0
        want = p0 - 0.016 * g / torch.sqrt(0.9 + 0.1 * g * g + 1e-3)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7)
    assert isinstance(build_optimizer(_config(), model), torch.optim.SGD)  # the default stays SGD
    with pytest.raises(ValueError, match="optim.name must be one of sgd, rmsproptf"):
        _config("optim.name=adam")


def test_bn_momentum_and_drop_connect_reach_every_layer():
    plain = build_model(_config("model.name=efficientnet_b0").model, 10)
    bns = [m for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 49 and {m.momentum for m in bns} == {0.1}  # timm's default: torch's 0.1
    drop = [m.drop_prob for m in plain.modules() if type(m).__name__ == "DropPath"]
    assert max(drop) == pytest.approx(0.2 * 15 / 16)  # the paper's drop-connect 0.2, scaled by depth in timm
    tuned = build_model(
        _config("model.name=efficientnet_b0", "model.bn_momentum=0.01", "model.drop_path_rate=0.1").model, 10
    )
    assert {m.momentum for m in tuned.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)} == {0.01}
    assert max(m.drop_prob for m in tuned.modules() if type(m).__name__ == "DropPath") == pytest.approx(0.1 * 15 / 16)
    assert tuned.drop_rate == 0.2  # B0's dropout default is kept
    with pytest.raises(ValueError, match="do not fit model 'fastnet9'"):
        build_model(_config("model.drop_path_rate=0.1").model, 10)
    with pytest.raises(ValueError, match=r"model.bn_momentum must be in \(0, 0.5\] .*0.99 is 0.01"):
        _config("model.bn_momentum=0.99")


def test_stream_run_resumes_exactly_with_rmsproptf_and_ema(tmp_path, make_tree, monkeypatch):
    from augkd.train import loop

    root = make_tree(("train", "val"), per_class=4)
    overrides = (
        "epochs=2",
        "batch_size=4",
        "amp=off",
        "model.kwargs.width=8",
        "model.drop_rate=0.2",
        f"data.root={root}",
        "data.loader=stream",
        "data.workers=1",
        "data.base_aug=rrc-flip",
        "augment.policy=ra-n2-m9",
        "optim.name=rmsproptf",
        "optim.lr=0.01",
        "optim.schedule=exponential",
        "optim.decay_epochs=0.5",
        "ema.enabled=true",
        "ema.decay=0.5",
    )
    train(_config(f"out_dir={tmp_path / 'a'}", *overrides), quiet=True)
    original = loop.train_one_epoch

    def stop_after_one(run, epoch, progress=True):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(run, epoch, progress)

    cut = _config(f"out_dir={tmp_path / 'b'}", *overrides)
    monkeypatch.setattr(loop, "train_one_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(cut, quiet=True)
    monkeypatch.setattr(loop, "train_one_epoch", original)
    train(cut, resume=True, quiet=True)
    a, b = (load_checkpoint(tmp_path / x / "run" / "last.pt") for x in "ab")
    for part in ("model", "ema"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert a["history"][-1]["lr"] == pytest.approx(0.01 * 0.97**2)  # 3 steps an epoch: x0.97 every 2 steps
    assert a["optimizer"]["param_groups"][0]["alpha"] == 0.9  # RMSpropTF's state went through weights_only


def test_imagewoof_efficientnet_b0_with_kd_end_to_end(tmp_path, woof_zip, cache_dir, capsys):
    data = (f"data.root={woof_zip}", f"data.cache_dir={cache_dir}", "data.test_subset_per_class=2")
    common = ("epochs=1", "amp=off", "eval_batch_size=20", "data.image_size=64", *data)
    # (1) a narrow teacher, decoded into memory (the teacher's loader does not matter to the student)
    teacher_cfg = _config(
        f"out_dir={tmp_path}", "name=teacher", "batch_size=20", "model.kwargs.width=8", "data.subset_per_class=4",
        *common,
    )  # fmt: skip
    train(teacher_cfg, quiet=True)
    teacher = tmp_path / "teacher" / "best.pt"
    # (2) EfficientNet-B0 on worker-decoded JPEGs: RRC+flip at 64 px in 2 workers, RandAugment on the device, KD
    # from the teacher with the paper's B0 values, RMSpropTF, the exponential schedule, EMA, BN momentum 0.01.
    student_cfg = _config(
        f"out_dir={tmp_path}", "name=student", "batch_size=8", "model.name=efficientnet_b0", "model.bn_momentum=0.01",
        "data.loader=stream", "data.workers=2", "data.base_aug=rrc-flip", "data.subset_per_class=3",
        "data.eval_size=80", "augment.policy=ra-n2-m9", f"kd.teacher={teacher}", "kd.preset=imagenet-b0",
        "optim.name=rmsproptf", "optim.lr=0.002", "optim.momentum=0.9", "optim.weight_decay=1e-5",
        "optim.schedule=exponential", "optim.warmup_epochs=0.5", "ema.enabled=true", "ema.decay=0.9", *common,
    )  # fmt: skip
    run = setup_run(student_cfg)
    assert isinstance(run.train_loader, StreamLoader) and isinstance(run.optimizer, RMSpropTF)
    assert type(run.augment.base).__name__ == "Identity"  # the workers did the crop and flip
    del run
    summary = train(student_cfg, quiet=True)
    assert summary["kd"]["k"] == 5 and summary["train_images"] == 30 and summary["eval_images"] == 20
    out = tmp_path / "student"
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 3 and all(math.isfinite(row[k]) for k in ("train_kd_loss", "test_loss", "ema_loss"))
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")  # weights_only loads
    assert last["config"]["data"]["loader"] == "stream" and "ema" in last and "state" in last["optimizer"]
    assert set(best["model"]) == set(last["model"])
    # The EMA averages timm's BatchNorm statistics too (TF's EMA covers the moving statistics): after 3 steps they
    # differ from the raw model's and from their initial value, and stay finite.
    ema_var = last["ema"]["module.bn1.running_var"]
    assert int(last["ema"]["n_averaged"]) == 3 and torch.isfinite(ema_var).all()
    assert not torch.equal(ema_var, last["model"]["bn1.running_var"]) and not torch.equal(ema_var, torch.ones(32))
    # (3) the checkpoint evaluated at another resolution, through the CLI
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "data.eval_size=96", "data.workers=0", "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["eval_size"] == 96 and res["n"] == 20
    assert all(math.isfinite(res[k]) for k in ("top1", "top5", "loss"))
