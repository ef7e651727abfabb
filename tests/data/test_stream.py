"""augkd.data.stream: per-batch decoding in DataLoader workers, replayable crops, sharding, parity with memory."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from augkd.augment.base import RandomCropFlip, RandomResizedCropFlip
from augkd.data import DataConfig, DeviceLoader, build_stream_loaders
from augkd.data.archive import resolve_root
from augkd.data.decode import decode_one
from augkd.data.folder import scan_image_folder
from augkd.data.memory import load_folder_split
from augkd.data.stream import EvalCrop, StreamLoader, TrainCrop, scan_stream_split


@pytest.fixture(scope="module")
def woof_root(woof_zip, cache_dir):
    return resolve_root(woof_zip, cache_dir)


def _epoch(loader, epoch: int) -> list:
    loader.set_epoch(epoch)
    return list(loader)


def _by_id(batches) -> dict[int, torch.Tensor]:
    return {int(i): img for b in batches for i, img in zip(b.indices, b.images)}


def _rrc_loader(dataset, size=48, seed=5, workers=0, **kwargs) -> StreamLoader:
    base = RandomResizedCropFlip(size, seed=seed)
    batch_size = kwargs.pop("batch_size", 8)
    return StreamLoader(dataset, batch_size, seed=seed, transform=TrainCrop(base, size), workers=workers, **kwargs)


def test_batches_are_fixed_size_uint8_keyed_by_full_split_positions(woof_root):
    train = scan_stream_split(woof_root, "train", per_class=3, subset_seed=1)
    full = scan_image_folder(woof_root, "train")
    assert len(train) == 30 and train.split_size == len(full.files) == 1000 and train.num_classes == 10
    loader = _rrc_loader(train, batch_size=8, drop_last=True, workers=0)
    batches = _epoch(loader, 0)
    assert len(batches) == len(loader) == 3
    for b in batches:
        assert b.images.dtype == torch.uint8 and b.images.shape == (8, 3, 48, 48)
        # indices are positions in the full split's scan (the key of policy replay and of the KD cache)
        for i, label in zip(b.indices.tolist(), b.labels.tolist()):
            assert full.labels[i] == label and i in train.sample_ids.tolist()
    ids = torch.cat([b.indices for b in batches])
    assert len(set(ids.tolist())) == 24 and int(ids.max()) > 30  # drawn from across the split, not rows 0..29


def test_replay_is_exact_across_workers_epochs_and_batch_sizes(woof_root):
    train = scan_stream_split(woof_root, "train", per_class=2)
    in_process = _rrc_loader(train, workers=0)
    with_workers = _rrc_loader(train, workers=2)
    a0, a1 = _epoch(in_process, 0), _epoch(in_process, 1)
    b0, b1 = _epoch(with_workers, 0), _epoch(with_workers, 1)  # persistent workers see the new epoch
    b0_again = _epoch(with_workers, 0)
    with_workers.close()
    for a, b, c in zip(a0, b0, b0_again):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images) and torch.equal(b.images, c.images)
    for a, b in zip(a1, b1):
        assert torch.equal(a.images, b.images)
    assert [b.indices.tolist() for b in a0] != [b.indices.tolist() for b in a1]  # a new order ...
    first, second = _by_id(a0), _by_id(a1)
    assert sum(not torch.equal(first[i], second[i]) for i in first) >= 18  # ... and new crops every epoch
    # A sample's crop depends on (seed, epoch, sample id) only, not on the batch it lands in.
    assert all(torch.equal(first[i], img) for i, img in _by_id(_epoch(_rrc_loader(train, batch_size=3), 0)).items())
    other_seed = _by_id(_epoch(_rrc_loader(train, seed=6), 0))
    assert sum(not torch.equal(first[i], other_seed[i]) for i in first) >= 18


def test_rrc_crops_the_full_photo_with_the_counter_rng(woof_root):
    train = scan_stream_split(woof_root, "train", per_class=1)
    rrc = RandomResizedCropFlip(48, seed=5)
    batch = _epoch(_rrc_loader(train, batch_size=10, workers=0), 3)[0]
    flips = 0
    for row in range(len(train)):
        photo = decode_one(train.path(row))
        sid = int(train.sample_ids[row])
        p = rrc.sample(torch.tensor([sid]), 3, photo.shape[-2:])
        box = [int(p[k]) for k in ("top", "left", "height", "width")]
        want = TF.resized_crop(photo, *box, [48, 48], antialias=True)
        want = want.flip(-1) if bool(p["flip"]) else want
        flips += bool(p["flip"])
        assert torch.equal(batch.images[batch.indices.tolist().index(sid)], want)
        assert max(photo.shape[-2:]) > 300  # really the full-size photo, not a stored square
    assert 0 < flips < 10


def test_shards_of_ranks_cover_the_epoch_with_the_same_pixels(woof_root):
    train = scan_stream_split(woof_root, "train", per_class=2)
    whole = _by_id(_epoch(_rrc_loader(train, batch_size=4), 2))
    shards = [_by_id(_epoch(_rrc_loader(train, batch_size=4, rank=r, world_size=3), 2)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == sorted(whole)  # disjoint, and together the whole epoch
    assert all(torch.equal(img, whole[i]) for s in shards for i, img in s.items())


def test_crop_flip_and_eval_match_the_memory_loader(woof_root, cache_dir):
    seed, size = 3, 40
    memory = load_folder_split(woof_root, "train", size, 1.0, cache_dir, per_class=2, quiet=True)
    stream = scan_stream_split(woof_root, "train", per_class=2)
    assert torch.equal(memory.sample_ids, stream.sample_ids) and torch.equal(memory.labels, stream.labels)
    base = RandomCropFlip(size, padding=4, seed=seed)
    mem_loader = DeviceLoader(memory, 6, shuffle=True, seed=seed)
    str_loader = StreamLoader(stream, 6, shuffle=True, seed=seed, transform=TrainCrop(base, size), workers=0)
    for m, s in zip(_epoch(mem_loader, 1), _epoch(str_loader, 1), strict=True):
        assert torch.equal(m.indices, s.indices) and torch.equal(m.labels, s.labels)
        assert torch.equal(base(m.images, m.indices, 1), s.images)
    # Evaluation: resize so the centre crop keeps 0.875 of the shorter side, as the in-memory store decodes.
    mem_val = load_folder_split(woof_root, "val", 56, 0.875, cache_dir, per_class=1, quiet=True)
    val = scan_stream_split(woof_root, "val", per_class=1)
    (batch,) = list(StreamLoader(val, 10, shuffle=False, transform=EvalCrop(56, 0.875), workers=0))
    assert torch.equal(batch.images, mem_val.images) and torch.equal(batch.indices, mem_val.sample_ids)


def test_build_stream_loaders_from_a_data_config(woof_zip, cache_dir):
    cfg = DataConfig(
        root=str(woof_zip),
        cache_dir=str(cache_dir),
        loader="stream",
        image_size=64,
        eval_size=72,
        base_aug="rrc-flip",
        subset_per_class=2,
        test_subset_per_class=1,
        workers=0,
    )
    train, test = build_stream_loaders(cfg, batch_size=8, eval_batch_size=4, seed=0)
    assert train.shuffle and train.drop_last and len(train) == 2 and not test.shuffle and len(test) == 3
    assert isinstance(train.transform.base, RandomResizedCropFlip) and train.transform.base.scale == (0.08, 1.0)
    assert [b.images.shape[-1] for b in test] == [72, 72, 72] and test.dataset.classes == train.dataset.classes
    with pytest.raises(ValueError, match="data.loader=stream .* needs data.dataset=folder"):
        DataConfig(dataset="cifar10", loader="stream")
    with pytest.raises(ValueError, match="data.loader must be one of memory, stream"):
        DataConfig(loader="lazy")


def test_bad_file_error_or_skip(make_tree):
    root = make_tree(("train",), per_class=4)
    (root / "train" / "dog" / "0001.jpg").write_bytes(b"not a jpeg")
    train = scan_stream_split(root, "train")
    transform = TrainCrop(RandomCropFlip(32, seed=0), 32)
    with pytest.raises(ValueError, match=r"^unreadable image .*dog/0001\.jpg: .*data\.bad_files=skip") as err:
        list(StreamLoader(train, 4, transform=transform, workers=2))  # raised in this process, not the worker's
    assert "\n" not in str(err.value)
    loader = StreamLoader(train, 4, transform=transform, workers=0, bad_files="skip")
    with pytest.warns(UserWarning, match=r"skipped unreadable image .*dog/0001\.jpg"):
        batches = _epoch(loader, 0)
    ids = sorted(i for b in batches for i in b.indices.tolist())
    assert ids == [i for i in range(12) if i != 5]  # the bad file's id is missing; every other keeps its own
    assert sorted(len(b.labels) for b in batches) == [3, 4, 4]
    assert [p.endswith("dog/0001.jpg") for p, _ in loader.skipped] == [True]
    _epoch(loader, 1)
    assert len(loader.skipped) == 1  # reported once


def test_skipped_files_under_ddp_leave_every_rank_the_same_number_of_steps(make_tree):
    """Rank 1's shard is all unreadable files: it still yields one (empty) batch per step, as rank 0 does, so the
    ranks' gradient all-reduces pair up (a missing step would hang the others)."""
    root = make_tree(("train",), per_class=4)
    train = scan_stream_split(root, "train")
    for sid in range(1, len(train.sample_ids), 2):  # the odd sample ids: rank 1's whole shard without shuffling
        (root / "train" / train.files[sid]).write_bytes(b"not an image")
    transform = TrainCrop(RandomCropFlip(32, seed=0), 32)
    steps = []
    for rank in (0, 1):
        loader = StreamLoader(
            train, 2, shuffle=False, transform=transform, workers=0, bad_files="skip", rank=rank, world_size=2
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = _epoch(loader, 0)
        steps.append(len(batches))
        assert len(batches) == len(loader) == 3
        assert [len(b.labels) for b in batches] == ([2, 2, 2] if rank == 0 else [0, 0, 0])
        assert len(loader.skipped) == (0 if rank == 0 else 6)
    assert steps[0] == steps[1]
