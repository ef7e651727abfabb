"""Reports over finished runs: a Markdown table in the style of the paper's Table 1 plus PNG plots.

``augkd report RUNS... --out DIR`` takes run folders (each with ``summary.json``, ``config.yaml`` and
``metrics.jsonl``) or sweep folders (with ``sweep.json``; all their runs). The axes are the config keys whose
values differ between the runs (the sweep's grid when there is a manifest); ``kd.teacher`` (or ``kd.cache``) set
or empty becomes the axis ``kd`` (off/on), and ``seed`` is never an axis: runs that differ only in the seed are
averaged.

Files written to ``DIR``:

- ``report.md``: the error table (mean +- standard deviation over seeds, n) with one column per value of the
  first axis, a "KD gain" row when ``kd`` is an axis, then one line per run;
- ``report.json``: the same numbers;
- ``error_vs_<axis>.png``: test error against each axis, one line per value of the other axes (the paper's
  Table 1 as a plot; with ``kd.lambda`` or ``kd.k`` as the axis it is the paper's Fig. 4);
- ``curves.png``: training loss and test accuracy per epoch, one colour per value of the first axis, solid
  with KD and dashed without (the paper's Fig. 2), and, when runs logged it, the student's test-set top-1
  agreement with its teacher (or ``eval.reference``).

Runs that measured agreement with a teacher get its final test-set figures in the run list (top-1 agreement and
KL(teacher || student)).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from augkd.io import atomic_write_text, out_folder

__all__ = ["ReportError", "RunRecord", "find_axes", "load_runs", "make_report"]

#: Config keys that never make an axis (they differ between runs without changing the experiment).
IGNORED_KEYS = {"name", "out_dir", "seed", "threads", "data.cache_dir", "device"}
KD_AXIS = "kd"
NOT_APPLICABLE = "-"
"""The value of a KD setting (``kd.k``, ``kd.lambda``, ...) for a run without KD: the reference row, not a cell."""
#: The summary's test-set agreement figures (runs with a teacher or ``eval.reference``).
AGREEMENT_SUMMARY = ("final_agree_top1", "final_agree_top5", "final_teacher_kl")


class ReportError(ValueError):
    """Nothing to report: no runs found, a run without summary, unreadable files."""


@dataclass
class RunRecord:
    """One finished run: its folder, flattened config, summary and per-epoch metrics."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def error(self) -> float | None:
        err = self.summary.get("final_error")
        return None if err is None else float(err)

    @property
    def kd_source(self) -> str:
        """Where this run's soft labels came from: its ``kd.teacher`` or ``kd.cache`` (empty: no KD)."""
        return str(self.config.get("kd.teacher") or self.config.get("kd.cache") or "")

    def value(self, axis: str) -> str:
        """This run's value on ``axis`` as a string (``kd`` -> ``off``/``on``)."""
        if axis == KD_AXIS:
            return "on" if self.kd_source else "off"
        if axis.startswith("kd.") and not self.kd_source:
            return NOT_APPLICABLE  # a run without KD has no K or lambda, whatever its config's preset says
        return _fmt_value(self.config.get(axis))


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "none" if v is None else str(v)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs":
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
    return flat


def _load_run(path: Path) -> RunRecord:
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        raise ReportError(f"{path}: no summary.json (the run has not finished)")
    try:
        summary = json.loads(summary_file.read_text())
        config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else {}
        history = []
        if (path / "metrics.jsonl").is_file():
            history = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: unreadable run files ({exc})") from None
    from augkd.train.config import with_defaults

    # A key added to augkd since the run was made reads as its default (as the sweep's comparison does), so runs
    # made by two versions of augkd differ only where their settings do.
    flat = _flatten(with_defaults(config or {}))
    # amp=auto is float32 on one CPU and bf16 on another: runs compare by the precision they trained in (what
    # summary.json records), so amp=off beside amp=auto-as-float32 is no axis and auto-as-bf16 beside it is one.
    if "amp" in summary:
        flat["amp"] = summary["amp"]
    if "device" in summary:
        flat["device"] = str(summary["device"]).split(":", 1)[0]
    return RunRecord(path, flat, summary, history)


