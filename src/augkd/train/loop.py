"""The training loop: set up, then per epoch train, evaluate, log, checkpoint.

Reads top to bottom like torchvision's reference trainer: :func:`setup_run` builds everything from a
:class:`~augkd.train.config.TrainConfig`, :func:`train_one_epoch` runs the optimizer, :func:`evaluate`
measures top-1/top-5/loss, :func:`train` ties them together and writes the run folder::

    <out_dir>/<name>/config.yaml      the resolved config
                     metrics.jsonl    one JSON object per epoch (and metrics.csv)
                     last.pt          everything needed to resume (atomic write)
                     best.pt          weights of the best evaluated epoch
                     summary.json     final figures
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from augkd import faults
from augkd.augment import rng
from augkd.augment.base import build_base_augment
from augkd.augment.spec import build_policy
from augkd.config import config_to_dict
from augkd.data import DeviceLoader, build_datasets, dataset_stats
from augkd.distill.loss import TopKKL
from augkd.distill.teacher import TeacherError, load_teacher
from augkd.io import atomic_write_text, remove_temp_files
from augkd.models import count_parameters, create_model
from augkd.train.checkpoint import (
    CheckpointError,
    check_run_folder,
    epoch_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
    save_training_checkpoint,
    tensor_bytes,
)
from augkd.train.config import TrainConfig
from augkd.train.guard import NonFiniteGuard, check_finite_state
from augkd.train.schedule import lr_factor
from augkd.train.task import ClassificationTask, DistillationTask

__all__ = ["Normalize", "Run", "TrainAugment", "evaluate", "resolve_amp", "resolve_device", "setup_run", "train"]

CHECKPOINT_FORMAT = "augkd-checkpoint/1"


class RunError(RuntimeError):
    """A run that cannot start or continue (existing folder, incompatible resume)."""


# ----------------------------------------------------------------------------------------------------------------
# Small building blocks


class Normalize(nn.Module):
    """uint8 images -> float32 ``(x / 255 - mean) / std`` in one fused affine step, keeping the memory format."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool = False) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, images.float(), self.scale)


