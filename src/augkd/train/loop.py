"""The training loop: set up, then per epoch train, evaluate, log, checkpoint.

Reads top to bottom like torchvision's reference trainer: :func:`setup_run` builds everything from a
:class:`~augkd.train.config.TrainConfig`, :func:`train_one_epoch` runs the optimizer, :func:`evaluate`
measures top-1/top-5/loss, :func:`train` ties them together and writes the run folder::

    <out_dir>/<name>/config.yaml      the resolved config
                     metrics.jsonl    one JSON object per epoch (and metrics.csv)
                     last.pt          everything needed to resume (atomic write)
                     best.pt          weights of the best evaluated epoch
                     summary.json     final figures
                     config_history.jsonl  what each ``--resume`` changed (epochs, evaluation, ...), if anything

What the loop uses lives in modules named for it: the assembly of a run (:mod:`augkd.train.build`), the run
state (:mod:`augkd.train.run`), the metrics writers (:mod:`augkd.train.metrics`), the checkpoint schema
(:mod:`augkd.models.checkpoint`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from augkd import faults
from augkd.augment import rng
from augkd.checkpoint import (
    check_run_folder,
    epoch_checkpoints,
    save_checkpoint,
    save_training_checkpoint,
    tensor_bytes,
)
from augkd.config import ConfigError, config_to_dict, describe_changes
from augkd.data import DeviceLoader, InMemoryDataset
from augkd.data.loader import Batch
from augkd.distill.loss import AGREEMENT_KEYS, agreement, teacher_top_k
from augkd.io import atomic_write_text, remove_temp_files
from augkd.lock import FolderLock, LockError
from augkd.models import count_parameters
from augkd.models.build import build_model
from augkd.models.checkpoint import RunCheckpoint, class_mismatch, read_latest_run_checkpoint, run_info, training_state
from augkd.train import distributed
from augkd.train.build import (
    RunError,
    amp_name,
    build_components,
    build_ema,
    build_reference,
    build_task,
    resolve_device,
)
from augkd.train.config import RESUME_MAY_CHANGE, TrainConfig, changed_keys, read_saved_config
from augkd.train.distributed import DistEnv
from augkd.train.guard import NonFiniteGuard, check_finite_state
from augkd.train.metrics import (
    close_sinks,
    format_epoch,
    format_start,
    log_metrics,
    log_step,
    open_sinks,
    report_bad_files,
    run_summary,
    write_summary,
)
from augkd.train.optim import build_optimizer
from augkd.train.run import Run
from augkd.train.schedule import lr_factor

__all__ = [
    "CONFIG_HISTORY",
    "EvalMemo",
    "Run",
    "RunError",
    "check_resume_config",
    "evaluate",
    "setup_run",
    "train",
    "train_one_epoch",
]

#: In the run folder: one JSON line per ``--resume`` that changed the config (``config.yaml`` holds the newest).
CONFIG_HISTORY = "config_history.jsonl"


# ----------------------------------------------------------------------------------------------------------------
# Setup


def busy_cpu_note(threads: int) -> str | None:
    """A hint when other processes keep the CPU busy and torch will use one thread per core."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    if threads or cores == 1 or load <= cores:
        return None
    return (
        f"augkd: note: the CPU is busy (load average {load:.1f} on {cores} cores); threads=1 is often faster on a "
        "shared CPU (results/shared-cpu/README.md)"
    )


