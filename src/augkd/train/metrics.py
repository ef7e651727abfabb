"""What a run writes besides checkpoints: the per-epoch metrics (through log sinks), the epoch line, the summary
and the list of unreadable images.

A log sink is a function ``(run_dir, history) -> None`` that writes the whole history (one dict per epoch) where it
belongs, atomically; every sink in :data:`LOG_SINKS` is called after each epoch. A new sink (TensorBoard, say) is a
row in that registry.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augkd.io import atomic_write_text
from augkd.registry import Registry

if TYPE_CHECKING:
    from augkd.train.run import Run

__all__ = [
    "LOG_SINKS",
    "format_epoch",
    "format_start",
    "log_metrics",
    "report_bad_files",
    "run_summary",
    "write_summary",
]


def _write_jsonl(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON object per epoch."""
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _write_csv(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per epoch, every column any epoch had, in first-seen order."""
    keys = list(dict.fromkeys(k for r in history for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


#: name -> ``(run_dir, history) -> None``, each called after every epoch.
LOG_SINKS: Registry[Callable[[Path, list[dict[str, Any]]], None]] = Registry(
    "log sink", {"jsonl": _write_jsonl, "csv": _write_csv}
)


def log_metrics(run: Run, row: dict[str, Any]) -> None:
    """Add an epoch's ``row`` to the run's history and hand the history to every log sink."""
    run.history.append(row)
    for sink in LOG_SINKS.values():
        sink(run.run_dir, run.history)


def report_bad_files(run: Run, log: Any) -> None:
    """With ``data.bad_files=skip``: every image left out, by path and reason, in ``bad_files.txt`` and one line."""
    # In-memory datasets know their bad files up front; the stream loader finds them while it reads (so this is
    # called again at the end of the run).
    found = [
        (p, r)
        for loader in (run.train_loader, run.eval_loader)
        for p, r in [*getattr(loader.dataset, "skipped", []), *getattr(loader, "skipped", [])]
    ]
    bad = list(dict.fromkeys(found))
    if not bad or bad == run.reported_bad_files:
        return
    run.reported_bad_files = bad
    report = run.run_dir / "bad_files.txt"
    atomic_write_text(report, "".join(f"{p}\t{r}\n" for p, r in bad))
    first = f"{bad[0][0]} ({bad[0][1]})"
    log(f"augkd train: left out {len(bad)} unreadable image(s) (data.bad_files=skip), e.g. {first}; all in {report}")


def format_epoch(row: dict[str, Any], epochs: int) -> str:
    """The line printed after an epoch."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if "train_kd_loss" in row:
        parts.append(f"kd {row['train_kd_loss']:.4f}")
    if "test_top1" in row:
        parts.append(f"test top1 {row['test_top1']:.2f}% top5 {row['test_top5']:.2f}%")
    if "ema_top1" in row:
        parts.append(f"ema top1 {row['ema_top1']:.2f}%")
    parts.append(f"{row['images_per_s']:.0f} img/s")
    parts.append(f"{row['elapsed_s']:.0f}s")
    return " | ".join(parts)


def format_start(run: Run, n_params: int) -> str:
    """The line printed before the first epoch: what trains on what, how."""
    cfg, env = run.cfg, run.env
    return (
        f"augkd train: {cfg.model.name} ({n_params / 1e6:.2f}M params), {len(run.train_loader.dataset)} train / "
        f"{len(run.eval_loader.dataset)} eval images, {run.train_loader.dataset.num_classes} classes, "
        f"{cfg.epochs} epochs on {run.device}"
        + (f" ({str(run.amp_dtype).replace('torch.', '')} autocast)" if run.amp_dtype else "")
        + f", policy {cfg.augment.spec()!r}"
        + (f" (off for the last {cfg.augment.off_last_epochs} epochs)" if cfg.augment.off_last_epochs else "")
        + (f", {env.world_size} processes x batch {cfg.batch_size // env.world_size}" if env.enabled else "")
        + (
            f", KD from {cfg.kd.cache or cfg.kd.teacher} "
            f"(K={cfg.kd.k}, lambda={cfg.kd.lambda_}, T={cfg.kd.temperature})"
            if cfg.kd.enabled
            else ""
        )
        + f" -> {run.run_dir}"
    )


def write_summary(run: Run, n_params: int) -> dict[str, Any]:
    """Write ``summary.json`` (:func:`run_summary`) atomically and return it."""
    summary = run_summary(run, n_params)
    atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def run_summary(run: Run, n_params: int) -> dict[str, Any]:
    """``summary.json``: the run's final figures and what produced them."""
    cfg = run.cfg
    final = run.history[-1] if run.history else {}
    return {
        "name": cfg.name,
        "model": cfg.model.name,
        "params": n_params,
        "policy": cfg.augment.spec(),
        "off_last_epochs": cfg.augment.off_last_epochs,
        "kd": {
            "teacher": cfg.kd.teacher,
            "cache": cfg.kd.cache,
            "k": cfg.kd.k,
            "lambda": cfg.kd.lambda_,
            "temperature": cfg.kd.temperature,
            "mode": cfg.kd.mode,
        }
        if cfg.kd.enabled
        else None,
        "epochs": cfg.epochs,
        "train_images": len(run.train_loader.dataset),
        "eval_images": len(run.eval_loader.dataset),
        "final_top1": final.get("test_top1"),
        "final_top5": final.get("test_top5"),
        "final_error": None if final.get("test_top1") is None else round(100.0 - final["test_top1"], 4),
        "best_top1": run.best_top1,
        "wall_time_s": final.get("elapsed_s"),
        "device": str(run.device),
        "world_size": run.env.world_size,
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "run_dir": str(run.run_dir),
    }
