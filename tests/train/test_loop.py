"""augkd.train.loop: a real tiny run on CIFAR-10 JPEGs, run-folder contents, exact resume."""

from __future__ import annotations

import json
import os

import pytest
import torch

from augkd.checkpoint import load_checkpoint
from augkd.config import load_config
from augkd.train.config import TrainConfig
from augkd.train.loop import EvalMemo, RunError, evaluate, setup_run, train


@pytest.fixture
def tiny_config(tiny_overrides):
    def make(out_dir, *extra: str) -> TrainConfig:
        base = ("epochs=2", "optim.schedule=cosine", "optim.warmup_epochs=0.5")
        return load_config(TrainConfig, None, tiny_overrides(out_dir, *base, *extra))

    return make


def test_tiny_run_writes_a_complete_run_folder(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, "ema.enabled=true", "ema.decay=0.9")
    summary = train(cfg, quiet=True)
    run = tmp_path / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["step"] == 2 * (200 // 50)
    for key in ("train_loss", "train_task_loss", "test_top1", "test_top5", "test_loss", "ema_top1", "lr"):
        assert key in rows[-1]
    assert 0.0 <= rows[-1]["test_top1"] <= rows[-1]["test_top5"] <= 100.0
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step")
    assert json.loads((run / "summary.json").read_text())["final_top1"] == pytest.approx(rows[-1]["test_top1"])
    assert summary["eval_images"] == 100 and summary["train_images"] == 200
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["config"]["model"]["name"] == "fastnet9"
    best = load_checkpoint(run / "best.pt")
    assert best["best_top1"] == pytest.approx(max(max(r["test_top1"], r["ema_top1"]) for r in rows))
    assert "config.yaml" in {p.name for p in run.iterdir()}


def test_resume_equals_uninterrupted(tmp_path, monkeypatch, tiny_config):
    from augkd.train import loop

    full = tiny_config(tmp_path / "a", "model.drop_rate=0.2")
    train(full, quiet=True)

    # The same run, killed after its first epoch, then resumed.
    original = loop.train_one_epoch
    calls = {"n": 0}

    def stop_after_one(run, epoch, progress=True):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(run, epoch, progress)

    cut = tiny_config(tmp_path / "b", "model.drop_rate=0.2")
    monkeypatch.setattr(loop, "train_one_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(cut, quiet=True)
    monkeypatch.setattr(loop, "train_one_epoch", original)
    assert load_checkpoint(tmp_path / "b" / "tiny" / "last.pt")["epoch"] == 1
    train(cut, resume=True, quiet=True)

    a = load_checkpoint(tmp_path / "a" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "tiny" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert [r["test_top1"] for r in a["history"]] == [r["test_top1"] for r in b["history"]]


def test_existing_run_folder_is_not_clobbered(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, "epochs=1")
    train(cfg, quiet=True)
    with pytest.raises(RunError, match="already holds a run"):
        train(cfg, quiet=True)
    with pytest.raises(RunError, match="no checkpoint"):
        train(tiny_config(tmp_path, "name=other"), resume=True, quiet=True)


def test_policy_plugs_into_training_and_replays(tmp_path, tiny_config):
    from augkd.train.loop import setup_run

    cfg = tiny_config(tmp_path, "augment.policy=geo-n2-m5", "epochs=1")
    run = setup_run(cfg, quiet=True)
    run.train_loader.set_epoch(0)
    batch = next(iter(run.train_loader))
    based = run.augment.base(batch.images, batch.indices, 0)
    augmented = run.augment(batch.images, batch.indices, 0)
    assert augmented.dtype == torch.uint8 and augmented.shape == batch.images.shape
    changed = (augmented != based).flatten(1).any(1).float().mean().item()
    assert changed > 0.9  # two geometric ops at M=5 move almost every image
    # the same samples in another order get the same augmentation
    perm = torch.randperm(len(batch.indices))
    again = run.augment(batch.images[perm], batch.indices[perm], 0)
    assert torch.equal(again, augmented[perm])
    assert not torch.equal(run.augment(batch.images, batch.indices, 1), augmented)  # a new epoch, new draws
    summary = train(cfg, quiet=True, overwrite=True)
    assert summary["policy"] == "geo-n2-m5" and summary["final_top1"] is not None


def test_policy_off_for_the_last_epochs_equals_no_policy(tmp_path, tiny_config):
    """augment.off_last_epochs: the switched-off epochs see exactly the base augmentation (paper §3.4)."""
    plain = train(tiny_config(tmp_path / "a", "epochs=1"), quiet=True)
    off = train(tiny_config(tmp_path / "b", "epochs=1", "augment.policy=geo-n2-m10", "augment.off_last_epochs=1"))
    assert off["policy"] == "geo-n2-m10" and off["off_last_epochs"] == 1
    rows = [json.loads((tmp_path / d / "tiny" / "metrics.jsonl").read_text()) for d in ("a", "b")]
    assert rows[0]["train_loss"] == rows[1]["train_loss"]
    assert plain["final_top1"] == off["final_top1"]


def test_magnitude_key_sets_the_policy_magnitude(tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, "augment.policy=ra-n2-m9", "augment.magnitude=3")
    assert cfg.augment.spec() == "ra-n2-m3"
    for extra, message in [
        (("augment.policy=aa-cifar10", "augment.magnitude=3"), "has no magnitude"),
        (("augment.policy=geo-n2-m4", "augment.magnitude=11"), "m must be in"),
        (("augment.off_last_epochs=3",), "more than the 2 epochs"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_config(tmp_path, *extra)


def test_cutout_runs_after_the_policy(tmp_path, tiny_config):
    from augkd.augment.base import Cutout
    from augkd.train.loop import setup_run

    run = setup_run(tiny_config(tmp_path, "augment.cutout=8", "augment.fill=255"), quiet=True)
    assert isinstance(run.augment.post, Cutout) and run.augment.post.size == 8
    images = torch.zeros(16, 3, 32, 32, dtype=torch.uint8)
    out = run.augment(images, torch.arange(16), 0)
    # Every image keeps a blank square of at most 8x8 (clipped at the border) after crop and flip.
    blanked = (out[:, 0] == 255).flatten(1).sum(1)
    assert bool((blanked > 0).all() and (blanked <= 64).all())


def _stop_after(monkeypatch, epochs: int) -> None:
    """Make train() raise KeyboardInterrupt once ``epochs`` epochs have finished (and been checkpointed)."""
    from augkd.train import loop

    original = loop.train_one_epoch

    def stop(run, epoch, progress=True):
        if epoch == epochs:
            raise KeyboardInterrupt
        return original(run, epoch, progress)

    monkeypatch.setattr(loop, "train_one_epoch", stop)


def test_resume_from_a_corrupt_last_checkpoint_falls_back_and_stays_exact(tmp_path, monkeypatch, capsys, tiny_config):
    full = tiny_config(tmp_path / "a", "epochs=3", "model.drop_rate=0.2")
    train(full, quiet=True)
    cut = tiny_config(tmp_path / "b", "epochs=3", "model.drop_rate=0.2")
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            train(cut, quiet=True)
    run = tmp_path / "b" / "tiny"
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "ckpt_epoch0001.pt", "ckpt_epoch0002.pt", "last.pt"]
    with open(run / "last.pt", "r+b") as f:  # a bit flipped on disk: last.pt and its hard link ckpt_epoch0002.pt
        f.seek(f.seek(0, 2) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x10]))
    capsys.readouterr()
    train(cut, resume=True, quiet=True)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2 and all(w.startswith("augkd: warning: ") for w in warnings)
    assert "last.pt" in warnings[0] and warnings[-1].endswith("resuming from ckpt_epoch0001.pt instead")
    a, b = load_checkpoint(tmp_path / "a" / "tiny" / "last.pt"), load_checkpoint(run / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "ckpt_epoch0002.pt", "ckpt_epoch0003.pt", "last.pt"]


def test_full_disk_at_start_stops_before_training(tmp_path, monkeypatch, tiny_config):
    import shutil
    from collections import namedtuple

    from augkd.checkpoint import CheckpointError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(2**30, 2**30 - 2**16, 2**16))
    with pytest.raises(CheckpointError, match=r"not enough free space for checkpoints in .*tiny: 0\.1 MiB free"):
        train(tiny_config(tmp_path, "epochs=1"), quiet=True)
    assert not (tmp_path / "tiny" / "metrics.jsonl").exists()


def _fail_replace_of(monkeypatch, name: str, nth: int, code: int) -> None:
    """os.replace onto a file called ``name`` fails with ``code`` from its ``nth`` call on (a disk that fills up)."""
    import os

    original, calls = os.replace, {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(dst) == name:
            calls["n"] += 1
            if calls["n"] >= nth:
                raise OSError(code, os.strerror(code))
        return original(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("name", ["last.pt", "metrics.jsonl"])
def test_disk_full_mid_run_is_one_line_and_keeps_the_previous_files(
    tmp_path, monkeypatch, capsys, tiny_overrides, name
):
    import errno

    from augkd.cli import main

    _fail_replace_of(monkeypatch, name, 2, errno.ENOSPC)  # epoch 1's write succeeds, epoch 2's does not
    assert main(["train", "-q", *tiny_overrides(tmp_path, "epochs=2")]) == 2
    err = capsys.readouterr().err.strip()
    run = tmp_path / "tiny"
    assert err.count("\n") == 0 and err.startswith("augkd train: error: cannot write ")
    assert f"{run / name}: No space left on device" in err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) in (1, 2)  # written before last.pt each epoch
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert main(["train", "-q", "--resume", *tiny_overrides(tmp_path, "epochs=2")]) == 0  # space again: resume
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_read_only_output_folder_is_one_line(tmp_path, monkeypatch, capsys, tiny_overrides):
    import errno
    import tempfile

    from augkd.cli import main

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    (tmp_path / "file").write_text("x")
    assert main(["train", "-q", *tiny_overrides(tmp_path / "file")]) == 2  # out_dir is a file: a real failure
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"run folder {tmp_path / 'file' / 'tiny'} is not writable: Not a directory")
    )
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["train", "-q", *tiny_overrides(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"augkd train: error: run folder {tmp_path / 'tiny'} is not writable: Read-only file system"


def test_skipped_images_are_reported_in_the_run_folder(tmp_path, bad_tree, tiny_config):
    root, bad = bad_tree
    cfg = tiny_config(
        tmp_path,
        f"data.root={root}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.bad_files=skip",
        "epochs=1",
        "batch_size=8",
        "data.subset_per_class=0",
        "data.test_subset_per_class=0",
    )
    lines: list[str] = []
    train(cfg, quiet=True, log=lines.append)
    report = (tmp_path / "tiny" / "bad_files.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in report] == [str(root / "train" / b) for b in bad]
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in report)  # path, reason
    first_path, first_reason = report[0].split("\t")
    assert lines == [
        f"augkd train: left out {len(bad)} unreadable image(s) (data.bad_files=skip), e.g. {first_path} "
        f"({first_reason}); all in {tmp_path / 'tiny' / 'bad_files.txt'}"
    ]


def test_overwrite_removes_the_old_run_before_training(tmp_path, monkeypatch, tiny_config):
    """--overwrite starts over for real: if the new run dies early, --resume cannot pick up the old one."""
    train(tiny_config(tmp_path, "epochs=1"), quiet=True)
    run = tmp_path / "tiny"
    assert (run / "last.pt").is_file() and (run / "summary.json").is_file()
    with monkeypatch.context() as m:
        _stop_after(m, 0)
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tmp_path, "epochs=1"), quiet=True, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [".augkd.lock", "config.yaml"]


def test_busy_cpu_note(monkeypatch):
    from augkd.train.loop import busy_cpu_note as _busy_cpu_note

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 3.0, 3.0))
    assert _busy_cpu_note(0) == (
        "augkd: note: the CPU is busy (load average 3.5 on 2 cores); threads=1 is often faster on a shared CPU "
        "(results/shared-cpu/README.md)"
    )
    assert _busy_cpu_note(1) is None  # the user chose
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 3.0, 3.0))
    assert _busy_cpu_note(0) is None


