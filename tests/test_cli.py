"""augkd.cli: every command is reachable, bad input is a one-line error with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from augkd.cli import build_parser, main

COMMANDS = ("train", "eval", "plan", "models", "data", "config", "gallery", "bench")


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(COMMANDS) <= set(sub.choices)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "augkd", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("augkd ")


def test_models_lists_paper_networks_with_counts(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("wrn_28_10", "shake_shake_26_2x96d", "pyramidnet_272_a200_shakedrop", "efficientnet_b0", "fastnet9"):
        assert name in rows
    assert 36.0e6 < rows["wrn_28_10"]["params"] < 37.0e6


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    return err


def test_config_typo_is_one_line(capsys):
    err = _error(capsys, ["train", "optim.lrr=0.1"])
    assert "unknown config key 'optim.lrr'" in err and "optim.lr" in err


def test_unknown_model_is_one_line(capsys, tmp_path):
    err = _error(capsys, ["train", f"out_dir={tmp_path}", "model.name=resnet_9000"])
    assert "unknown model 'resnet_9000'" in err


def test_missing_dataset_folder_is_one_line(capsys, tmp_path):
    err = _error(capsys, ["train", f"out_dir={tmp_path}", f"data.root={tmp_path / 'nowhere'}"])
    assert str(tmp_path / "nowhere") in err


def test_missing_checkpoint_is_one_line(capsys, tmp_path):
    err = _error(capsys, ["eval", str(tmp_path / "best.pt")])
    assert "checkpoint not found" in err


def test_config_list_documents_keys(capsys):
    assert main(["config", "--list"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr = 0.1" in out and "augment.policy" in out and "data.subset_per_class" in out


def test_train_then_eval_round_trip(capsys, tmp_path, tiny_overrides):
    args = tiny_overrides(tmp_path, "name=cli", "data.subset_per_class=10")
    assert main(["train", "--quiet", *args]) == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "cli" / "last.pt"), "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 100
    assert res["top1"] == pytest.approx(summary["final_top1"])


def test_gallery_writes_a_png_of_real_images(capsys, tmp_path, cifar10_zip, cache_dir):
    from PIL import Image

    out = tmp_path / "geo.png"
    argv = ["gallery", "--data", str(cifar10_zip), "--policy", "geo-n2-m5", "--out", str(out), "--images", "2"]
    assert main([*argv, f"data.cache_dir={cache_dir}", "data.subset_per_class=5", "data.test_subset_per_class=1"]) == 0
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 300
    assert f"wrote {out}" in capsys.readouterr().out


def test_empty_class_folder_is_one_line(capsys, tmp_path, make_tree):
    root = make_tree()
    (root / "train" / "zebra").mkdir()
    err = _error(capsys, ["data", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}", "--prepare", "-q"])
    assert "zebra" in err


def test_unreadable_image_is_one_line(capsys, tmp_path, make_tree):
    root = make_tree()
    (root / "train" / "cat" / "0001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    err = _error(capsys, ["train", f"out_dir={tmp_path}", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}"])
    assert "0001.jpg" in err and "unreadable" in err


def test_bench_kd_reports_live_and_cached_costs(capsys):
    assert main(["bench", "kd", "--quick", "--batch-size", "32", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["seconds"]) == {"plain_step", "teacher_forward", "kd_step", "cached_kd_step", "cache_lookup"}
    assert all(t > 0 for t in res["seconds"].values())
    assert res["kd_loss"] > 0 and res["kd_over_plain_plus_teacher"] > 0 and res["cached_over_plain"] > 0
    assert res["cached_kd_loss"] == res["kd_loss"]  # the cache holds what the live teacher computes
