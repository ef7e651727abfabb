from __future__ import annotations

import pytest
import torch

from augkd.data.loader import Batch, DeviceLoader, epoch_permutation
from augkd.data.memory import InMemoryDataset


def _dataset(n: int = 103, gaps: bool = True) -> InMemoryDataset:
    # Sample ids with gaps (as after a subset), images that encode their own sample id.
    ids = torch.arange(n) * 3 + 7 if gaps else torch.arange(n)
    images = (ids % 251).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return InMemoryDataset(images, ids % 5, ["a", "b", "c", "d", "e"], ids, split_size=int(ids.max()) + 1)


def _epoch(loader: DeviceLoader, epoch: int) -> list[Batch]:
    loader.set_epoch(epoch)
    return list(loader)


def test_every_sample_once_per_epoch_with_matching_rows():
    ds = _dataset()
    loader = DeviceLoader(ds, batch_size=16, shuffle=True, drop_last=False, seed=3)
    assert len(loader) == 7
    batches = _epoch(loader, 0)
    assert len(batches) == 7 and [len(b.indices) for b in batches] == [16] * 6 + [7]
    seen = torch.cat([b.indices for b in batches])
    assert sorted(seen.tolist()) == ds.sample_ids.tolist()
    for b in batches:
        assert isinstance(b, Batch) and b.images.dtype == torch.uint8 and b.images.shape[1:] == (3, 4, 4)
        assert b.labels.dtype == torch.int64 and b.indices.dtype == torch.int64
        assert torch.equal(b.images[:, 0, 0, 0], (b.indices % 251).to(torch.uint8))  # rows follow their ids
        assert torch.equal(b.labels, b.indices % 5)


def test_order_is_a_function_of_seed_and_epoch():
    ds = _dataset()
    a = DeviceLoader(ds, batch_size=10, shuffle=True, seed=1)
    b = DeviceLoader(ds, batch_size=25, shuffle=True, seed=1)  # batch size does not change the order
    order = torch.cat([x.indices for x in _epoch(a, 5)])
    assert torch.equal(order, torch.cat([x.indices for x in _epoch(b, 5)]))
    assert torch.equal(order, torch.cat([x.indices for x in _epoch(a, 5)]))  # replayable
    assert not torch.equal(order, torch.cat([x.indices for x in _epoch(a, 6)]))
    other_seed = DeviceLoader(ds, batch_size=10, shuffle=True, seed=2)
    assert not torch.equal(order, torch.cat([x.indices for x in _epoch(other_seed, 5)]))
    assert torch.equal(epoch_permutation(50, 1, 2), epoch_permutation(50, 1, 2))
    assert not torch.equal(epoch_permutation(50, 1, 2), epoch_permutation(50, 2, 1))


def test_no_shuffle_and_drop_last():
    ds = _dataset(gaps=False)
    loader = DeviceLoader(ds, batch_size=16, shuffle=False, drop_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 6 and all(len(b.indices) == 16 for b in batches)
    assert torch.equal(torch.cat([b.indices for b in batches]), torch.arange(96))
    assert len(DeviceLoader(ds, batch_size=200, drop_last=True)) == 0
    assert len(DeviceLoader(ds, batch_size=200)) == 1


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_split_each_epoch(drop_last):
    ds = _dataset()
    world = 4
    loaders = [DeviceLoader(ds, 8, True, drop_last, seed=0, rank=r, world_size=world) for r in range(world)]
    per_rank = [torch.cat([b.indices for b in _epoch(ld, 2)]) for ld in loaders]
    together = torch.cat(per_rank)
    assert len(set(together.tolist())) == len(together)  # disjoint
    if drop_last:
        assert {len(ld) for ld in loaders} == {3} and all(len(p) == 24 for p in per_rank)
    else:
        assert sorted(together.tolist()) == ds.sample_ids.tolist()  # nothing lost, nothing repeated
        assert [len(ld) for ld in loaders] == [4, 4, 4, 4]
    # Global batch k is the same set of samples as one rank with a batch of 8 * world.
    single = DeviceLoader(ds, 8 * world, True, drop_last, seed=0)
    first_global = set(next(iter(_epoch(single, 2))).indices.tolist())
    assert first_global == set(torch.cat([next(iter(ld)).indices for ld in loaders]).tolist())


def test_bad_arguments():
    ds = _dataset()
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLoader(ds, 0)
    with pytest.raises(ValueError, match="rank"):
        DeviceLoader(ds, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="epoch"):
        DeviceLoader(ds, 4).set_epoch(-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("pin", "preload"), [(False, False), (True, False), (False, True)])
def test_cuda_batches(pin, preload):
    ds = _dataset()
    cpu = [b.indices for b in _epoch(DeviceLoader(ds, 16, seed=1), 3)]
    loader = DeviceLoader(ds, 16, seed=1, device="cuda", pin_memory=pin, preload=preload)
    for ref, b in zip(cpu, _epoch(loader, 3)):
        assert b.images.is_cuda and b.labels.is_cuda and b.indices.is_cuda
        assert torch.equal(b.indices.cpu(), ref)
        assert torch.equal(b.images[:, 0, 0, 0].cpu(), (ref % 251).to(torch.uint8))