def setup_run(
    cfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    *,
    env: DistEnv | None = None,
    datasets: tuple[InMemoryDataset, InMemoryDataset] | None = None,
) -> Run:
    """Build datasets, model, optimizer and loaders; restore ``last.pt`` when resuming.

    Args:
        cfg: the run's config.
        resume: restore ``<out_dir>/<name>/last.pt``.
        quiet: no progress bars while decoding data.
        overwrite: allow a run folder that already holds a run.
        env: this rank's place in a distributed run (from :func:`augkd.train.distributed.init`); the loaders
            shard each global batch by sample index and the training model is wrapped in DDP.
        datasets: ``(train, eval)`` to use instead of building ``cfg.data`` (dry runs, calibration).
    """
    env = env or DistEnv()
    if env.enabled and cfg.optim.nonfinite == "skip":
        raise RunError("optim.nonfinite=skip is not supported under DDP (the ranks would have to agree); use error")
    run_dir = Path(cfg.out_dir) / cfg.name
    last = run_dir / "last.pt"
    if resume and not (last.is_file() or epoch_checkpoints(run_dir) or (run_dir / "config.yaml").is_file()):
        raise RunError(f"--resume: no checkpoint at {last}")
    if not resume and (last.exists() or epoch_checkpoints(run_dir)) and not overwrite:
        raise RunError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it, --overwrite to "
            f"start over, or name=<other> for a new run"
        )
    if resume and (run_dir / "config.yaml").is_file():  # before the data is built: fail in a second, not minutes
        check_resume_config(_read_saved_config(run_dir / "config.yaml"), cfg, run_dir)
    parts = build_components(cfg, env=env, datasets=datasets, quiet=quiet)
    device, amp_dtype, train_set = parts.device, parts.amp_dtype, parts.train_set
    # The initial weights come from their own named stream, reseeded here: decoding the data (a DataLoader draws
    # from the global RNG) or anything else that ran before cannot change them.
    rng.seed_global_stream(cfg.seed, "init")
    say = (lambda line: print(line, file=sys.stderr)) if env.is_main and not quiet else None
    model = build_model(cfg.model, train_set.num_classes, init_weights=True, download=cfg.data.download, log=say)
    model = model.to(device)
    if cfg.sync_bn:
        model = distributed.convert_sync_bn(model, env, device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = build_ema(cfg, model)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    task = build_task(cfg, parts)
    left_out = len(train_set) % cfg.batch_size
    notes = [busy_cpu_note(cfg.threads)] if device.type == "cpu" else []
    if left_out * 10 >= len(train_set):  # a drop the user would not guess
        notes.append(
            f"augkd: note: {len(train_set)} training images make {len(train_set) // cfg.batch_size} full batches of "
            f"{cfg.batch_size}; each epoch leaves out {left_out} of them (a different random {left_out})"
        )
    for note in notes if env.is_main and not quiet else []:
        if note:
            print(note, file=sys.stderr)
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
        pipeline=parts.pipeline,
        train_loader=parts.train_loader,
        eval_loader=parts.eval_loader,
        classes=list(train_set.classes),
        stats=parts.stats,
        env=env,
    )
    run.reference = build_reference(cfg, parts, task)
    if resume:
        _resume(run)
    if env.enabled:
        run.train_model = distributed.wrap(model, env, device)  # after restoring: every rank holds the same weights
    return run


def _resume(run: Run) -> None:
    """Restore the newest good checkpoint (``last.pt``, else an epoch checkpoint), saying so when it falls back."""
    found = read_latest_run_checkpoint(run.run_dir, map_location=run.device)
    if found is None:  # killed before its first checkpoint: nothing to lose, start from the beginning
        print(f"augkd: warning: no checkpoint in {run.run_dir} yet; starting the run from epoch 1", file=sys.stderr)
        return
    ckpt, problems = found
    for problem in problems:
        print(f"augkd: warning: {problem}; resuming from {ckpt.path.name} instead", file=sys.stderr)
    _restore(run, ckpt)


