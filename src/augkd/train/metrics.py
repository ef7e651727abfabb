"""What a run writes besides checkpoints: the per-epoch metrics (through log sinks), the epoch line, the summary
and the list of unreadable images.

A log sink is a :class:`LogSink`: ``epoch(history)`` after each epoch with the whole history (one dict per epoch),
``step(step, scalars)`` every ``log.every_steps`` optimizer steps, ``close()`` at the end. :data:`LOG_SINKS` maps a
name to the sink's opener ``(run, resume_step) -> LogSink | None`` (None: this run does not use the sink); rank 0
opens them all (:func:`open_sinks`). A new sink is a row in that registry.
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

#: The test-set agreement figures the summary carries (``final_agree_top1``, ...).
AGREEMENT = ("agree_top1", "agree_top5", "teacher_kl")

__all__ = [
    "LOG_SINKS",
    "LogSink",
    "close_sinks",
    "format_epoch",
    "format_start",
    "log_metrics",
    "log_step",
    "open_sinks",
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


class LogSink:
    """Where a run's metrics go (see the module docstring); ``step`` and ``close`` do nothing unless overridden."""

    def epoch(self, history: list[dict[str, Any]]) -> None:
        """Write the whole history (one dict per finished epoch)."""
        raise NotImplementedError

    def step(self, step: int, scalars: dict[str, float]) -> None:
        """Record ``scalars`` (``loss``, ``lr``, ``images_per_s``) at optimizer step ``step`` (1-based)."""

    def close(self) -> None:
        """Flush and release what the sink holds."""


class FileSink(LogSink):
    """A sink that rewrites one file from the history after each epoch (atomically: a kill never leaves half)."""

    def __init__(self, run_dir: Path, write: Callable[[Path, list[dict[str, Any]]], None]) -> None:
        self.run_dir, self.write = run_dir, write

    def epoch(self, history: list[dict[str, Any]]) -> None:
        self.write(self.run_dir, history)


class TensorBoardSink(LogSink):
    """TensorBoard events in ``<run>/tensorboard``: per-step ``train/loss``, ``train/lr``, ``train/images_per_s``
    and every numeric entry of each epoch's row (``epoch/<key>``, at the epoch's last step).

    A resumed run opens the stream with ``purge_step`` = the first step it will take, so TensorBoard drops what a
    killed epoch had written past the checkpoint and the curves continue without duplicates; each epoch row is
    written once (epochs the history already held when the sink opened are not repeated).
    """

    def __init__(self, run_dir: Path, resume_step: int, epochs_done: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "log.tensorboard=true needs the tensorboard package: pip install 'augkd[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        self.written = epochs_done

    def step(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def epoch(self, history: list[dict[str, Any]]) -> None:
        for row in history[self.written :]:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, int | float) and not isinstance(value, bool):
                    self.writer.add_scalar(f"epoch/{key}", value, row["step"])
        self.written = len(history)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _tensorboard(run: Run, resume_step: int) -> LogSink | None:
    if not run.cfg.log.tensorboard:
        return None
    return TensorBoardSink(run.run_dir, resume_step, len(run.history))


#: name -> ``(run, resume_step) -> LogSink | None`` (None: not used by this run), opened on rank 0.
LOG_SINKS: Registry[Callable[[Run, int], LogSink | None]] = Registry(
    "log sink",
    {
        "jsonl": lambda run, resume_step: FileSink(run.run_dir, _write_jsonl),
        "csv": lambda run, resume_step: FileSink(run.run_dir, _write_csv),
        "tensorboard": _tensorboard,
    },
)


def open_sinks(run: Run) -> list[LogSink]:
    """Open every sink of :data:`LOG_SINKS` the run uses (rank 0 only), continuing after ``run.step``."""
    if not run.env.is_main:
        return []
    sinks = [opener(run, run.step) for opener in LOG_SINKS.values()]
    return [sink for sink in sinks if sink is not None]


def close_sinks(run: Run) -> None:
    for sink in run.sinks:
        sink.close()
    run.sinks = []


def log_metrics(run: Run, row: dict[str, Any]) -> None:
    """Add an epoch's ``row`` to the run's history and hand the history to every log sink."""
    run.history.append(row)
    for sink in run.sinks:
        sink.epoch(run.history)


def log_step(run: Run, step: int, scalars: dict[str, float]) -> None:
    """Hand one step's scalars to every sink."""
    for sink in run.sinks:
        sink.step(step, scalars)


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
    if "train_agree_top1" in row:
        parts.append(f"agree {row['train_agree_top1']:.1f}%")
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
        + (
            f", mixup {cfg.augment.mixup:g} / cutmix {cfg.augment.cutmix:g} (p={cfg.augment.mix_prob:g})"
            if cfg.augment.mixes
            else ""
        )
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
    from augkd.train.build import amp_name  # here, not at the top: this module stays free of torch

    cfg = run.cfg
    final = run.history[-1] if run.history else {}
    return {
        "name": cfg.name,
        "model": cfg.model.name,
        "params": n_params,
        "policy": cfg.augment.spec(),
        "off_last_epochs": cfg.augment.off_last_epochs,
        "mix": {
            "mixup": cfg.augment.mixup,
            "cutmix": cfg.augment.cutmix,
            "prob": cfg.augment.mix_prob,
            "switch_prob": cfg.augment.mix_switch_prob,
        }
        if cfg.augment.mixes
        else None,
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
        **{f"final_{k}": final[f"test_{k}"] for k in AGREEMENT if f"test_{k}" in final},
        "best_top1": run.best_top1,
        "wall_time_s": final.get("elapsed_s"),
        "device": str(run.device),
        "world_size": run.env.world_size,
        "amp": amp_name(run.amp_dtype),
        "run_dir": str(run.run_dir),
    }
