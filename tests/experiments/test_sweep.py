"""augkd.experiments.sweep and report: a real 2x2 grid of tiny runs, its report, resuming, bad grids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from augkd.cli import main
from augkd.experiments.report import RunRecord, find_axes, make_report
from augkd.experiments.sweep import SweepError, expand_grid, parse_grid, run_sweep


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, tiny_overrides, tiny_teacher) -> Path:
    """A finished sweep: augment.magnitude=0,6 x kd=off,on, one seed, tiny runs (one process each)."""
    out = tmp_path_factory.mktemp("sweep")
    overrides = [o for o in tiny_overrides(out) if not o.startswith(("out_dir=", "name="))]
    overrides += ["augment.policy=geo-n2-m3", f"kd.teacher={tiny_teacher}"]
    run_sweep(None, ["augment.magnitude=0,6", "kd=off,on"], out, seeds=0, overrides=overrides, log=lambda m: None)
    return out


def test_sweep_runs_every_point_and_reports_their_numbers(sweep_dir: Path) -> None:
    names = sorted(p.parent.name for p in sweep_dir.glob("*/summary.json"))
    assert names == ["magnitude-0_kd-off", "magnitude-0_kd-on", "magnitude-6_kd-off", "magnitude-6_kd-on"]
    summaries = {n: json.loads((sweep_dir / n / "summary.json").read_text()) for n in names}
    assert summaries["magnitude-6_kd-on"]["policy"] == "geo-n2-m6"
    assert summaries["magnitude-0_kd-off"]["kd"] is None and summaries["magnitude-0_kd-on"]["kd"]["k"] == 3

    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    assert report["axes"] == ["augment.magnitude", "kd"]
    by_point = {(c["point"]["augment.magnitude"], c["point"]["kd"]): c for c in report["cells"]}
    for (m, kd), cell in by_point.items():
        assert cell["mean"] == pytest.approx(summaries[f"magnitude-{m}_kd-{kd}"]["final_error"])
    gains = {g["column"]: g["gain"] for g in report["kd_gain"]}
    assert gains["6"] == pytest.approx(by_point[("6", "off")]["mean"] - by_point[("6", "on")]["mean"])
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "magnitude M=6" in md and "KD gain" in md
    assert f"| {summaries['magnitude-6_kd-on']['final_error']:.2f} (1) |" in md  # one seed: no "± 0.00"
    for png in ("error_vs_augment_magnitude.png", "curves.png"):
        with Image.open(sweep_dir / "report" / png) as img:
            assert img.format == "PNG" and img.size[0] > 500


def test_sweep_again_skips_finished_runs(sweep_dir: Path, tiny_overrides, tiny_teacher) -> None:
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}
    overrides = [o for o in tiny_overrides(sweep_dir) if not o.startswith(("out_dir=", "name="))]
    overrides += ["augment.policy=geo-n2-m3", f"kd.teacher={tiny_teacher}"]
    logs: list[str] = []
    run_sweep(None, ["augment.magnitude=0,6", "kd=off,on"], sweep_dir, seeds=0, overrides=overrides, log=logs.append)
    assert "(4 already done)" in logs[0]
    assert {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")} == before


def test_report_cli_on_run_folders(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    runs = [str(sweep_dir / "magnitude-0_kd-off"), str(sweep_dir / "magnitude-6_kd-off")]
    assert main(["report", *runs, "--out", str(tmp_path), "--title", "two runs"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["axes"] == ["augment.magnitude"]  # kd is off in both: not an axis
    assert (tmp_path / "report.md").read_text().startswith("# two runs")


def test_expand_grid_names_and_overrides() -> None:
    runs = expand_grid(parse_grid(["kd.lambda=0.5,1", "kd=off,on"]), seeds=[0, 1])
    assert len(runs) == 8
    assert runs[0].name == "lambda-0.5_kd-off_seed-0" and runs[-1].name == "lambda-1_kd-on_seed-1"
    assert runs[0].overrides == ["kd.lambda=0.5", "kd.teacher=''", "kd.cache=''", "seed=0"]
    assert runs[1].overrides == ["kd.lambda=0.5", "seed=0"]  # kd=on keeps the base config's teacher
    assert [r.point["seed"] for r in runs[:4]] == ["0"] * 4  # seeds outermost


def test_path_values_name_distinct_folders_and_clashes_are_errors() -> None:
    runs = expand_grid(parse_grid(["kd.teacher=runs/a/best.pt,runs/b/best.pt"]), seeds=[0])
    assert [r.name for r in runs] == ["teacher-a-best_seed-0", "teacher-b-best_seed-0"]
    with pytest.raises(SweepError, match="share the run folder 'teacher-a-best'"):
        expand_grid(parse_grid(["kd.teacher=x/a/best.pt,y/a/best.pt"]), seeds=[])


def test_seed_axis_needs_no_seeds_option(tmp_path: Path, tiny_overrides) -> None:
    from augkd.experiments.sweep import plan_sweep

    fixed = [o for o in tiny_overrides(tmp_path) if not o.startswith(("out_dir=", "name="))]
    runs = plan_sweep(None, parse_grid(["seed=3,4"]), [], fixed, tmp_path)
    assert [r.name for r in runs] == ["seed-3", "seed-4"] and runs[1].overrides[-3] == "seed=4"


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["augment.magnitude"], "must look like key=v1,v2"),
        (["augment.magnitude="], "has no values"),
        (["kd=maybe"], "takes off/on"),
        (["kd.k=1,1"], "repeats a value"),
        (["seed=0,1", "seed=2"], "given twice"),
    ],
)
def test_bad_grid_syntax(grid: list[str], message: str) -> None:
    with pytest.raises(SweepError, match=message):
        parse_grid(grid)


def test_bad_point_fails_before_any_run(tmp_path: Path, tiny_overrides, capsys) -> None:
    fixed = [o for o in tiny_overrides(tmp_path) if not o.startswith(("out_dir=", "name="))]
    out = tmp_path / "s"
    args = ["sweep", *fixed, "augment.policy=geo-n2-m3", "--out", str(out), "--grid"]
    assert main([*args, "augment.magnitude=0,12"]) == 2
    err = capsys.readouterr().err
    assert "run magnitude-12" in err and "m must be in [0, 10]" in err and err.count("\n") == 1
    assert main([*args, "augment.magnitude=0", "kd=on"]) == 2
    assert "kd=on needs a teacher" in capsys.readouterr().err
    assert main(["sweep", "--config", str(tmp_path / "missing.yaml"), "--out", str(out), "--grid", "seed=0,1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("kd.teacher={tmp}/no-teacher/best.pt", "kd.teacher {tmp}/no-teacher/best.pt is not a file"),
        (
            "kd.teacher=timm:test_resnet kd.teacher_weights={tmp}/w.safetensors",
            "kd.teacher timm:test_resnet: weight file not found: {tmp}/w.safetensors",
        ),
        ("kd.cache={tmp}/no-cache", "kd.cache {tmp}/no-cache is not a folder"),
        ("data.root={tmp}/no-data.zip", "data.root {tmp}/no-data.zip does not exist"),
    ],
)
def test_missing_paths_fail_before_any_run(tmp_path: Path, tiny_overrides, capsys, override, message) -> None:
    # kd=off points would train, the kd=on ones would fail later with the reason only in a log: check them first
    fixed = [o for o in tiny_overrides(tmp_path) if not o.startswith(("out_dir=", "name="))]
    out = tmp_path / "s"
    argv = ["sweep", *fixed, *override.format(tmp=tmp_path).split(), "--out", str(out), "--grid", "kd=off,on"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("augkd sweep: error: run kd-") and message.format(tmp=tmp_path) in err
    assert "no run was started" in err and err.count("\n") == 1
    assert not out.exists()


def _record(seed: int, teacher: str, lam: float, error: float) -> RunRecord:
    config = {"seed": seed, "name": f"r{seed}{lam}", "kd.teacher": teacher, "kd.lambda": lam, "epochs": 3}
    return RunRecord(Path(f"r{seed}-{teacher}-{lam}"), config, {"final_error": error}, [])


def test_axes_ignore_seeds_and_map_teacher_to_kd() -> None:
    runs = [_record(s, t, lam, 10.0) for s in (0, 1) for t in ("", "t.pt") for lam in (0.5, 1.0)]
    assert find_axes(runs) == ["kd", "kd.lambda"]
    assert find_axes(runs, ["kd.lambda", "kd"]) == ["kd.lambda", "kd"]
    runs = [_record(s, "", 1.0, 10.0) for s in (0, 1)]
    assert find_axes(runs) == []


def test_report_averages_seeds(tmp_path: Path) -> None:
    for seed, err in ((0, 10.0), (1, 14.0)):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"final_error": err, "best_top1": 90.0, "epochs": 1}))
        (run / "config.yaml").write_text(f"seed: {seed}\nname: run{seed}\nkd:\n  teacher: ''\n")
    res = make_report([tmp_path], tmp_path / "out")
    assert res["axes"] == [] and len(res["cells"]) == 1
    runs_part = (tmp_path / "out" / "report.md").read_text().split("## Runs")[1]
    table = [line for line in runs_part.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # header, separator and rows: the same number of cells
    assert "| run0 | 0 | 10.00 | 90.00 | 1 | - |" in table
    cell = res["cells"][0]
    assert cell["mean"] == pytest.approx(12.0) and cell["sd"] == pytest.approx(2.8284, abs=1e-4) and cell["n"] == 2


def test_group_caches_shares_one_cache_per_augmentation_stream(tmp_path, tiny_overrides, tiny_teacher) -> None:
    from augkd.experiments.sweep import group_caches, plan_sweep

    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("out_dir=", "name="))]
    overrides += ["augment.policy=geo-n2-m3", f"kd.teacher={tiny_teacher}"]
    axes = parse_grid(["augment.magnitude=2,6", "kd.lambda=0.5,1", "kd.k=2,3", "kd=off,on"])
    runs = plan_sweep(None, axes, [0, 1], overrides, tmp_path)
    groups = group_caches(None, runs, tmp_path)
    kd_runs = [r.name for r in runs if r.point["kd"] == "on"]
    assert sorted(groups) == sorted(kd_runs)  # runs without KD never get (or wait for) a cache
    # One cache per (magnitude, seed): lambda and K do not change what the teacher sees; K is the largest asked.
    distinct = {id(g): g for g in groups.values()}.values()
    assert len(distinct) == 2 * 2
    for group in distinct:
        assert len(group.runs) == 4 and group.k == 3 and group.folder.parent == tmp_path / "caches"
        points = {tuple(r.split("_")[i] for i in (0, 4)) for r in group.runs}
        assert len(points) == 1, points  # one magnitude, one seed
    # With a fixed data_seed the run seed only draws the initialization: one cache per magnitude for both seeds.
    runs = plan_sweep(None, axes, [0, 1], [*overrides, "data_seed=7"], tmp_path)
    distinct = {id(g): g for g in group_caches(None, runs, tmp_path).values()}.values()
    assert len(distinct) == 2 and all(len(g.runs) == 8 for g in distinct)


def test_sweep_with_cache_equals_live_teacher_runs(sweep_dir: Path, tmp_path, tiny_overrides, tiny_teacher) -> None:
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("out_dir=", "name="))]
    overrides += ["augment.policy=geo-n2-m3", f"kd.teacher={tiny_teacher}"]
    logs: list[str] = []

    def sweep() -> dict:
        grid = ["augment.magnitude=6", "kd.lambda=0.5,1"]
        return run_sweep(None, grid, tmp_path, seeds=0, overrides=overrides, cache=True, log=logs.append, report=False)

    result = sweep()
    (cache,) = result["caches"]
    assert cache["runs"] == ["magnitude-6_lambda-0.5", "magnitude-6_lambda-1"] and cache["teacher_passes_saved"] == 1
    assert sum("building" in line for line in logs) == 1
    for name in cache["runs"]:
        assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["kd"]["cache"] == cache["folder"]

    # lambda=1 is the preset's value: the cached run's losses are the live-teacher run's of the module sweep.
    def losses(run: Path) -> list[float]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["train_loss"] for r in rows]

    assert losses(tmp_path / "magnitude-6_lambda-1") == pytest.approx(
        losses(sweep_dir / "magnitude-6_kd-on"), rel=1e-6, abs=1e-7
    )
    # Run again: nothing is rebuilt, the manifest still reports the cache.
    logs.clear()
    again = sweep()
    assert not any("building" in line for line in logs) and again["caches"][0]["build_seconds"] is not None


def test_sweep_refuses_to_reuse_runs_made_with_other_settings(sweep_dir: Path, tmp_path, tiny_overrides, tiny_teacher):
    """Family 2 of the robustness issue: a finished run is reused only if the sweep would make the same config."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sweep_dir, out)
    overrides = [o for o in tiny_overrides(out) if not o.startswith(("out_dir=", "name="))]
    overrides += ["augment.policy=geo-n2-m3", f"kd.teacher={tiny_teacher}"]
    grid = ["augment.magnitude=0,6", "kd=off,on"]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    with pytest.raises(SweepError, match=r"run magnitude-0_kd-off in .* was made with other settings \(optim\.lr"):
        run_sweep(None, grid, out, seeds=0, overrides=[*overrides, "optim.lr=0.2"], log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == before  # nothing ran
    # Settings that change no result (threads, the decoded cache's folder) keep the runs.
    logs: list[str] = []
    neutral = [*overrides, "threads=1", f"data.cache_dir={tmp_path / 'elsewhere'}"]
    run_sweep(None, grid, out, seeds=0, overrides=neutral, log=logs.append, report=False)
    assert "(4 already done)" in logs[0]
    # --rerun-changed starts over the changed runs only.
    config = yaml.safe_load((out / "magnitude-6_kd-on" / "config.yaml").read_text())
    config["kd"]["k"] = 5
    (out / "magnitude-6_kd-on" / "config.yaml").write_text(yaml.safe_dump(config))
    logs.clear()
    run_sweep(None, grid, out, seeds=0, overrides=overrides, log=logs.append, report=False, rerun_changed=True)
    assert "(3 already done)" in logs[0] and "magnitude-6_kd-on" in logs[1]
    assert yaml.safe_load((out / "magnitude-6_kd-on" / "config.yaml").read_text())["kd"]["k"] == 3


def test_an_interrupted_run_stops_the_sweep_without_starting_others(tmp_path, tiny_overrides, monkeypatch) -> None:
    """Ctrl-C reaches the runs (they share the terminal): the sweep must not go on to start the queued ones."""
    from augkd.experiments import sweep

    started: list[list[str]] = []

    def fake_call(cmd, **kwargs):
        started.append(cmd)
        return 130  # what `augkd train` returns on Ctrl-C

    monkeypatch.setattr(sweep.subprocess, "call", fake_call)
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("out_dir=", "name="))]
    logs: list[str] = []
    for jobs in (1, 2):
        started.clear()
        with pytest.raises(KeyboardInterrupt):
            run_sweep(
                None,
                ["optim.lr=0.1,0.2,0.3,0.4"],
                tmp_path / f"j{jobs}",
                overrides=overrides,
                jobs=jobs,
                log=logs.append,
            )
        assert 1 <= len(started) <= jobs, started  # the runs already going when Ctrl-C came, no more
    assert any("interrupted; the same command resumes it" in m for m in logs)
    assert not any("FAILED" in m for m in logs)


