"""The run checkpoint: the one owner of what ``augkd train`` stores in ``last.pt``, ``best.pt`` and ``ckpt_epoch*.pt``.

A run checkpoint is a plain dict, sealed and written by :func:`augkd.checkpoint.save_checkpoint`::

    format          "augkd-checkpoint/1"
    epoch, step     finished epochs and optimizer steps
    config          the resolved run config as plain data (``model.*`` rebuilds the network)
    classes         class names, in label order
    normalize       {"mean": [...], "std": [...]} the inputs were normalized with
    best_top1       best evaluated top-1 so far
    torch_version
    model           the weights (best.pt: of the best epoch, the raw model's or the EMA's)
    last.pt also:   ema, optimizer, scaler, history        best.pt also: metrics

:func:`run_info` and :func:`training_state` write the entries; :func:`read_run_checkpoint` reads and validates a
file once, with one wording for each failure, and :class:`RunCheckpoint` offers what callers need: the config, the
classes, the normalization and the network with its weights. Resume, ``augkd eval``, ``augkd ambiguity`` and the
teacher all read run checkpoints through this module (like timm's ``models/_helpers.py``, it lives with the
models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.checkpoint import CheckpointError, load_checkpoint, load_latest_checkpoint
from augkd.config import ConfigError, config_from_dict
from augkd.models.build import build_model
from augkd.models.config import ModelConfig
from augkd.models.external import weights_mismatch

__all__ = [
    "RUN_CHECKPOINT_FORMAT",
    "RunCheckpoint",
    "class_mismatch",
    "read_latest_run_checkpoint",
    "read_run_checkpoint",
    "run_info",
    "training_state",
]

RUN_CHECKPOINT_FORMAT = "augkd-checkpoint/1"
_REQUIRED = ("model", "config", "classes", "normalize")


def class_mismatch(theirs: Sequence[str], ours: Sequence[str]) -> str | None:
    """None when both name the same classes in the same order, else where they first part:
    ``10 vs 10; label 9 is 'lorry' there and 'truck' here``."""
    theirs, ours = list(theirs), list(ours)
    if theirs == ours:
        return None
    first = next((i for i, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b), min(len(theirs), len(ours)))
    there = repr(theirs[first]) if first < len(theirs) else "absent"
    here = repr(ours[first]) if first < len(ours) else "absent"
    return f"{len(theirs)} vs {len(ours)}; label {first} is {there} there and {here} here"


def run_info(
    *,
    epoch: int,
    step: int,
    config: Mapping[str, Any],
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    best_top1: float,
) -> dict[str, Any]:
    """What every run checkpoint carries besides weights: enough to rebuild the model and read its outputs."""
    return {
        "format": RUN_CHECKPOINT_FORMAT,
        "epoch": epoch,  # number of finished epochs
        "step": step,
        "config": dict(config),
        "classes": list(classes),
        "normalize": {"mean": list(mean), "std": list(std)},
        "best_top1": best_top1,
        "torch_version": str(torch.__version__),
    }


def training_state(
    info: dict[str, Any],
    model: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """``last.pt``: :func:`run_info` plus everything needed to resume."""
    return {
        **info,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "history": history,
    }


@dataclass(frozen=True)
class RunCheckpoint:
    """A run checkpoint read and validated by :func:`read_run_checkpoint`.

    Attributes:
        path: the file it was read from.
        state: the whole dict (resume reads ``optimizer``, ``ema``, ``scaler``, ``history`` from it).
        model_config: the ``model.*`` section the weights were trained with.
    """

    path: Path
    state: dict[str, Any]
    model_config: ModelConfig

    @property
    def config(self) -> dict[str, Any]:
        """The run's resolved config as plain data (build a ``TrainConfig`` from it with ``build_config``)."""
        return self.state["config"]

    @property
    def classes(self) -> list[str]:
        """Class names in label order."""
        return list(self.state["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.state["classes"])

    @property
    def normalize(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` the network's inputs were normalized with."""
        norm = self.state["normalize"]
        return tuple(norm["mean"]), tuple(norm["std"])

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    def check_classes(self, classes: int | Sequence[str], what: str = "the data") -> None:
        """Raise ``CheckpointError`` unless the network predicts ``classes``: a count, or the class names in label
        order (the same count under other names is other data). ``what``: whose classes they are."""
        if isinstance(classes, int):
            if self.num_classes != classes:
                raise CheckpointError(
                    f"{self.path}: the checkpoint predicts {self.num_classes} classes but {what} has {classes}"
                )
            return
        problem = class_mismatch(self.classes, classes)
        if problem:
            raise CheckpointError(f"{self.path}: the checkpoint predicts other classes than {what} has ({problem})")

    def check_model(self, name: str) -> None:
        """Raise ``CheckpointError`` unless the checkpoint trained the registered model ``name``."""
        if self.model_config.name != name:
            raise CheckpointError(f"{self.path}: the checkpoint trained {self.model_config.name!r}, not {name!r}")

    def load_weights(self, module: nn.Module, entry: str = "model") -> None:
        """Load the state dict stored under ``entry`` into ``module``; a mismatch is one line, not a traceback."""
        try:
            module.load_state_dict(self.state[entry])
        except (RuntimeError, KeyError, TypeError) as exc:
            state = self.state.get(entry)
            why = weights_mismatch(module, state) if isinstance(state, Mapping) else None
            raise CheckpointError(
                f"{self.path}: the {entry} weights do not fit {self.model_config.name!r}: "
                f"{why or str(exc).splitlines()[0]}"
            ) from None

    def build_model(self, model_config: ModelConfig | None = None) -> nn.Module:
        """The network of the checkpoint (built from its ``model.*``, or ``model_config``) with its weights, on CPU."""
        cfg = model_config or self.model_config
        model = build_model(cfg, self.num_classes)
        self.load_weights(model)
        return model


def _validate(path: Path, state: dict[str, Any]) -> RunCheckpoint:
    fmt = state.get("format")
    missing = [k for k in _REQUIRED if k not in state]
    if fmt != RUN_CHECKPOINT_FORMAT or missing:
        why = f"format={fmt!r}" if fmt != RUN_CHECKPOINT_FORMAT else f"no {', '.join(missing)} entries"
        raise CheckpointError(f"{path}: not an augkd run checkpoint ({why})")
    config = state["config"]
    try:
        if not isinstance(config, dict):
            raise ConfigError(f"config: expected a mapping, got {type(config).__name__}")
        model_config = config_from_dict(ModelConfig, config.get("model", {}), prefix="model.")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: damaged run checkpoint config ({exc})") from None
    norm = state["normalize"]
    if not (isinstance(norm, dict) and "mean" in norm and "std" in norm):
        raise CheckpointError(f"{path}: damaged run checkpoint (normalize has no mean/std)")
    return RunCheckpoint(path, state, model_config)


def read_run_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> RunCheckpoint:
    """Read and validate a run checkpoint (``best.pt``, ``last.pt``, ``ckpt_epoch*.pt``).

    Raises:
        CheckpointError: missing, corrupt or unsafe file (see :func:`augkd.checkpoint.load_checkpoint`), not a run
            checkpoint, or a damaged ``config``/``normalize`` entry.
    """
    path = Path(path)
    return _validate(path, load_checkpoint(path, map_location=map_location))


def read_latest_run_checkpoint(
    run_dir: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[RunCheckpoint, list[str]] | None:
    """The newest readable run checkpoint of a run folder and one line per damaged one passed over (None: none).

    Raises:
        CheckpointError: checkpoints exist but none is readable, or the newest readable one is not a run checkpoint.
    """
    found = load_latest_checkpoint(run_dir, map_location=map_location)
    if found is None:
        return None
    path, state, problems = found
    return _validate(path, state), problems