def _read_saved_config(path: Path) -> dict[str, Any]:
    try:
        return read_saved_config(path)
    except ConfigError as exc:
        raise RunError(f"--resume: {exc}") from None


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The changes ``cfg`` makes to a run's saved config that ``--resume`` allows (:data:`RESUME_MAY_CHANGE`).

    Raises:
        RunError: a change to what the finished epochs were trained with (seed, data, model, batch, augmentation,
            KD, optimizer or schedule), naming the keys.
    """
    refused, allowed = changed_keys(saved, cfg, RESUME_MAY_CHANGE)
    if refused:
        raise RunError(
            f"cannot resume {run_dir}: the config changes what its finished epochs were trained with "
            f"({describe_changes(refused)}); --resume may change only the epoch count, evaluation, device, "
            f"precision, threads and logging. Start a new run with name=<other>, or pass the old values"
        )
    return allowed


def _restore(run: Run, ckpt: RunCheckpoint) -> None:
    if ckpt.model_config.name != run.cfg.model.name:
        raise RunError(
            f"cannot resume: the checkpoint trained {ckpt.model_config.name!r}, the config asks for "
            f"{run.cfg.model.name!r}"
        )
    run.config_changes = check_resume_config(ckpt.config, run.cfg, run.run_dir)
    before, now = ckpt.state.get("precision"), _precision(run)
    if before and before != now:  # amp=auto / device=auto resolve by machine: the same text, another precision
        run.config_changes["precision (resolved)"] = (before, now)
        print(
            f"augkd: warning: {ckpt.path.name} trained in {before}, the epochs to come train in {now} "
            f"(amp={run.cfg.amp}, device={run.cfg.device}); pass amp=off or amp=bf16 to keep one precision",
            file=sys.stderr,
        )
    problem = class_mismatch(ckpt.classes, run.classes)
    if problem:
        raise RunError(f"cannot resume: the checkpoint was trained on other classes than the data has ({problem})")
    ckpt.load_weights(run.model)
    if run.ema is not None and ckpt.state.get("ema") is not None:
        ckpt.load_weights(run.ema, "ema")
    run.optimizer.load_state_dict(ckpt.state["optimizer"])
    if ckpt.state.get("scaler"):
        run.scaler.load_state_dict(ckpt.state["scaler"])
    run.start_epoch = ckpt.epoch
    run.step = ckpt.step
    run.best_top1 = float(ckpt.state.get("best_top1", -1.0))
    run.history = list(ckpt.state.get("history", []))


# ----------------------------------------------------------------------------------------------------------------
# One epoch of training, evaluation


def _append_config_history(run: Run) -> None:
    """One JSON line per resume that changed the config: after which epoch, and each key's old and new value."""
    entry = {
        "resumed_after_epoch": run.start_epoch,
        "step": run.step,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "changes": {k: [old, new] for k, (old, new) in run.config_changes.items()},
    }
    path = run.run_dir / CONFIG_HISTORY
    old = path.read_text() if path.is_file() else ""
    atomic_write_text(path, old + json.dumps(entry) + "\n")