def test_finished_runs_compare_by_the_precision_they_trained_in(sweep_dir: Path, tmp_path, tiny_overrides, monkeypatch):
    """amp=auto is float32 on one CPU and bf16 on another: a sweep resumed on a machine where it resolves
    otherwise must not mix precisions, and amp=off given to match float32 runs made with auto reuses them."""
    import shutil

    from augkd.train import build

    out = tmp_path / "copy"
    shutil.copytree(sweep_dir, out)  # made with amp=off: every summary.json says "amp": "off"
    for config_file in out.glob("*/config.yaml"):  # as if made with amp=auto on a CPU without native bf16
        config = yaml.safe_load(config_file.read_text())
        config["amp"] = "auto"
        config_file.write_text(yaml.safe_dump(config))
    base = [o for o in tiny_overrides(out) if not o.startswith(("out_dir=", "name=", "amp="))]
    base += ["augment.policy=geo-n2-m3"]
    grid = ["augment.magnitude=0,6", "kd=off"]

    def sweep(amp: str, bf16_cpu: bool) -> list[str]:
        monkeypatch.setattr(build, "_cpu_has_bf16", lambda: bf16_cpu)
        logs: list[str] = []
        run_sweep(None, grid, out, seeds=0, overrides=[*base, f"amp={amp}"], log=logs.append, report=False)
        return logs

    assert "(2 already done)" in sweep("auto", bf16_cpu=False)[0]  # same text, same precision
    assert "(2 already done)" in sweep("off", bf16_cpu=True)[0]  # other text, same precision
    with pytest.raises(SweepError, match=r"amp 'auto trained in float32' -> 'auto trains in bfloat16 here; amp=off"):
        sweep("auto", bf16_cpu=True)  # same text, another precision
    with pytest.raises(SweepError, match=r"amp 'auto trained in float32' -> 'bf16 trains in bfloat16 here"):
        sweep("bf16", bf16_cpu=False)


def test_a_run_of_some_seeds_adds_to_the_sweep_it_belongs_to(tmp_path, tiny_overrides) -> None:
    """``--seeds 1,`` after ``--seeds 1`` (seed 0): sweep.json, and so the report, hold both seeds."""
    out = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(out) if not o.startswith(("out_dir=", "name="))]
    run_sweep(None, ["kd=off"], out, seeds=[0], overrides=overrides, log=lambda m: None, report=False)
    result = run_sweep(None, ["kd=off"], out, seeds=[1], overrides=overrides, log=lambda m: None)
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["seeds"] == [0, 1]
    assert [r["name"] for r in manifest["runs"]] == ["kd-off_seed-0", "kd-off_seed-1"]
    report = json.loads(Path(result["report"]["json"]).read_text())
    assert [c["n"] for c in report["cells"]] == [2]
    # Another sweep in the same folder (other overrides) replaces the manifest instead.
    run_sweep(None, ["kd=off"], out, seeds=[0], overrides=[*overrides, "threads=1"], log=lambda m: None, report=False)
    assert json.loads((out / "sweep.json").read_text())["seeds"] == [0]
