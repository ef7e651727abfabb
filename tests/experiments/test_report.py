"""augkd.experiments.report on hand-made run folders: KD as the only axis, one seed, runs that form no grid."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from augkd.cli import main
from augkd.experiments.report import make_report


def _run(root: Path, name: str, error: float, config: dict, **summary) -> Path:
    run = root / name
    run.mkdir(parents=True)
    summary = {"final_error": error, "best_top1": 100 - error, "epochs": 2, **summary}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, **config}))
    return run


def test_kd_as_the_only_axis_has_a_gain(tmp_path: Path) -> None:
    _run(tmp_path / "runs", "plain", 12.0, {"seed": 0, "kd": {"teacher": ""}})
    _run(tmp_path / "runs", "kd", 11.0, {"seed": 0, "kd": {"teacher": "t.pt"}})
    res = make_report([tmp_path / "runs" / "plain", tmp_path / "runs" / "kd"], tmp_path / "out")
    assert res["axes"] == ["kd"]
    assert res["kd_gain"] == [{"point": {}, "column": None, "gain": 1.0}]
    md = Path(res["markdown"]).read_text()
    assert "| runs | KD=off | KD=on |" in md
    assert "| all | 12.00 (1) | 11.00 (1) |" in md  # one seed: no "± 0.00"
    assert "| **KD gain** (error without - with) |  | +1.00 |" in md


def test_seeds_keep_their_standard_deviation(tmp_path: Path) -> None:
    for seed, err in ((0, 10.0), (1, 12.0)):
        _run(tmp_path / "runs", f"s{seed}", err, {"seed": seed})
    md = Path(make_report([tmp_path / "runs" / "s0", tmp_path / "runs" / "s1"], tmp_path / "out")["markdown"])
    assert "| all | 11.00 ± 1.41 (2) |" in md.read_text()


def test_runs_that_share_no_axis_are_listed_not_tabled(tmp_path: Path, capsys) -> None:
    configs = [
        {"epochs": 2, "optim": {"lr": 0.1}, "model": {"name": "fastnet9"}, "augment": {"policy": "none"}},
        {"epochs": 5, "optim": {"lr": 0.2}, "model": {"name": "wrn28_2"}, "augment": {"policy": "geo-n2-m5"}},
        {"epochs": 8, "optim": {"lr": 0.4}, "model": {"name": "resnet20"}, "augment": {"policy": "ra-n2-m9"}},
    ]
    paths = [str(_run(tmp_path / "runs", f"r{i}", 10.0 + i, c)) for i, c in enumerate(configs)]
    assert main(["report", *paths, "--out", str(tmp_path / "out")]) == 0
    assert "wrote" in capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text()
    assert "These 3 runs share no grid: they differ in 4 config keys, and only 3 of the 81 combinations" in md
    assert "- `r1`: error 11.00; augment.policy=geo-n2-m5, epochs=5, model.name=wrn28_2, optim.lr=0.2" in md
    assert "- | -" not in md and len(md.splitlines()) < 12
    res = json.loads((tmp_path / "out" / "report.json").read_text())
    assert res["axes"] == [] and res["differences"] == ["augment.policy", "epochs", "model.name", "optim.lr"]
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_two_by_two_grid_of_loose_runs_is_still_a_table(tmp_path: Path) -> None:
    paths = []
    for lr in (0.1, 0.2):
        for epochs in (2, 4):
            paths.append(
                _run(tmp_path / "runs", f"lr{lr}-e{epochs}", lr * 10 + epochs, {"optim": {"lr": lr}, "epochs": epochs})
            )
    res = make_report(paths, tmp_path / "out")
    assert res["axes"] == ["epochs", "optim.lr"] and len(res["cells"]) == 4
    assert "share no grid" not in Path(res["markdown"]).read_text()


def test_runs_compare_by_the_precision_they_trained_in(tmp_path: Path) -> None:
    """amp=auto trained in float32 beside amp=off is one cell; amp=auto in bf16 beside it is another."""
    runs = tmp_path / "runs"
    _run(runs, "a0", 10.0, {"seed": 0, "amp": "auto"}, amp="off", device="cpu")
    _run(runs, "a1", 12.0, {"seed": 1, "amp": "off"}, amp="off", device="cpu")
    res = make_report([runs / "a0", runs / "a1"], tmp_path / "out")
    assert res["axes"] == [] and res["cells"][0]["n"] == 2
    _run(runs, "b0", 14.0, {"seed": 0, "amp": "auto"}, amp="bfloat16", device="cpu")
    res = make_report([runs / "a0", runs / "a1", runs / "b0"], tmp_path / "out2")
    assert res["axes"] == ["amp"]
    assert {c["point"]["amp"]: c["n"] for c in res["cells"]} == {"off": 2, "bfloat16": 1}


def test_a_reference_without_kd_beside_a_sweep_of_kd_settings(tmp_path: Path) -> None:
    """No-KD runs have no K or lambda (whatever their config's preset says): one reference row, and the gain of
    every KD cell is measured from it; no empty rows for KD off at each lambda."""
    runs = tmp_path / "runs"
    for seed, err in ((0, 90.0), (1, 92.0)):
        _run(runs, f"nokd_seed-{seed}", err, {"seed": seed, "kd": {"teacher": "", "k": 5, "lambda": 1.0}})
    for lam, k, err in ((0.5, 10, 89.0), (2.0, 10, 87.0), (0.5, 50, 88.0)):
        _run(runs, f"l{lam}_k{k}", err, {"seed": 0, "kd": {"teacher": "t.pt", "k": k, "lambda": lam}})
    res = make_report([runs], tmp_path / "out")
    assert set(res["axes"]) == {"kd", "kd.k", "kd.lambda"}
    md = Path(res["markdown"]).read_text()
    table = [line for line in md.split("## Runs")[0].splitlines() if line.startswith("| ")]
    assert table[0] == "| KD / lambda | K=10 | K=50 | K=- |"
    assert table[1] == "| KD=off, lambda=- | - | - | 91.00 ± 1.41 (2) |"
    assert not any(line.startswith("| KD=off, lambda=0.5") for line in table)
    gains = {(g["point"]["kd.lambda"], g["column"]): g["gain"] for g in res["kd_gain"]}
    assert gains == {("0.5", "10"): 2.0, ("0.5", "50"): 3.0, ("2", "10"): 4.0}
    assert "| **KD gain** (error without - with) lambda=0.5 | +2.00 | +3.00 | - |" in table
    assert (tmp_path / "out" / "error_vs_kd_k.png").is_file()


def test_runs_of_two_augkd_versions_differ_only_where_their_settings_do(tmp_path: Path) -> None:
    """A key added to augkd since a run was made (its config.yaml lacks it) reads as its default."""
    runs = tmp_path / "runs"
    _run(runs, "old", 10.0, {"seed": 0, "augment": {"policy": "geo-n2-m6"}})  # written before augment.cutmix existed
    _run(runs, "new", 12.0, {"seed": 1, "augment": {"policy": "geo-n2-m6", "cutmix": 0.0, "mix_prob": 1.0}})
    res = make_report([runs / "old", runs / "new"], tmp_path / "out")
    assert res["axes"] == [] and res["cells"][0]["n"] == 2
    _run(runs, "mixed", 14.0, {"seed": 0, "augment": {"policy": "geo-n2-m6", "cutmix": 1.0}})
    res = make_report([runs / "old", runs / "new", runs / "mixed"], tmp_path / "out2")
    assert res["axes"] == ["augment.cutmix"]
