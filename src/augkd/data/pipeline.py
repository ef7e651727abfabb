"""The path of one training batch, as data: augmentation stages in order, then normalization.

A :class:`BatchPipeline` turns a loader's uint8 batches into the normalized float batches a model sees. It is the
one generator of a run's augmented batches (:meth:`BatchPipeline.batches`): the training loop and the teacher
cache builder both iterate it, so the cache holds what the live teacher would see by construction.

Every stage is a pure function of (seed, epoch, sample index) and reports what makes its output reproducible
(:func:`replay_key`): its class and its plain settings, recursively. The pipeline's key is the stages' keys, so a
stage added to the pipeline changes the key of every teacher cache without anyone keeping a list of settings.

A stage is any module called as ``stage(batch, epoch) -> Batch`` (it may change images, labels or both, as a
Mixup stage would); :class:`ImageStage` adapts the augmentation modules of :mod:`augkd.augment`, which take
``(images, indices, epoch)``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from augkd.data.loader import Batch

__all__ = ["BatchPipeline", "ImageStage", "Normalize", "TrainAugment", "replay_key"]


def _plain(value: Any) -> Any:
    """``value`` as JSON data, or ``NotImplemented`` when it is not plain data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return NotImplemented


def replay_key(module: nn.Module) -> dict[str, Any]:
    """What makes a stage's output reproducible: ``{"type": class name, setting: value, child: key, ...}``.

    A module that defines ``replay_key()`` answers for itself; otherwise its public plain-data attributes (seed,
    sizes, op names, magnitudes, ...) and its child modules' keys are taken.
    """
    own = getattr(module, "replay_key", None)
    if callable(own):
        return own()
    key: dict[str, Any] = {"type": type(module).__name__}
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or name == "training":
            continue
        plain = _plain(value)
        if plain is not NotImplemented:
            key[name] = plain
    for name, child in module.named_children():
        key[name] = replay_key(child)
    return key


class Normalize(nn.Module):
    """uint8 images -> float32 ``(x / 255 - mean) / std`` in one fused affine step, keeping the memory format."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], channels_last: bool = False) -> None:
        super().__init__()
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)
        self.channels_last = channels_last

    def replay_key(self) -> dict[str, Any]:
        """Mean and std decide the values; the memory format does not."""
        return {"type": "Normalize", "mean": list(self.mean), "std": list(self.std)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, images.float(), self.scale)


class TrainAugment(nn.Module):
    """Base augmentation (crop/flip), the policy, then an optional last stage (Cutout); all pure functions of
    (seed, epoch, sample index).

    This is where an augmentation policy plugs into training: ``augment.policy`` in the config.
    """

    def __init__(
        self, base: nn.Module, policy: nn.Module, post: nn.Module | None = None, policy_epochs: int | None = None
    ) -> None:
        super().__init__()
        self.base = base
        self.policy = policy
        self.post = post
        self.policy_epochs = policy_epochs  # epochs >= this one see the base augmentation only (None: all epochs)

    def uses_policy(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) applies the policy and the last stage (``augment.off_last_epochs``
        switches both off: those epochs see the base crop/flip only)."""
        return self.policy_epochs is None or epoch < self.policy_epochs

    def forward(self, images: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        images = self.base(images, indices, epoch)
        if not self.uses_policy(epoch):
            return images
        images = self.policy(images, indices, epoch)
        return images if self.post is None else self.post(images, indices, epoch)


class ImageStage(nn.Module):
    """A batch stage from an image augmentation ``module(images, indices, epoch) -> images`` (labels untouched)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def replay_key(self) -> dict[str, Any]:
        return replay_key(self.module)

    def forward(self, batch: Batch, epoch: int) -> Batch:
        return batch._replace(images=self.module(batch.images, batch.indices, epoch))


class BatchPipeline(nn.Module):
    """The stages of a run's training batches in order, then normalization.

    Args:
        stages: name -> stage ``(batch, epoch) -> Batch``, applied in order (see the module docstring).
        normalize: the last step, uint8 -> normalized float.
    """

    def __init__(self, stages: Mapping[str, nn.Module], normalize: Normalize) -> None:
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.normalize = normalize

    @torch.no_grad()
    def forward(self, batch: Batch, epoch: int) -> Batch:
        for stage in self.stages.values() if len(batch.indices) else ():  # an empty batch (DDP, all files bad)
            batch = stage(batch, epoch)
        return batch._replace(images=self.normalize(batch.images))

    def batches(self, loader: Iterable[Batch], epoch: int) -> Iterator[Batch]:
        """The augmented, normalized batches of ``epoch`` from ``loader`` (its order set for ``epoch`` first)."""
        loader.set_epoch(epoch)  # type: ignore[attr-defined]
        for batch in loader:
            yield self(batch, epoch)

    def replay_key(self) -> dict[str, Any]:
        """The stages' keys in order and the normalization's: everything that decides a batch's values."""
        return {
            "stages": {name: replay_key(stage) for name, stage in self.stages.items()},
            "normalize": replay_key(self.normalize),
        }
