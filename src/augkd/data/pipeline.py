"""The path of one training batch, as data: augmentation stages in order, then normalization.

A :class:`BatchPipeline` turns a loader's uint8 batches into the normalized float batches a model sees. It is the
one generator of a run's augmented batches (:meth:`BatchPipeline.batches`): the training loop and the teacher
cache builder both iterate it, so the cache holds what the live teacher would see by construction.

Every stage is a pure function of (seed, epoch, sample index) and reports what makes its output reproducible
(:func:`replay_key`): its class and its plain settings, recursively. The pipeline's key is the stages' keys, so a
stage added to the pipeline changes the key of every teacher cache without anyone keeping a list of settings.

A stage is any module called as ``stage(batch, epoch) -> Batch`` (it may change images, labels or both);
:class:`ImageStage` adapts the augmentation modules of :mod:`augkd.augment`, which take ``(images, indices, epoch)``.
A *mixing* stage (:class:`MixStage`: Mixup, CutMix) also needs each sample's partner: it names the partners'
dataset positions (``partner_positions``), the pipeline gathers them from the loader's in-memory store, runs the
stages before it on them (each partner gets its own augmentation, keyed by its own sample id) and calls
``stage(batch, epoch, partners)``. So a mixed image is a pure function of (seed, epoch, sample id) too, whatever
the batch, batch size or number of ranks, and the teacher cache replays it like any other stage.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from augkd.augment import rng
from augkd.augment.mix import Mixer, mix_targets
from augkd.data.loader import Batch

__all__ = ["BatchPipeline", "ImageStage", "MixStage", "Normalize", "TrainAugment", "replay_key"]


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


class MixStage(nn.Module):
    """Mixup / CutMix (:class:`~augkd.augment.mix.Mixer`) as a batch stage, with partners drawn by sample id.

    The partner of sample ``i`` in ``epoch`` is the training sample at position
    ``randint(seed, epoch, i, "mix_partner", N)`` of the N-sample training set (itself with probability 1/N: no
    change then), seen through its own augmentation of that epoch. The stage sets ``targets`` (soft,
    ``lam * onehot(y) + (1 - lam) * onehot(y_partner)``; the task applies label smoothing) and ``labels`` to each
    image's dominant label (its own when ``lam >= 0.5``).

    Args:
        mixer: the draws and the mixing.
        epochs: mix in epochs ``0 .. epochs-1`` only (``augment.off_last_epochs`` switches mixing off with the
            policy); None: every epoch.
    """

    partner = "training-set-by-id"  # part of the replay key: how partners are chosen

    def __init__(self, mixer: Mixer, epochs: int | None = None) -> None:
        super().__init__()
        self.mixer = mixer
        self.epochs = epochs

    def active(self, epoch: int) -> bool:
        return self.epochs is None or epoch < self.epochs

    def replay_key(self) -> dict[str, Any]:
        return {"type": "MixStage", "partner": self.partner, "epochs": self.epochs, "mixer": replay_key(self.mixer)}

    def partner_positions(self, indices: torch.Tensor, epoch: int, n: int) -> torch.Tensor:
        """Dataset positions (in ``[0, n)``) of the partners of sample ids ``indices`` in ``epoch``."""
        return rng.randint(self.mixer.seed, epoch, indices, rng.SLOTS["mix_partner"], n)

    def forward(self, batch: Batch, epoch: int, partners: Batch | None = None, num_classes: int = 0) -> Batch:
        if not self.active(epoch):
            return batch
        if partners is None or not num_classes:
            raise ValueError("a mixing stage needs its partners and the number of classes (BatchPipeline passes them)")
        params = self.mixer.sample(batch.indices, epoch, batch.images.shape[-2:])
        images = self.mixer.apply(batch.images, partners.images, params)
        lam = params["lam"].to(batch.labels.device)
        targets = mix_targets(batch.labels, partners.labels, lam, num_classes)
        labels = torch.where(lam >= 0.5, batch.labels, partners.labels)
        return batch._replace(images=images, labels=labels, targets=targets)


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
    def forward(self, batch: Batch, epoch: int, source: Any = None) -> Batch:
        """Run the stages and the normalization on ``batch``; ``source`` (a loader with ``gather`` and
        ``dataset``) supplies a mixing stage's partners."""
        done: list[nn.Module] = []
        for stage in self.stages.values() if len(batch.indices) else ():  # an empty batch (DDP, all files bad)
            if isinstance(stage, MixStage):
                batch = self._mix(stage, batch, epoch, source, done) if stage.active(epoch) else batch
            else:
                batch = stage(batch, epoch)
            done.append(stage)
        return batch._replace(images=self.normalize(batch.images))

    @staticmethod
    def _mix(stage: MixStage, batch: Batch, epoch: int, source: Any, before: list[nn.Module]) -> Batch:
        if source is None:
            raise ValueError("a pipeline with Mixup/CutMix needs the training loader to gather the partners")
        positions = stage.partner_positions(batch.indices, epoch, len(source.dataset))
        partners = source.gather(positions)
        for earlier in before:
            partners = earlier(partners, epoch)
        return stage(batch, epoch, partners, source.dataset.num_classes)

    def batches(self, loader: Iterable[Batch], epoch: int) -> Iterator[Batch]:
        """The augmented, normalized batches of ``epoch`` from ``loader`` (its order set for ``epoch`` first)."""
        loader.set_epoch(epoch)  # type: ignore[attr-defined]
        for batch in loader:
            yield self(batch, epoch, loader)

    def replay_key(self) -> dict[str, Any]:
        """The stages' keys in order and the normalization's: everything that decides a batch's values."""
        return {
            "stages": {name: replay_key(stage) for name, stage in self.stages.items()},
            "normalize": replay_key(self.normalize),
        }