def load_runs(paths: Sequence[str | Path]) -> tuple[list[RunRecord], list[str] | None]:
    """Runs from run folders and sweep folders; returns them and the sweep's axes (None without a manifest).

    Raises:
        ReportError: a path that is neither, a run that has not finished, or no runs at all.
    """
    runs: list[RunRecord] = []
    grid_axes: list[str] | None = None
    for raw in paths:
        path = Path(raw)
        manifest = path / "sweep.json"
        if manifest.is_file():
            info = json.loads(manifest.read_text())
            grid_axes = [a["key"] for a in info.get("grid", []) if a["key"] != "seed"]
            runs.extend(_load_run(path / r["name"]) for r in info["runs"])
        elif (path / "summary.json").is_file() or (path / "last.pt").is_file():
            runs.append(_load_run(path))
        elif path.is_dir():
            found = sorted(p.parent for p in path.glob("*/summary.json"))
            if not found:
                raise ReportError(f"{path}: no runs (no summary.json or sweep.json in it or its sub-folders)")
            runs.extend(_load_run(p) for p in found)
        else:
            raise ReportError(f"{path}: not a run or sweep folder")
    if not runs:
        raise ReportError("no runs to report")
    return runs, grid_axes


def _sort_values(values: list[str]) -> list[str]:
    if set(values) <= {"off", "on"}:
        return [v for v in ("off", "on") if v in values]
    rest = [v for v in values if v != NOT_APPLICABLE]
    if _numeric(rest) is not None:
        rest = sorted(rest, key=float)
    return rest + [NOT_APPLICABLE] * (NOT_APPLICABLE in values)