def _autocast(run_device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(run_device.type, dtype=dtype)


def _stand_in_batch(run: Run, empty: Batch) -> Batch:
    """One black image of the first sample id, for a rank left with an empty batch (see train_one_epoch)."""
    images = torch.zeros((1, *empty.images.shape[1:]), dtype=torch.uint8, device=empty.images.device)
    ids = run.train_loader.dataset.sample_ids[:1].to(empty.indices.device)
    return Batch(images, torch.zeros(1, dtype=empty.labels.dtype, device=empty.labels.device), ids)


def train_one_epoch(run: Run, epoch: int, progress: bool = True) -> dict[str, float]:
    """One pass over the training set; returns mean losses, accuracy on the augmented images and speed.

    In a distributed run every rank passes over its shard and the returned figures are over all ranks.
    """
    cfg = run.cfg
    model = run.train_model if run.train_model is not None else run.model
    model.train()
    rng.seed_global_stream(cfg.seed, "epoch_seed", epoch, run.env.rank)  # dropout, Shake-Shake: replayable per epoch
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=run.device)
    seen = 0
    guard = NonFiniteGuard(cfg.optim.nonfinite, cfg.optim.nonfinite_patience, run.device)
    t0 = time.perf_counter()
    mark = (t0, 0)  # time and images at the last per-step record
    bar = tqdm(
        run.pipeline.batches(run.train_loader, epoch),  # augmented and normalized, as the teacher cache sees them
        total=len(run.train_loader),
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
        # A rank whose share of this batch was all unreadable files (stream loader, bad_files=skip, DDP) still
        # takes the step with the others: a stand-in image through the model in eval mode, with a zero loss, so
        # the gradient all-reduce pairs up and this rank adds nothing to it or to the epoch's figures.
        idle = batch.labels.numel() == 0
        if idle:
            batch = run.pipeline(_stand_in_batch(run, batch), epoch, run.train_loader)
            model.eval()
        with _autocast(run.device, run.amp_dtype):
            out = run.task(model, batch.images, batch.labels, batch.indices, epoch, batch.targets)
        if idle:
            model.train()
            out = {k: v * 0.0 if k.endswith("loss") else v for k, v in out.items()}
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
            run.ema.update_parameters(run.model)
        run.step += 1
        if faults.armed("kill_at_step", run.step):
            faults.kill_now()
        if faults.armed("raise_at_step", run.step):
            faults.raise_now("raise_at_step", run.step)
        n = 0 if idle else batch.labels.numel()
        seen += n
        for key, value in out.items():
            if key.endswith("loss") or key in AGREEMENT_KEYS:
                sums[key] = sums.get(key, 0.0) + value.detach().float() * n
        if not idle:
            correct += (out["output"].argmax(1) == batch.labels).sum()  # the dominant label of a mixed image
        if run.sinks and run.step % cfg.log.every_steps == 0:
            now = time.perf_counter()
            speed = (seen - mark[1]) / max(now - mark[0], 1e-9)
            log_step(run, run.step, {"loss": loss.item(), "lr": lr, "images_per_s": speed})
            mark = (now, seen)
        if progress and (i % 10 == 0 or i == len(run.train_loader) - 1):
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{seen / max(elapsed, 1e-9):.0f}")
    if run.env.enabled:  # sums over every rank's shard: the figures of the global batches
        keys = sorted(sums)
        totals = distributed.all_reduce_sum(
            torch.stack([*(sums[k] for k in keys), correct.float(), torch.tensor(float(seen), device=run.device)])
        )
        sums, correct, seen = dict(zip(keys, totals[: len(keys)])), totals[-2], int(totals[-1].item())
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


_EVAL_PASSES = itertools.count(1)  # evaluation passes of this process, for AUGKD_FAULT=kill_in_eval:<n>


class EvalMemo:
    """A frozen reference's logits on the evaluation set, kept from a run's first evaluation for the next ones.

    The evaluation loader gives the same images in the same batches at every pass (dataset order, no augmentation)
    and the reference (the KD teacher, or ``eval.reference``) never trains, so its logits on batch ``i`` are the
    same at every evaluation of a run: its forward pass over the test set is paid once per process, not at every
    evaluation. The logits stay on the device while they fit in ``budget`` bytes (10,000 test images of 100
    classes take 4 MB); past it the memo lets them go, and every pass computes them again.
    """

    def __init__(self, budget: int = 256 * 2**20) -> None:
        self.budget, self.used, self.full = budget, 0, False
        self._logits: dict[int, torch.Tensor] = {}

    def get(self, batch: int, rows: int) -> torch.Tensor | None:
        """The stored logits of batch number ``batch`` (None if not stored, or stored for another size)."""
        logits = self._logits.get(batch)
        return logits if logits is not None and logits.shape[0] == rows else None

    def put(self, batch: int, logits: torch.Tensor) -> None:
        if self.full:
            return
        size = logits.numel() * logits.element_size()
        if self.used + size > self.budget:
            self._logits.clear()
            self.used, self.full = 0, True
            return
        self._logits[batch] = logits
        self.used += size


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    normalize: nn.Module,
    amp_dtype: torch.dtype | None = None,
    flip: bool = False,
    progress: bool = False,
    reference: nn.Module | None = None,
    memo: EvalMemo | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (%) and mean cross-entropy over a loader (optionally averaging a mirrored view).

    With a ``reference`` (a teacher: normalized images in, logits out) also the student's agreement with it, on the
    same view(s): ``agree_top1``, ``agree_top5`` (%), ``teacher_kl`` (the full KL at T = 1), see
    :func:`~augkd.distill.loss.agreement`. ``memo`` keeps the reference's logits for the run's next evaluations
    (same loader, same ``flip``).
    """
    was_training = model.training
    model.eval()
    device = normalize.scale.device
    loss_sum = torch.zeros((), device=device)
    top1 = torch.zeros((), device=device)
    top5 = torch.zeros((), device=device)
    agree = torch.zeros(len(AGREEMENT_KEYS), device=device, dtype=torch.float64)
    n = 0
    pass_number = next(_EVAL_PASSES)
    for i, batch in enumerate(tqdm(loader, desc="eval", disable=not progress, leave=False, file=sys.stderr)):
        if faults.armed("kill_in_eval", pass_number):
            faults.kill_now()
        images = normalize(batch.images)
        ref = memo.get(i, len(images)) if memo is not None and reference is not None else None
        with _autocast(device, amp_dtype):
            logits = model(images).float()
            if flip:
                logits = 0.5 * (logits + model(images.flip(3)).float())
            if reference is not None and ref is None:
                ref = reference(images).float()
                if flip:
                    ref = 0.5 * (ref + reference(images.flip(3)).float())
                if memo is not None:
                    memo.put(i, ref)
        if reference is not None:
            figures = agreement(logits, teacher_top_k(ref, ref.shape[1], 1.0))
            agree += torch.stack([figures[k].double().sum() for k in AGREEMENT_KEYS])
        loss_sum += nn.functional.cross_entropy(logits, batch.labels, reduction="sum")
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk == batch.labels[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        n += batch.labels.numel()
    model.train(was_training)
    if loader.world_size > 1:  # each rank evaluated its shard of the set: add up the shards
        totals = distributed.all_reduce_sum(
            torch.cat([torch.stack([loss_sum, top1, top5, torch.tensor(float(n), device=device)]), agree.float()])
        )
        loss_sum, top1, top5, n = totals[0], totals[1], totals[2], int(totals[3].item())
        agree = totals[4:].double()
    out = {"top1": 100.0 * top1.item() / n, "top5": 100.0 * top5.item() / n, "loss": loss_sum.item() / n, "n": n}
    if reference is not None:
        out.update({k: v / n for k, v in zip(AGREEMENT_KEYS, agree.tolist())})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints (the schema: augkd.models.checkpoint)


def _run_info(run: Run, epoch: int) -> dict[str, Any]:
    cfg, stats = config_to_dict(run.cfg), run.stats
    return run_info(
        epoch=epoch,
        step=run.step,
        config=cfg,
        classes=run.classes,
        mean=stats["mean"],
        std=stats["std"],
        best_top1=run.best_top1,
    ) | {"precision": _precision(run)}


def _precision(run: Run) -> str:
    """What ``device`` and ``amp`` resolved to for this process: ``"cpu float32"``, ``"cuda bfloat16"``."""
    return f"{run.device.type} {amp_name(run.amp_dtype) if run.amp_dtype else 'float32'}"


# ----------------------------------------------------------------------------------------------------------------
# The whole run


def train(
    cfg: TrainConfig,
    resume: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    log: Any = print,
) -> dict[str, Any]:
    """Train ``cfg`` to the end (or continue it with ``resume``); returns the summary written to summary.json.

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), every process calls this: it joins the process group, trains
    its shard of each global batch under DDP, and only rank 0 prints and writes the run folder.
    """
    env, _ = distributed.init(resolve_device(cfg.device))
    failed = False
    try:
        return _train(cfg, env, resume=resume, quiet=quiet or not env.is_main, overwrite=overwrite, log=log)
    except BaseException as exc:
        failed = env.enabled
        # A failing rank tells the others (they stop within seconds, not at the collective timeout). When another
        # rank failed first, this error is a consequence (a broken collective): end quietly, its line is shown.
        if failed and not distributed.report_failure(exc) and distributed.peer_failure() is not None:
            distributed.exit_after_peer_failure()
        raise
    finally:
        distributed.cleanup(failed=failed)


def _train(cfg: TrainConfig, env: DistEnv, resume: bool, quiet: bool, overwrite: bool, log: Any) -> dict[str, Any]:
    # One writer per run folder, taken before --overwrite or --resume look at it (rank 0 writes for all ranks).
    lock = FolderLock(Path(cfg.out_dir) / cfg.name, "augkd train", "run folder") if env.is_main else None
    if lock is not None:
        try:
            lock.acquire()
        except LockError as exc:
            raise RunError(str(exc)) from None
        if lock.stale and not quiet:
            log(f"took over the lock of {lock.folder} left by {lock.stale}, which is no longer running")
    try:
        return _train_locked(cfg, env, resume, quiet, overwrite, log)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(
    cfg: TrainConfig, env: DistEnv, resume: bool, quiet: bool, overwrite: bool, log: Any
) -> dict[str, Any]:
    run = setup_run(cfg, resume=resume, quiet=quiet, overwrite=overwrite, env=env)
    if env.is_main:
        # Fail now, not after the first epoch, when the folder cannot take the checkpoints (read-only, full disk).
        check_run_folder(run.run_dir, (cfg.checkpoint.keep_last + 2) * 3 * tensor_bytes(run.model.state_dict()))
        remove_temp_files(run.run_dir)  # left by a killed write; the files they were meant to replace are intact
        if overwrite and not resume:  # start over for real: a later --resume must never pick up the old run
            old = ["last.pt", "best.pt", "summary.json", "metrics.jsonl", "metrics.csv", "bad_files.txt"]
            for path in [*(run.run_dir / n for n in old), *(p for _, p in epoch_checkpoints(run.run_dir))]:
                Path(path).unlink(missing_ok=True)
            shutil.rmtree(run.run_dir / "tensorboard", ignore_errors=True)
        report_bad_files(run, log)  # even when quiet: the user must know what was left out
        if run.config_changes:  # config.yaml is about to say only the new values: keep what the old ones were
            _append_config_history(run)
        atomic_write_text(run.run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    run.sinks = open_sinks(run)
    try:
        return _train_epochs(run, env, resume, quiet, log)
    finally:
        close_sinks(run)


def _train_epochs(run: Run, env: DistEnv, resume: bool, quiet: bool, log: Any) -> dict[str, Any]:
    cfg = run.cfg
    n_params = count_parameters(run.model)
    progress = not quiet and sys.stderr.isatty() and not os.environ.get("CI")
    if not quiet:
        log(format_start(run, n_params))
        if resume and run.step:
            log(f"resuming after epoch {run.start_epoch} (step {run.step})")
    t_start = time.perf_counter() - (run.history[-1]["elapsed_s"] if run.history else 0.0)
    memo = EvalMemo()  # the reference's test-set logits, computed at the first evaluation only
    for epoch in range(run.start_epoch, cfg.epochs):
        row: dict[str, Any] = {"epoch": epoch + 1, "step": 0}
        row.update(train_one_epoch(run, epoch, progress=progress))
        row["step"] = run.step
        last_epoch = epoch + 1 == cfg.epochs
        distributed.broadcast_buffers(run.model)  # rank 0's BN statistics: evaluate and save one model
        if run.ema is not None:
            distributed.broadcast_buffers(run.ema)
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            res = evaluate(
                run.model, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip, reference=run.reference,
                memo=memo,
            )  # fmt: skip
            row.update({f"test_{k}": v for k, v in res.items() if k != "n"})
            if run.ema is not None:
                res_ema = evaluate(run.ema.module, run.eval_loader, run.normalize, run.amp_dtype, flip=cfg.eval_flip)
                row.update({f"ema_{k}": v for k, v in res_ema.items() if k != "n"})
        row["elapsed_s"] = time.perf_counter() - t_start
        if env.is_main:
            log_metrics(run, row)
        else:
            run.history.append(row)
        if "test_top1" in row:
            candidates = [("model", row["test_top1"])]
            if run.ema is not None:
                candidates.append(("ema", row["ema_top1"]))
            which, top1 = max(candidates, key=lambda c: c[1])
            if top1 > run.best_top1:
                run.best_top1 = top1
                if env.is_main:
                    weights = (run.ema.module if which == "ema" else run.model).state_dict()
                    save_checkpoint(
                        run.run_dir / "best.pt", {**_run_info(run, epoch + 1), "model": weights, "metrics": row}
                    )
        if env.is_main:
            state = training_state(
                _run_info(run, epoch + 1), run.model, run.ema, run.optimizer, run.scaler, run.history
            )
            save_training_checkpoint(run.run_dir, state, epoch + 1, cfg.checkpoint.keep_last)
        if not quiet:
            log(format_epoch(row, cfg.epochs))
    if env.is_main:
        report_bad_files(run, log)  # files the stream loader found unreadable during the run
    summary = write_summary(run, n_params) if env.is_main else run_summary(run, n_params)
    distributed.barrier()  # no rank returns before rank 0 has written the run folder
    if not quiet:
        log(
            f"done: top1 {summary['final_top1']:.2f}% (best {run.best_top1:.2f}%) in {summary['wall_time_s']:.0f}s; "
            f"summary in {run.run_dir / 'summary.json'}"
        )
    return summary
