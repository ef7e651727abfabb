"""Batches straight from an in-memory dataset: one index_select per batch, no per-image Python.

The order of an epoch is a pure function of ``(seed, epoch)``: a :class:`torch.Generator` seeded from both
draws the permutation, so a resumed run replays the same batches. With ``world_size > 1`` every rank takes
every ``world_size``-th position of that one permutation (DistributedSampler's layout), so global batch ``k``
holds the same samples whatever the number of ranks, given the same global batch size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from augkd.data.memory import InMemoryDataset

__all__ = ["Batch", "DeviceLoader", "epoch_permutation"]


class Batch(NamedTuple):
    """One batch: uint8 ``images (B, C, H, W)``, int64 ``labels (B,)``, int64 sample ids ``indices (B,)``, and the
    soft ``targets (B, C)`` a mixing stage (Mixup, CutMix) gives its images (None otherwise; ``labels`` then hold
    each image's dominant label)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    targets: torch.Tensor | None = None


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of ``n`` positions for ``(seed, epoch)`` (int64, on the CPU)."""
    # The CPU generator (mt19937) keeps only 32 bits of its seed, so (seed, epoch) is hashed into 32 bits.
    digest = hashlib.sha256(f"augkd-shuffle:{seed}:{epoch}".encode()).digest()
    generator = torch.Generator()
    generator.manual_seed(int.from_bytes(digest[:4], "little"))
    return torch.randperm(n, generator=generator)


class DeviceLoader:
    """Iterate an :class:`InMemoryDataset` in batches on ``device``.

    Args:
        dataset: the images, labels and sample ids.
        batch_size: samples per batch (per rank).
        shuffle: shuffle every epoch (order from ``(seed, epoch)``); else dataset order.
        drop_last: leave out the last incomplete batch. With ``world_size > 1`` it also trims the epoch to a
            multiple of ``world_size`` so every rank gets the same number of batches (needed for DDP training);
            without it ranks may differ by one sample (fine for evaluation, where results are summed).
        seed: run seed.
        device: where batches are delivered.
        pin_memory: gather CPU batches into pinned memory and copy them asynchronously (CUDA only).
        preload: move the whole dataset to ``device`` once and gather batches there (for sets that fit).
        rank: this process's rank.
        world_size: number of ranks sharing each epoch.

    Example:
        >>> loader = DeviceLoader(train, batch_size=512, shuffle=True, drop_last=True, seed=0, device="cuda")
        >>> for epoch in range(epochs):
        ...     loader.set_epoch(epoch)
        ...     for batch in loader:  # batch.images, batch.labels, batch.indices
        ...         ...
    """

    def __init__(
        self,
        dataset: InMemoryDataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        pin_memory: bool = False,
        preload: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._init_order(dataset, batch_size, shuffle, drop_last, seed, device, rank, world_size)
        self.pin_memory = pin_memory and self.device.type == "cuda"
        source = (dataset.images, dataset.labels, dataset.sample_ids)
        self._source = tuple(t.to(self.device) for t in source) if preload else source

    def _init_order(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        device: str | torch.device,
        rank: int,
        world_size: int,
    ) -> None:
        """Check and keep what decides the epoch order and the shard (shared with the stream loader)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size; got rank={rank}, world_size={world_size}")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
        self.seed, self.device, self.rank, self.world_size = seed, torch.device(device), rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows (it does not advance by itself)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0; got {epoch}")
        self.epoch = epoch

    def positions(self) -> torch.Tensor:
        """Dataset positions this rank visits in the current epoch, in order."""
        n = len(self.dataset)
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            if self.drop_last:
                order = order[: n - n % self.world_size]
            order = order[self.rank :: self.world_size]
        return order

    def _num_positions(self) -> int:
        n = len(self.dataset)
        if self.world_size == 1:
            return n
        if self.drop_last:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        m = self._num_positions()
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.positions()
        images, labels, ids = self._source
        order = order.to(images.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield Batch(self._gather(images, idx), self._gather(labels, idx), self._gather(ids, idx))

    def gather(self, positions: torch.Tensor) -> Batch:
        """The samples at dataset ``positions`` (any order, repeats allowed) as a batch on the loader's device
        (a mixing stage's partners)."""
        images, labels, ids = self._source
        idx = positions.to(images.device, torch.int64)
        return Batch(self._gather(images, idx), self._gather(labels, idx), self._gather(ids, idx))

    def _gather(self, source: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if source.device.type != "cpu" or self.device.type == "cpu":  # preloaded on the device, or all on the CPU
            return source.index_select(0, idx).to(self.device)
        if self.pin_memory:
            # The caching host allocator keeps a pinned block busy until its async copy has finished.
            buf = torch.empty((len(idx), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
            return torch.index_select(source, 0, idx, out=buf).to(self.device, non_blocking=True)
        return source.index_select(0, idx).to(self.device)