class TrainAugment(nn.Module):
    """Base augmentation (crop/flip) then the policy; both pure functions of (seed, epoch, sample index).

    This is where an augmentation policy plugs into training: ``augment.policy`` in the config.
    """

    def __init__(self, base: nn.Module, policy: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.policy = policy

    def forward(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.policy(self.base(images, indices, epoch), indices, epoch)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    return torch.device(name)


def _cpu_has_bf16() -> bool:
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``mode`` on ``device`` (None: full float32).

    ``auto`` picks bf16 on CPUs with native bf16 (AVX512-BF16 or AMX) and on GPUs that support it, fp16 on
    older GPUs, and float32 elsewhere.
    """
    if mode == "off":
        return None
    if device.type == "cpu":
        if mode == "fp16":
            raise RunError("amp=fp16 needs a CUDA device; on the CPU use amp=bf16 or amp=off")
        if mode == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if _cpu_has_bf16() else None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of torch's global RNG for an epoch (dropout, stochastic depth): resuming at an epoch is exact."""
    return int(rng.key(seed, epoch, torch.zeros(1, dtype=torch.int64), slot=rng.SLOTS["epoch_seed"]).item())


# ----------------------------------------------------------------------------------------------------------------
# Setup


@dataclass
class Run:
    """Everything a run needs, built by :func:`setup_run`."""

    cfg: TrainConfig
    run_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    model: nn.Module
    ema: nn.Module | None
    task: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment: TrainAugment
    normalize: Normalize
    train_loader: DeviceLoader
    eval_loader: DeviceLoader
    classes: list[str]
    stats: dict[str, Any]
    start_epoch: int = 0
    step: int = 0
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs


def _param_groups(model: nn.Module, weight_decay: float, no_decay_bn: bool) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_bn and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The configured model (``model.name``, ``model.drop_rate``, ``model.kwargs``)."""
    kwargs = dict(cfg.model.kwargs)
    if cfg.model.drop_rate is not None:
        kwargs["drop_rate"] = cfg.model.drop_rate
    try:
        return create_model(cfg.model.name, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise RunError(f"model.kwargs {kwargs} do not fit model {cfg.model.name!r}: {exc}") from None


def build_distillation_task(
    cfg: TrainConfig, num_classes: int, device: torch.device, student_norm: tuple
) -> DistillationTask:
    """The KD task of ``cfg.kd``: the teacher checkpoint loaded frozen, the top-K KL, lambda."""
    try:
        teacher = load_teacher(cfg.kd.teacher, num_classes, device, student_norm, channels_last=cfg.channels_last)
    except (TeacherError, CheckpointError) as exc:
        raise RunError(f"kd.teacher: {exc}") from None
    kd_loss = TopKKL(cfg.kd.k, cfg.kd.temperature, cfg.kd.mode, cfg.kd.t2_scale)
    if cfg.kd.k > num_classes:
        raise RunError(f"kd.k={cfg.kd.k} is larger than the {num_classes} classes of the data")
    return DistillationTask(teacher, kd_loss, cfg.kd.lambda_, cfg.optim.label_smoothing, cfg.kd.weighting)


def setup_run(cfg: TrainConfig, resume: bool = False, quiet: bool = False, overwrite: bool = False) -> Run:
    """Build datasets, model, optimizer and loaders; restore ``last.pt`` when resuming."""
    run_dir = Path(cfg.out_dir) / cfg.name
    last = run_dir / "last.pt"
    if resume and not (last.is_file() or epoch_checkpoints(run_dir) or (run_dir / "config.yaml").is_file()):
        raise RunError(f"--resume: no checkpoint at {last}")
    if not resume and (last.exists() or epoch_checkpoints(run_dir)) and not overwrite:
        raise RunError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to "
            f"start over, or name=<other> for a new run"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp_dtype = resolve_amp(cfg.amp, device)
    torch.manual_seed(cfg.seed)

    train_set, eval_set = build_datasets(cfg.data, quiet=quiet)
    stats = dataset_stats(cfg.data)
    model = build_model(cfg, train_set.num_classes).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema.enabled:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema.decay), use_buffers=True
        )
    optimizer = torch.optim.SGD(
        _param_groups(model, cfg.optim.weight_decay, cfg.optim.no_decay_bn),
        lr=cfg.optim.lr,
        momentum=cfg.optim.momentum,
        nesterov=cfg.optim.nesterov and cfg.optim.momentum > 0,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    base = build_base_augment(
        cfg.data.base_aug,
        cfg.data.image_size,
        seed=cfg.seed,
        padding=cfg.data.crop_padding,
        scale_min=cfg.data.rrc_scale_min,
    )
    policy = build_policy(cfg.augment.policy, cfg.data.image_size, seed=cfg.seed, fill=cfg.augment.fill)
    augment = TrainAugment(base, policy).to(device)
    normalize = Normalize(stats["mean"], stats["std"], channels_last=cfg.channels_last).to(device)
    train_loader = DeviceLoader(train_set, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed, device=device)
    if len(train_loader) == 0:
        raise RunError(f"batch_size={cfg.batch_size} is larger than the {len(train_set)} training images")
    eval_loader = DeviceLoader(eval_set, cfg.eval_batch_size, shuffle=False, drop_last=False, seed=0, device=device)
    task: nn.Module = ClassificationTask(cfg.optim.label_smoothing)
    if cfg.kd.enabled:
        task = build_distillation_task(cfg, train_set.num_classes, device, (stats["mean"], stats["std"]))
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        device=device,
        amp_dtype=amp_dtype,
        model=model,
        ema=ema,
        task=task,
        optimizer=optimizer,
        scaler=scaler,
        augment=augment,
        normalize=normalize,
        train_loader=train_loader,
        eval_loader=eval_loader,
        classes=list(train_set.classes),
        stats=stats,
    )
    if resume:
        _resume(run)
    return run


def _resume(run: Run) -> None:
    """Restore the newest good checkpoint (``last.pt``, else an epoch checkpoint), saying so when it falls back."""
    found = load_latest_checkpoint(run.run_dir, map_location=run.device)
    if found is None:  # killed before its first checkpoint: nothing to lose, start from the beginning
        print(f"augkd: warning: no checkpoint in {run.run_dir} yet; starting the run from epoch 1", file=sys.stderr)
        return
    path, state, problems = found
    for problem in problems:
        print(f"augkd: warning: {problem}; resuming from {path.name} instead", file=sys.stderr)
    _restore(run, state)


def _restore(run: Run, state: dict[str, Any]) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"not an augkd training checkpoint (format={state.get('format')!r})")
    saved_model = state["config"]["model"]["name"]
    if saved_model != run.cfg.model.name:
        raise RunError(
            f"cannot resume: the checkpoint trained {saved_model!r}, the config asks for {run.cfg.model.name!r}"
        )
    run.model.load_state_dict(state["model"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = int(state["epoch"])
    run.step = int(state["step"])
    run.best_top1 = float(state.get("best_top1", -1.0))
    run.history = list(state.get("history", []))


# ----------------------------------------------------------------------------------------------------------------
# One epoch of training, evaluation


def _autocast(run_device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run_device.type, dtype=dtype)


def train_one_epoch(run: Run, epoch: int, progress: bool = True) -> dict[str, float]:
    """One pass over the training set; returns mean losses, accuracy on the augmented images and speed."""
    cfg, model = run.cfg, run.model
    model.train()
    torch.manual_seed(epoch_seed(cfg.seed, epoch))
    run.train_loader.set_epoch(epoch)
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=run.device)
    seen = 0
    guard = NonFiniteGuard(cfg.optim.nonfinite, cfg.optim.nonfinite_patience, run.device)
    t0 = time.perf_counter()
    bar = tqdm(
        run.train_loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    for i, batch in enumerate(bar):
        lr = cfg.optim.lr * lr_factor(cfg.optim, run.step, run.steps_per_epoch, run.total_steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            images = run.normalize(run.augment(batch.images, batch.indices, epoch))
        with _autocast(run.device, run.amp_dtype):
            out = run.task(model, images, batch.labels, batch.indices, epoch)
        loss = out["loss"]
        if not guard.step_ok(loss, epoch, run.step):  # NaN/Inf loss with optim.nonfinite=skip: no update
            run.step += 1
            continue
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.ema is not None:
            run.ema.update_parameters(model)
        run.step += 1
        if faults.armed("kill_at_step", run.step):
            faults.kill_now()
        n = batch.labels.numel()
        seen += n
        for key, value in out.items():
            if key.endswith("loss"):
                sums[key] = sums.get(key, 0.0) + value.detach().float() * n
        correct += (out["output"].argmax(1) == batch.labels).sum()
        if progress and (i % 10 == 0 or i == len(run.train_loader) - 1):
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    elapsed = time.perf_counter() - t0
    guard.check()
    check_finite_state({"model": model, "ema": run.ema}, epoch)
    if seen == 0:
        raise RunError(f"epoch {epoch + 1}: every step had a non-finite loss (optim.nonfinite=skip)")
    stats = {f"train_{k}": (v / seen).item() for k, v in sums.items()}
    if not all(math.isfinite(v) for v in stats.values()):
        raise RunError(f"epoch {epoch + 1}: the training loss is not finite ({stats}); lower optim.lr?")
    stats.update(train_top1=100.0 * correct.item() / seen, lr=lr, train_time_s=elapsed, images_per_s=seen / elapsed)
    if cfg.optim.nonfinite == "skip":
        stats["nonfinite_skipped"] = guard.skipped
    return stats


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    normalize: nn.Module,
    amp_dtype: torch.dtype | None = None,
    flip: bool = False,
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy over a loader (optionally averaging a mirrored view)."""
    was_training = model.training
    model.eval()
    device = normalize.scale.device
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    n = 0
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, file=sys.stderr):
        images = normalize(batch.images)
        with _autocast(device, amp_dtype):
            logits = model(images).float()
            if flip:
                logits = 0.5 * (logits + model(images.flip(3)).float())
        loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk == batch.labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        n += batch.labels.numel()
    model.train(was_training)
    return {"top1": 100.0 * top1.item() / n, "top5": 100.0 * top5.item() / n, "loss": loss_sum.item() / n, "n": n}


# ----------------------------------------------------------------------------------------------------------------
# Logging and checkpoints


def _run_info(run: Run, epoch: int) -> dict[str, Any]:
    """What every checkpoint carries besides weights: enough to rebuild the model and read its outputs."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,  # number of finished epochs
        "step": run.step,
        "config": config_to_dict(run.cfg),
        "classes": run.classes,
        "normalize": {"mean": list(run.stats["mean"]), "std": list(run.stats["std"])},
        "best_top1": run.best_top1,
        "torch_version": str(torch.__version__),
    }


def _checkpoint_state(run: Run, epoch: int) -> dict[str, Any]:
    """``last.pt``: everything needed to resume."""
    return {
        **_run_info(run, epoch),
        "model": run.model.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "history": run.history,
    }


def _weights_state(run: Run, epoch: int, weights: dict[str, torch.Tensor], metrics: dict[str, Any]) -> dict:
    """``best.pt``: the weights of the best evaluated epoch (the raw model's or the EMA's) and its metrics."""
    return {**_run_info(run, epoch), "model": weights, "metrics": metrics}


def _log_metrics(run: Run, row: dict[str, Any]) -> None:
    run.history.append(row)
    atomic_write_text(run.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
    keys = list(dict.fromkeys(k for r in run.history for k in r))  # every column, in first-seen order
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(run.history)
    atomic_write_text(run.run_dir / "metrics.csv", buf.getvalue())


def _report_bad_files(run: Run, log: Any) -> None:
    """With ``data.bad_files=skip``: every image left out, by path and reason, in ``bad_files.txt`` and one line."""
    bad = [(p, r) for loader in (run.train_loader, run.eval_loader) for p, r in loader.dataset.skipped]
    if not bad:
        return
    report = run.run_dir / "bad_files.txt"
    atomic_write_text(report, "".join(f"{p}\t{r}\n" for p, r in bad))
    first = f"{bad[0][0]} ({bad[0][1]})"
    log(f"augkd train: left out {len(bad)} unreadable image(s) (data.bad_files=skip), e.g. {first}; all in {report}")


def _fmt_epoch(row: dict[str, Any], epochs: int) -> str:
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


# ----------------------------------------------------------------------------------------------------------------
# The whole run


def train(
    cfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Train ``cfg`` to the end (or continue it with ``resume``); returns the summary written to summary.json."""
    run = setup_run(cfg, resume=resume, quiet=quiet, overwrite=overwrite)
    # Fail now, not after the first epoch, when the folder cannot take the checkpoints (read-only, full disk).
    check_run_folder(run.run_dir, (cfg.checkpoint.keep_last + 2) * 3 * tensor_bytes(run.model.state_dict()))
    remove_temp_files(run.run_dir)  # left by a killed write; the files they were meant to replace are intact
    _report_bad_files(run, log)  # even when quiet: the user must know what was left out
    atomic_write_text(run.run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    n_params = count_parameters(run.model)
    progress = not quiet and sys.stderr.isatty() and not os.environ.get("CI")
    if not quiet:
        log(
            f"augkd train: {cfg.model.name} ({n_params / 1e6:.2f}M params), {len(run.train_loader.dataset)} train / "
            f"{len(run.eval_loader.dataset)} eval images, {run.train_loader.dataset.num_classes} classes, "
            f"{cfg.epochs} epochs on {run.device}"
            + (f" ({str(run.amp_dtype).replace('torch.', '')} autocast)" if run.amp_dtype else "")
            + f", policy {cfg.augment.policy!r}"
            + (
                f", KD from {cfg.kd.teacher} (K={cfg.kd.k}, lambda={cfg.kd.lambda_}, T={cfg.kd.temperature})"
                if cfg.kd.enabled
                else ""
            )
            + f" -> {run.run_dir}"
        )
        if resume and run.step:
            log(f"resuming after epoch {run.start_epoch} (step {run.step})")
    t_start = time.perf_counter() - (run.history[-1]["elapsed_s"] if run.history else 0.0)
    for epoch in range(run.start_epoch, cfg.epochs):
        row: dict[str, Any] = {"epoch": epoch + 1, "step": 0}
        row.update(train_one_epoch(run, epoch, progress=progress))
        row["step"] = run.step
        last_epoch = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            res = evaluate(run.model, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
            row.update({f"test_{k}": v for k, v in res.items() if k != "n"})
            if run.ema is not None:
                res_ema = evaluate(run.ema.module, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
                row.update({f"ema_{k}": v for k, v in res_ema.items() if k != "n"})
        row["elapsed_s"] = time.perf_counter() - t_start
        _log_metrics(run, row)
        if "test_top1" in row:
            candidates = [("model", row["test_top1"])]
            if run.ema is not None:
                candidates.append(("ema", row["ema_top1"]))
            which, top1 = max(candidates, key=lambda c: c[1])
            if top1 > run.best_top1:
                run.best_top1 = top1
                weights = (run.ema.module if which == "ema" else run.model).state_dict()
                save_checkpoint(run.run_dir / "best.pt", _weights_state(run, epoch + 1, weights, row))
        save_training_checkpoint(run.run_dir, _checkpoint_state(run, epoch + 1), epoch + 1, cfg.checkpoint.keep_last)
        if not quiet:
            log(_fmt_epoch(row, cfg.epochs))
    final = run.history[-1] if run.history else {}
    summary = {
        "name": cfg.name,
        "model": cfg.model.name,
        "params": n_params,
        "policy": cfg.augment.policy,
        "kd": {
            "teacher": cfg.kd.teacher,
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
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "run_dir": str(run.run_dir),
    }
    atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not quiet:
        log(
            f"done: top1 {summary['final_top1']:.2f}% (best {run.best_top1:.2f}%) in {summary['wall_time_s']:.0f}s; "
            f"summary in {run.run_dir / 'summary.json'}"
        )
    return summary