def test_a_large_drop_last_remainder_is_noted(capsys, tmp_path, tiny_overrides):
    from augkd.train.loop import setup_run

    cfg = load_config(TrainConfig, None, tiny_overrides(tmp_path, "batch_size=90", "threads=1"))
    setup_run(cfg, quiet=False, overwrite=True)
    err = capsys.readouterr().err
    assert "200 training images make 2 full batches of 90; each epoch leaves out 20 of them" in err
    setup_run(load_config(TrainConfig, None, tiny_overrides(tmp_path, "batch_size=50", "threads=1")), quiet=False)
    assert "leaves out" not in capsys.readouterr().err


def test_an_empty_batch_is_a_step_that_changes_nothing_but_the_step(tmp_path, tiny_config):
    """Under DDP a rank whose share of a batch was all unreadable files gets an empty batch: it must still take
    the step (zero loss, so its gradient adds nothing) and leave the epoch's figures to the real images."""
    from augkd.data.loader import Batch
    from augkd.train.loop import setup_run, train_one_epoch

    run = setup_run(tiny_config(tmp_path, "epochs=1", "optim.weight_decay=0", "optim.momentum=0"), quiet=True)
    real = run.train_loader
    first = next(iter(real))
    empty = Batch(first.images[:0], first.labels[:0], first.indices[:0])

    class WithEmpty:
        dataset = real.dataset

        def __len__(self):
            return 1

        def set_epoch(self, epoch):
            real.set_epoch(epoch)

        def __iter__(self):
            yield empty

    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.train_loader = WithEmpty()
    with pytest.raises(RunError, match="every step had a non-finite loss"):  # no image seen at all this epoch
        train_one_epoch(run, 0, progress=False)
    assert run.step == 1
    for key, value in run.model.state_dict().items():  # zero gradient, no decay, BatchNorm statistics untouched
        assert torch.equal(value, before[key]), key