def find_axes(runs: Sequence[RunRecord], grid_axes: Sequence[str] | None = None) -> list[str]:
    """The keys that tell the runs apart (besides the seed), ``kd`` for teacher on/off; the grid's order first."""
    keys = set().union(*(r.config for r in runs))
    varying = []
    for key in sorted(keys - IGNORED_KEYS):
        values = {json.dumps(r.config.get(key), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            varying.append(key)
    axes: list[str] = []
    if all(r.config.get("kd.teacher") or not r.config.get("kd.cache") for r in runs):
        # Every cache was built from the run's own kd.teacher (`augkd sweep --cache`: one per seed): the teacher
        # names the soft labels' source, and the cache folder is no axis.
        varying = [k for k in varying if k != "kd.cache"]
    kd_keys = [k for k in ("kd.teacher", "kd.cache") if k in varying]
    if kd_keys:
        varying = [k for k in varying if k not in kd_keys]
        sources = {r.kd_source for r in runs}
        # KD switched on and off with one teacher (or cache): the axis "kd"; several teachers: each key is an axis.
        axes.extend([KD_AXIS] if "" in sources and len(sources) == 2 else kd_keys)
    for key in varying:
        if key.startswith("kd.") and not any(r.kd_source for r in runs):
            continue  # KD settings of runs that do not distil
        axes.append(key)
    if grid_axes:
        order = {k: i for i, k in enumerate(grid_axes)}
        axes.sort(key=lambda a: order.get(a, len(order)))
    return axes


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _group(runs: Sequence[RunRecord], axes: Sequence[str]) -> dict[tuple[str, ...], list[RunRecord]]:
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(tuple(r.value(a) for a in axes), []).append(r)
    return groups


def _cell(rs: list[RunRecord]) -> dict[str, Any]:
    errors = [r.error for r in rs if r.error is not None]
    if not errors:
        return {"n": 0, "mean": None, "sd": None, "errors": []}
    mean, sd = _mean_sd(errors)
    return {"n": len(errors), "mean": mean, "sd": sd, "errors": errors, "runs": [r.name for r in rs]}


def _fmt_cell(cell: dict[str, Any] | None) -> str:
    if not cell or cell["mean"] is None:
        return "-"
    if cell["n"] == 1:  # one run has no spread: "± 0.00" would claim one
        return f"{cell['mean']:.2f} (1)"
    return f"{cell['mean']:.2f} ± {cell['sd']:.2f} ({cell['n']})"


def _axis_title(axis: str) -> str:
    return {"augment.magnitude": "magnitude M", KD_AXIS: "KD", "kd.lambda": "lambda", "kd.k": "K"}.get(axis, axis)


def make_report(paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and the PNG plots for the runs under ``paths`` into ``out``.

    Returns:
        ``{"markdown": path, "json": path, "plots": [paths], "axes": [...], "cells": [...]}``.

    Raises:
        ReportError: no runs, or a run that has not finished.
    """
    runs, grid_axes = load_runs(paths)
    out = out_folder(out)
    axes = find_axes(runs, grid_axes)
    # The grid the axes span; runs with and without KD span theirs apart (a run without KD has no K or lambda).
    by_kd = _group(runs, [KD_AXIS]).values() if KD_AXIS in axes else [runs]
    points = sum(math.prod(len({r.value(a) for r in rs}) for a in axes) for rs in by_kd)
    if grid_axes is None and len(axes) >= 2 and 2 * len(_group(runs, axes)) <= points:
        return _unrelated_report(runs, axes, points, out, title)
    col_axis = next((a for a in axes if a != KD_AXIS), axes[0] if axes else None)
    row_axes = [a for a in axes if a != col_axis]
    col_values = _sort_values(list(dict.fromkeys(r.value(col_axis) for r in runs))) if col_axis else [""]
    row_values = [_sort_values(list(dict.fromkeys(r.value(a) for r in runs))) for a in row_axes]
    groups = _group(runs, axes)

    stats = {key: _cell(rs) for key, rs in groups.items()}
    cells = [{"point": dict(zip(axes, key, strict=True)), **cell} for key, cell in stats.items()]

    def cell_at(row: tuple[str, ...], col: str) -> dict[str, Any] | None:
        point = dict(zip(row_axes, row, strict=True))
        if col_axis:
            point[col_axis] = col
        return stats.get(tuple(point[a] for a in axes))

    def reference_at(row: tuple[str, ...], col: str) -> dict[str, Any] | None:
        """The cell without KD that a KD cell's gain is measured from: same point, or the same point with its
        KD settings not applicable (a no-KD reference beside a sweep over K or lambda)."""
        cell = cell_at(row, col)
        if cell is None:
            row = tuple(NOT_APPLICABLE if a.startswith("kd.") else v for a, v in zip(row_axes, row, strict=True))
            cell = cell_at(row, NOT_APPLICABLE if col_axis and col_axis.startswith("kd.") else col)
        return cell

    lines = [f"# {title or 'Report'}", ""]
    lines.append(
        f"{len(runs)} runs; test error (%) of the final epoch, mean ± standard deviation over seeds (number of "
        "runs)." + (f" Columns: {_axis_title(col_axis)}." if col_axis else "")
    )
    lines.append("")
    header = [" / ".join(_axis_title(a) for a in row_axes) or "runs"] + [
        f"{_axis_title(col_axis)}={v}" if col_axis else "error" for v in col_values
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    gains = []
    for row in itertools.product(*row_values):
        if row_axes and all(cell_at(row, c) is None for c in col_values):
            continue  # a combination no run has (KD off at a lambda of the KD sweep)
        label = ", ".join(f"{_axis_title(a)}={v}" for a, v in zip(row_axes, row, strict=True)) or "all"
        lines.append("| " + " | ".join([label] + [_fmt_cell(cell_at(row, c)) for c in col_values]) + " |")
    if KD_AXIS in row_axes:
        kd_pos = row_axes.index(KD_AXIS)
        others = [v for i, v in enumerate(row_values) if i != kd_pos]
        other_axes = [a for a in row_axes if a != KD_AXIS]
        for rest in itertools.product(*others):
            if NOT_APPLICABLE in rest:
                continue
            row_off = list(rest)
            row_off.insert(kd_pos, "off")
            row_on = list(rest)
            row_on.insert(kd_pos, "on")
            entries = []
            for c in col_values:
                gain = _gain(reference_at(tuple(row_off), c), cell_at(tuple(row_on), c))
                if gain is not None:
                    gains.append({"point": dict(zip(other_axes, rest, strict=True)), "column": c, "gain": gain})
                entries.append("-" if gain is None else f"{gain:+.2f}")
            if all(e == "-" for e in entries) and col_values != [""]:
                continue
            extra = ", ".join(f"{_axis_title(a)}={v}" for a, v in zip(other_axes, rest, strict=True))
            lines.append(
                f"| **KD gain** (error without - with){' ' + extra if extra else ''} | " + " | ".join(entries) + " |"
            )
    elif col_axis == KD_AXIS:  # KD is the only axis: its two values are the columns, the gain is one number
        gain = _gain(cell_at((), "off"), cell_at((), "on"))
        if gain is not None:
            gains.append({"point": {}, "column": None, "gain": gain})
        entries = ["" if v == "off" else ("-" if gain is None else f"{gain:+.2f}") for v in col_values]
        lines.append("| **KD gain** (error without - with) | " + " | ".join(entries) + " |")
    header = ["run", *(_axis_title(a) for a in axes), "seed", "error (%)", "best top-1 (%)", "epochs", "time (s)"]
    agreement = any(r.summary.get("final_agree_top1") is not None for r in runs)
    if agreement:
        header += ["agreement top-1 (%)", "KL(teacher, student)"]
    lines += ["", "## Runs", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(runs, key=lambda r: r.name):
        best, wall = r.summary.get("best_top1"), r.summary.get("wall_time_s")
        cells_ = [
            r.name,
            *(r.value(a) for a in axes),
            _fmt_value(r.config.get("seed")),
            "-" if r.error is None else f"{r.error:.2f}",
            "-" if best is None else f"{float(best):.2f}",
            _fmt_value(r.summary.get("epochs")),
            "-" if wall is None else f"{float(wall):.0f}",
        ]
        if agreement:
            agree, kl = r.summary.get("final_agree_top1"), r.summary.get("final_teacher_kl")
            cells_ += ["-" if agree is None else f"{agree:.2f}", "-" if kl is None else f"{kl:.4f}"]
        lines.append("| " + " | ".join(cells_) + " |")
    plots = _plots(runs, axes, col_axis, out)
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    md = out / "report.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    result = {
        "axes": axes,
        "columns": col_axis,
        "cells": cells,
        "kd_gain": gains,
        "runs": [
            {
                "name": r.name,
                "path": str(r.path),
                "error": r.error,
                **{
                    k: r.summary[k]
                    for k in ("final_agree_top1", "final_agree_top5", "final_teacher_kl")
                    if k in r.summary
                },
            }
            for r in runs
        ],
    }
    js = out / "report.json"
    atomic_write_text(js, json.dumps(result, indent=2) + "\n")
    return {**result, "markdown": str(md), "json": str(js), "plots": [str(p) for p in plots]}


def _gain(off: dict[str, Any] | None, on: dict[str, Any] | None) -> float | None:
    """Mean error without KD minus with it, where both cells have runs."""
    if off and on and off["mean"] is not None and on["mean"] is not None:
        return off["mean"] - on["mean"]
    return None


def _unrelated_report(
    runs: list[RunRecord], keys: list[str], points: int, out: Path, title: str | None
) -> dict[str, Any]:
    """The report of runs that form no grid (a few unrelated runs): a list, not a table of mostly empty cells."""
    groups = len(_group(runs, keys))
    lines = [
        f"# {title or 'Report'}",
        "",
        f"These {len(runs)} runs share no grid: they differ in {len(keys)} config keys, and only {groups} of the "
        f"{points} combinations of their values exist, so no table or plot compares them. Each run, with its test "
        "error (%) of the final epoch and the keys where the runs differ:",
        "",
    ]
    cells = []
    for r in sorted(runs, key=lambda r: r.name):
        point = {a: r.value(a) for a in keys}
        cells.append({"point": point, **_cell([r])})
        error = "-" if r.error is None else f"{r.error:.2f}"
        lines.append(f"- `{r.name}`: error {error}; " + ", ".join(f"{a}={v}" for a, v in point.items()))
    md = out / "report.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    result = {
        "axes": [],
        "columns": None,
        "differences": keys,
        "cells": cells,
        "kd_gain": [],
        "runs": [{"name": r.name, "path": str(r.path), "error": r.error} for r in runs],
    }
    js = out / "report.json"
    atomic_write_text(js, json.dumps(result, indent=2) + "\n")
    return {**result, "markdown": str(md), "json": str(js), "plots": []}


def _numeric(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _plots(runs: list[RunRecord], axes: list[str], col_axis: str | None, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for axis in axes:
        if axis == KD_AXIS:
            continue
        others = [a for a in axes if a != axis]
        xs_all = [x for x in _sort_values(list(dict.fromkeys(r.value(axis) for r in runs))) if x != NOT_APPLICABLE]
        numeric = _numeric(xs_all)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for other_key, rs in _group(runs, others).items():
            by_x = _group(rs, [axis])
            if set(by_x) == {(NOT_APPLICABLE,)}:  # runs without KD beside a sweep of a KD setting: a reference line
                errs = [r.error for r in rs if r.error is not None]
                if errs:
                    point = zip(others, other_key, strict=True)
                    rest = [f"{_axis_title(a)}={v}" for a, v in point if a != KD_AXIS and v != NOT_APPLICABLE]
                    ax.axhline(statistics.fmean(errs), color="gray", linestyle="--", label=", ".join(["no KD", *rest]))
                continue
            xs, ys, sds = [], [], []
            for i, x in enumerate(xs_all):
                errs = [r.error for r in by_x.get((x,), []) if r.error is not None]
                if errs:
                    m, s = _mean_sd(errs)
                    xs.append(numeric[i] if numeric else i)
                    ys.append(m)
                    sds.append(s)
            label = ", ".join(f"{_axis_title(a)}={v}" for a, v in zip(others, other_key, strict=True)) or "runs"
            style = "--" if dict(zip(others, other_key, strict=True)).get(KD_AXIS) == "off" else "-"
            ax.errorbar(xs, ys, yerr=sds, marker="o", linestyle=style, capsize=3, label=label)
        if not numeric:
            ax.set_xticks(range(len(xs_all)), xs_all, rotation=20)
        ax.set_xlabel(_axis_title(axis))
        ax.set_ylabel("test error (%)")
        ax.set_title(f"Test error vs {_axis_title(axis)} (mean ± sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"error_vs_{axis.replace('.', '_')}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    if any(r.history for r in runs):
        agree = any("test_agree_top1" in row for r in runs for row in r.history)
        fig, panels = plt.subplots(1, 3 if agree else 2, figsize=(16.5 if agree else 11, 4), dpi=120)
        ax_loss, ax_acc = panels[0], panels[1]
        metrics = [("loss", ax_loss), ("test_top1", ax_acc)] + ([("test_agree_top1", panels[2])] if agree else [])
        col_values = _sort_values(list(dict.fromkeys(r.value(col_axis) for r in runs))) if col_axis else [""]
        colors = plt.get_cmap("viridis")([i / max(1, len(col_values) - 1) for i in range(len(col_values))])
        for key, rs in _group(runs, axes).items():
            point = dict(zip(axes, key, strict=True))
            color = colors[col_values.index(point[col_axis])] if col_axis else None
            style = "--" if point.get(KD_AXIS) == "off" else "-"
            label = ", ".join(f"{_axis_title(a)}={v}" for a, v in point.items()) or "runs"
            for metric, axis_ in metrics:
                series: dict[int, list[float]] = {}
                for r in rs:
                    for row in r.history:
                        v = row.get("train_task_loss", row.get("train_loss")) if metric == "loss" else row.get(metric)
                        if v is not None and math.isfinite(v):
                            series.setdefault(int(row["epoch"]), []).append(float(v))
                if series:
                    epochs = sorted(series)
                    marker = "o" if metric != "loss" else None  # test points: evaluations may be epochs apart
                    values = [statistics.fmean(series[e]) for e in epochs]
                    axis_.plot(epochs, values, style, color=color, label=label, marker=marker, markersize=3)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("training cross-entropy on augmented images")
        ax_loss.set_title("Training loss (mean over seeds)")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("test top-1 accuracy (%)")
        ax_acc.set_title("Test accuracy (mean over seeds)")
        if agree:
            panels[2].set_xlabel("epoch")
            panels[2].set_ylabel("test top-1 agreement with the teacher (%)")
            panels[2].set_title("Student-teacher agreement (mean over seeds)")
        for a in panels:
            a.grid(alpha=0.3)
        ax_acc.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = out / "curves.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
