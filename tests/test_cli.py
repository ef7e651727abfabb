"""augkd.cli: every command is reachable, bad input is a one-line error with exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from augkd.cli import build_parser, main, set_openmp_defaults

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


def test_unknown_model_is_one_line(capsys, tmp_path, cifar10_zip, cache_dir):
    data = [f"data.root={cifar10_zip}", f"data.cache_dir={cache_dir}"]  # found from any working folder
    err = _error(capsys, ["train", f"out_dir={tmp_path}", *data, "model.name=resnet_9000"])
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
    # a run folder means its best.pt; overrides may follow the options
    assert main(["eval", str(tmp_path / "cli"), "--json", "data.test_subset_per_class=5"]) == 0
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert res["checkpoint"] == str(tmp_path / "cli" / "best.pt") and res["n"] == 50
    assert err == ""  # stderr is not a terminal here: no progress bar drawn into it
    err = _error(capsys, ["eval", str(tmp_path / "cli" / "config.yaml")])
    assert err.endswith("config.yaml: not a checkpoint (expected best.pt or last.pt of an augkd run)")
    assert "weights_only" not in err
    err = _error(capsys, ["eval", str(tmp_path)])
    assert err.endswith(
        f"checkpoint {tmp_path}: a folder without best.pt or last.pt (expected a run folder or a .pt file)"
    )


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        (["eval", "runs/q/best.pt", "--flip", "data.eval_size=40"], ["data.eval_size=40"]),
        (["eval", "runs/q", "a=1", "--flip", "b=2", "--json"], ["a=1", "b=2"]),
        (["train", "--config", "c.yaml", "--dry-run", "name=x"], ["name=x"]),
        (["train", "epochs=1", "--quiet", "name=x", "--resume", "seed=2"], ["epochs=1", "name=x", "seed=2"]),
        (
            ["teacher-cache", "--out", "d", "augment.policy=geo-n2-m6", "--k", "3", "seed=1"],
            ["augment.policy=geo-n2-m6", "seed=1"],
        ),
        (["sweep", "--grid", "kd=off,on", "--out", "s", "epochs=2"], ["epochs=2"]),
        (["ambiguity", "--teacher", "t.pt", "--images", "5", "data.cache_dir=c"], ["data.cache_dir=c"]),
        (["data", "--prepare", "data.root=x", "-q"], ["data.root=x"]),
    ],
)
def test_overrides_are_accepted_anywhere(argv, overrides):
    from augkd.cli import _parse

    assert _parse(build_parser(), argv).overrides == overrides


@pytest.mark.parametrize(("text", "seeds"), [("3", 3), ("0", 0), ("1,2", [1, 2]), ("2,", [2]), (" 0, 2 ", [0, 2])])
def test_sweep_seeds_are_a_count_or_a_list(text, seeds):
    """A list reruns some seeds of a sweep (each keeps its folder name ..._seed-<s>)."""
    from augkd.cli import _parse

    args = _parse(build_parser(), ["sweep", "--grid", "kd=off,on", "--out", "s", "--seeds", text])
    assert args.seeds == seeds


@pytest.mark.parametrize("text", ["-1", "two", "1,x"])
def test_bad_sweep_seeds_are_a_usage_error(capsys, text):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--grid", "kd=off,on", "--out", "s", "--seeds", text])
    assert exc.value.code == 2
    assert "a number of seeds (3: seeds 0, 1, 2) or a comma list of seeds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["eval", "runs/q/best.pt", "--flop"], "usage: augkd eval "),
        (["train", "--dry-run", "name=x", "--bogus"], "usage: augkd train "),
        (["report", "runs/a", "--out", "r", "epochs=2"], "usage: augkd report "),  # report takes no overrides
    ],
)
def test_usage_errors_show_the_commands_usage(capsys, argv, usage):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments" in err
    assert "command ..." not in err


def test_help_shows_every_default(capsys):
    from augkd.cli import _HelpFormatter

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.default is None or action.default is False or action.default in ("", [], argparse.SUPPRESS):
                continue
            shown = _HelpFormatter(name)._get_help_string(action)
            assert "(default: " in shown or "default" in action.help.lower(), (name, action.dest)
    with pytest.raises(SystemExit):
        main(["ambiguity", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "how many images (seeded random pick) (default: 1000)" in help_text
    assert "levels to measure (default: 0 1 2 3 4 5 6 7 8 9 10)" in help_text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--dry-run data.dataset=folder \\\n      data.root=" in capsys.readouterr().out


def test_openmp_wait_policy_is_set_before_torch(tmp_path):
    code = (
        "import os, sys; from augkd.cli import set_openmp_defaults; "
        "print('torch' in sys.modules, set_openmp_defaults(), os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "PASSIVE"]  # importing the CLI does not import torch
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own setting wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "ACTIVE"]
    assert set_openmp_defaults({}) is False  # torch is imported in this process: too late to matter


def test_gallery_output_path():
    from augkd.cli import _gallery_path

    assert _gallery_path(None, "geo-n2-m5", "runs") == Path("runs/gallery/geo-n2-m5.png")
    assert _gallery_path("out/", "geo-n2-m5", "runs") == Path("out/geo-n2-m5.png")
    assert _gallery_path("out/fig", "geo-n2-m5", "runs") == Path("out/fig.png")
    assert _gallery_path("out/fig.pdf", "geo-n2-m5", "runs") == Path("out/fig.pdf")


def test_data_prints_notes_as_lines_and_no_cache_for_streaming(capsys, make_tree):
    root = make_tree()
    assert main(["data", f"data.root={root}", "data.loader=stream"]) == 0
    out = capsys.readouterr().out
    assert "not decoded yet" not in out and "['" not in out
    assert "  cache: none: data.loader=stream decodes the files of every batch" in out
    assert "note: data.loader=stream: training reads the files above per batch; no decoded cache is used" in out


def test_gallery_writes_a_png_of_real_images(capsys, tmp_path, cifar10_zip, cache_dir):
    from PIL import Image

    out = tmp_path / "geo-n2-m5.png"
    argv = ["gallery", "--data", str(cifar10_zip), "--policy", "geo-n2-m5", "--out", f"{tmp_path}/", "--images", "2"]
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