def _interrupted_then_resumed(monkeypatch, cfg) -> None:
    """Train ``cfg``, stopped after its first epoch, then resumed to the end."""
    from augkd.train import loop

    original = loop.train_one_epoch

    def stop_after_one(run, epoch, progress=True):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(run, epoch, progress)

    monkeypatch.setattr(loop, "train_one_epoch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, quiet=True)
    monkeypatch.setattr(loop, "train_one_epoch", original)
    train(cfg, resume=True, quiet=True)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_overrides):
    out = tmp_path_factory.mktemp("teacher")
    train(load_config(TrainConfig, None, tiny_overrides(out, "model.kwargs.width=12")), quiet=True)
    return out / "tiny" / "best.pt"


def test_mixup_cutmix_with_kd_trains_resumes_exactly_and_logs_agreement(tmp_path, monkeypatch, tiny_config, teacher):
    mix = ("augment.policy=ra-n2-m9", "augment.mixup=0.8", "augment.cutmix=1.0", f"kd.teacher={teacher}")
    train(tiny_config(tmp_path / "a", *mix), quiet=True)
    _interrupted_then_resumed(monkeypatch, tiny_config(tmp_path / "b", *mix))
    a = load_checkpoint(tmp_path / "a" / "tiny" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "tiny" / "last.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    rows = [json.loads(line) for line in (tmp_path / "a" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    for split in ("train", "test"):
        assert 0 <= rows[-1][f"{split}_agree_top1"] <= rows[-1][f"{split}_agree_top5"] <= 100
        assert rows[-1][f"{split}_teacher_kl"] >= 0
    summary = json.loads((tmp_path / "a" / "tiny" / "summary.json").read_text())
    assert summary["mix"]["cutmix"] == 1.0 and summary["final_agree_top1"] == rows[-1]["test_agree_top1"]


@pytest.mark.parametrize("flip", [False, True])
def test_the_teachers_test_logits_are_computed_once_per_run(tmp_path, tiny_config, teacher, flip):
    run = setup_run(tiny_config(tmp_path, f"kd.teacher={teacher}", "eval_batch_size=30"), quiet=True)
    calls = []
    run.reference.register_forward_hook(lambda *_: calls.append(1))
    args = (run.model, run.eval_loader, run.normalize, run.amp_dtype, flip)
    plain = evaluate(*args, reference=run.reference)
    per_pass = len(calls)
    assert per_pass == len(run.eval_loader) * (2 if flip else 1)
    memo = EvalMemo()
    first = evaluate(*args, reference=run.reference, memo=memo)
    calls.clear()
    second = evaluate(*args, reference=run.reference, memo=memo)
    assert not calls and plain == first == second  # no teacher pass the second time, the same figures
    small = EvalMemo(budget=memo.used - 1)  # too small for the whole set: dropped, and every pass computes again
    assert evaluate(*args, reference=run.reference, memo=small) == plain and small.full and not small.used
    calls.clear()
    assert evaluate(*args, reference=run.reference, memo=small) == plain and len(calls) == per_pass


def test_a_run_without_kd_measures_agreement_with_eval_reference(
    tmp_path, tiny_config, teacher, capsys, tiny_overrides
):
    from augkd.cli import main

    train(tiny_config(tmp_path, f"eval.reference={teacher}", "epochs=1"), quiet=True)
    row = json.loads((tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_agree_top1" not in row and 0 <= row["test_agree_top1"] <= 100 and row["test_teacher_kl"] > 0
    assert main(["train", "-q", *tiny_overrides(tmp_path, "name=x", f"eval.reference={tmp_path / 'nope.pt'}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("augkd train: error: eval.reference: ")


def test_tensorboard_continues_a_resumed_run_without_duplicate_steps(tmp_path, monkeypatch, tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path, "log.tensorboard=true", "log.every_steps=1")
    monkeypatch.setenv("AUGKD_FAULT", "raise_at_step:7")  # in epoch 2 (4 steps an epoch), after 5 and 6 were logged
    with pytest.raises(RuntimeError, match="injected raise_at_step:7"):
        train(cfg, quiet=True)
    monkeypatch.delenv("AUGKD_FAULT")
    train(cfg, resume=True, quiet=True)
    events = EventAccumulator(str(tmp_path / "tiny" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("epoch/test_top1")] == [4, 8]
    rows = [json.loads(line) for line in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("epoch/train_loss")] == pytest.approx([r["train_loss"] for r in rows])
    assert {"train/lr", "train/images_per_s"} <= set(events.Tags()["scalars"])
    # The resumed stream starts with TensorBoard's purge marker at the first step it retakes (5: after epoch 1),
    # so any reader drops what the interrupted epoch wrote, not only one that purges steps going backwards.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    files = sorted((tmp_path / "tiny" / "tensorboard").glob("events.out.tfevents.*"))
    starts = [e.step for f in files for e in EventFileLoader(str(f)).Load() if e.session_log.status == SessionLog.START]
    assert len(files) == 2 and starts == [5]


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch, capsys, tiny_overrides):
    import sys

    from augkd.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what a missing package looks like
    assert main(["train", "-q", *tiny_overrides(tmp_path, "log.tensorboard=true")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "augkd train: error: log.tensorboard=true needs the tensorboard package: pip install 'augkd[tensorboard]'"
    )


def test_resume_refuses_a_config_that_changes_the_finished_epochs(tmp_path, monkeypatch, tiny_config):
    """Family 2 of the robustness issue: --resume compares the saved config, whatever the key."""
    from augkd.train import loop

    _stop_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path), quiet=True)
    monkeypatch.undo()
    saved = (tmp_path / "tiny" / "config.yaml").read_text()
    for change in ("optim.lr=0.3", "seed=5", "augment.policy=geo-n2-m3", "data.subset_per_class=10", "kd.k=5"):
        with pytest.raises(RunError, match=r"cannot resume .*changes what its finished epochs") as err:
            train(tiny_config(tmp_path, change), resume=True, quiet=True)
        assert change.split("=")[0] in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "tiny" / "config.yaml").read_text() == saved  # nothing was overwritten
    # Even with config.yaml gone, the checkpoint's own config is compared.
    (tmp_path / "tiny" / "config.yaml").unlink()
    with pytest.raises(RunError, match=r"optim\.lr 0\.\d+ -> 0\.3"):
        train(tiny_config(tmp_path, "optim.lr=0.3"), resume=True, quiet=True)
    assert loop.CONFIG_HISTORY == "config_history.jsonl"


def test_resume_may_change_the_future_and_records_it(tmp_path, monkeypatch, tiny_config):
    _stop_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path), quiet=True)
    monkeypatch.undo()
    train(tiny_config(tmp_path, "epochs=3", "eval_every=2", "threads=1"), resume=True, quiet=True)
    run = tmp_path / "tiny"
    history = [json.loads(line) for line in (run / "config_history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["resumed_after_epoch"] == 1
    assert history[0]["changes"]["epochs"] == [2, 3] and history[0]["changes"]["eval_every"] == [1, 2]
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


def test_resume_records_a_precision_that_resolves_otherwise(tmp_path, monkeypatch, tiny_config, capsys):
    """amp=auto is float32 on a CPU without native bf16 and bf16 on one with it: a run resumed on the other
    machine keeps its text config but not its precision, and must say so."""
    from augkd.train import build

    monkeypatch.setattr(build, "_cpu_has_bf16", lambda: False)
    _stop_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path, "amp=auto"), quiet=True)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "tiny" / "last.pt")["precision"] == "cpu float32"
    monkeypatch.setattr(build, "_cpu_has_bf16", lambda: True)
    train(tiny_config(tmp_path, "amp=auto"), resume=True, quiet=True)
    history = [json.loads(line) for line in (tmp_path / "tiny" / "config_history.jsonl").read_text().splitlines()]
    assert history[0]["changes"] == {"precision (resolved)": ["cpu float32", "cpu bfloat16"]}
    assert "last.pt trained in cpu float32, the epochs to come train in cpu bfloat16" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "tiny" / "last.pt")["precision"] == "cpu bfloat16"


def test_resume_refuses_data_with_other_class_names(tmp_path, monkeypatch, tiny_config):
    """The same number of classes under other names is other data (a checkpoint made on another dataset)."""
    from augkd.checkpoint import save_checkpoint

    _stop_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path), quiet=True)
    monkeypatch.undo()
    last = tmp_path / "tiny" / "last.pt"
    state = load_checkpoint(last)
    state["classes"] = [*state["classes"][:-1], "lorry"]
    save_checkpoint(last, state)
    with pytest.raises(
        RunError, match=r"other classes than the data has \(10 vs 10; label 9 is 'lorry' there and 'truck' here\)"
    ):
        train(tiny_config(tmp_path), resume=True, quiet=True)
