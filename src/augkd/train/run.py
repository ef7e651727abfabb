"""The state of a training run: what :func:`~augkd.train.loop.setup_run` builds and the loop advances."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.data import DeviceLoader
from augkd.data.pipeline import BatchPipeline, Normalize, TrainAugment
from augkd.train.config import TrainConfig
from augkd.train.distributed import DistEnv

__all__ = ["Run"]


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
    pipeline: BatchPipeline
    """The training batches' stages and normalization (:func:`~augkd.train.build.build_pipeline`)."""
    train_loader: DeviceLoader
    eval_loader: DeviceLoader
    classes: list[str]
    stats: dict[str, Any]
    start_epoch: int = 0
    step: int = 0
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)
    env: DistEnv = field(default_factory=DistEnv)
    """This process's rank among the ranks of a ``torchrun`` launch (one process: rank 0 of 1)."""
    train_model: nn.Module | None = None
    """What the training step calls: ``model`` wrapped in DistributedDataParallel, or None for ``model``."""
    reported_bad_files: list[tuple[str, str]] = field(default_factory=list)
    """Unreadable images already written to ``bad_files.txt`` (``data.bad_files=skip``)."""
    config_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    """What ``--resume`` changed in the saved config (keys it allows), recorded in ``config_history.jsonl``."""
    reference: nn.Module | None = None
    """The model whose agreement with the student the evaluation measures (``eval.reference`` or the live KD
    teacher), or None."""
    sinks: list[Any] = field(default_factory=list)
    """The open log sinks (:func:`~augkd.train.metrics.open_sinks`; rank 0 only)."""

    @property
    def augment(self) -> TrainAugment:
        """The augmentation stage (base, policy, Cutout) of the pipeline."""
        return self.pipeline.stages["augment"].module

    @property
    def normalize(self) -> Normalize:
        return self.pipeline.normalize

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs
