"""augkd.data.pipeline: a mixing stage's output is a pure function of (seed, epoch, sample id)."""

from __future__ import annotations

import pytest
import torch

from augkd.augment.base import RandomCropFlip
from augkd.augment.mix import Mixer
from augkd.augment.spec import build_policy
from augkd.data.loader import Batch, DeviceLoader
from augkd.data.memory import InMemoryDataset
from augkd.data.pipeline import BatchPipeline, ImageStage, MixStage, Normalize, TrainAugment


@pytest.fixture(scope="module")
def dataset() -> InMemoryDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(60) % 5
    return InMemoryDataset(images, labels, [f"c{i}" for i in range(5)], torch.arange(1000, 1060))


def _pipeline(seed: int = 3) -> BatchPipeline:
    augment = TrainAugment(RandomCropFlip(16, padding=2, seed=seed), build_policy("ra-n2-m9", 16, seed=seed))
    stages = {"augment": ImageStage(augment), "mix": MixStage(Mixer(0.8, 1.0, prob=0.9, seed=seed))}
    return BatchPipeline(stages, Normalize((0.0,) * 3, (1.0 / 255,) * 3))  # x * 1: the uint8 values as floats


def _by_id(pipeline: BatchPipeline, loader: DeviceLoader, epoch: int) -> dict[int, tuple]:
    out = {}
    for batch in pipeline.batches(loader, epoch):
        for i, sid in enumerate(batch.indices.tolist()):
            out[sid] = (batch.images[i], batch.labels[i], batch.targets[i])
    return out


def test_a_mixed_image_does_not_depend_on_the_batch(dataset):
    pipeline = _pipeline()
    a = _by_id(pipeline, DeviceLoader(dataset, 12, shuffle=True, seed=3), 2)
    b = _by_id(pipeline, DeviceLoader(dataset, 25, shuffle=True, seed=3), 2)
    c = _by_id(pipeline, DeviceLoader(dataset, 60, shuffle=False), 2)  # another order, one batch
    assert set(a) == set(b) == set(c) == set(range(1000, 1060))
    for sid in a:
        for x, y, z in zip(a[sid], b[sid], c[sid]):
            assert torch.equal(x, y) and torch.equal(x, z), sid


def test_the_partner_is_a_training_sample_seen_through_its_own_augmentation(dataset):
    pipeline = _pipeline()
    loader = DeviceLoader(dataset, 20, shuffle=False)
    loader.set_epoch(1)
    batch = next(iter(loader))
    mixed = pipeline(batch, 1, loader)
    stage, augment = pipeline.stages["mix"], pipeline.stages["augment"].module
    pos = stage.partner_positions(batch.indices, 1, len(dataset))
    own = augment(batch.images, batch.indices, 1)
    partner = augment(dataset.images[pos], dataset.sample_ids[pos], 1)
    params = stage.mixer.sample(batch.indices, 1, 16)
    assert torch.equal(mixed.images, stage.mixer.apply(own, partner, params).float())
    lam = params["lam"]
    assert (lam < 1).any()
    plabels = dataset.labels[pos]
    assert torch.equal(mixed.labels, torch.where(lam >= 0.5, batch.labels, plabels))
    assert torch.allclose(mixed.targets.sum(1), torch.ones(20))
    assert torch.allclose(
        mixed.targets.gather(1, batch.labels[:, None]).squeeze(1),
        torch.where(plabels == batch.labels, torch.ones(20), lam),
    )


def test_mixing_stops_with_the_policy_and_needs_a_loader(dataset):
    stage = MixStage(Mixer(1.0, seed=0), epochs=2)
    pipeline = BatchPipeline({"mix": stage}, Normalize((0.0,) * 3, (1.0 / 255,) * 3))
    loader = DeviceLoader(dataset, 10, shuffle=False)
    batch = next(iter(loader))
    late = pipeline(batch, 2, loader)
    assert late.targets is None and torch.equal(late.images, batch.images.float())
    with pytest.raises(ValueError, match="needs the training loader to gather the partners"):
        pipeline(batch, 0)
    assert pipeline.replay_key()["stages"]["mix"] == {
        "type": "MixStage",
        "partner": "training-set-by-id",
        "epochs": 2,
        "mixer": {"type": "Mixer", "mixup_alpha": 1.0, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5, "seed": 0},
    }


def test_gather_returns_the_samples_at_the_positions(dataset):
    loader = DeviceLoader(dataset, 10)
    got = loader.gather(torch.tensor([5, 5, 0]))
    assert isinstance(got, Batch) and got.indices.tolist() == [1005, 1005, 1000]
    assert torch.equal(got.images[0], dataset.images[5]) and got.labels.tolist() == [0, 0, 0]
