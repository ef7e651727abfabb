"""The fused C kernel against the grouped torch path (itself checked against Pillow): the same bytes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from augkd.augment import kernel
from augkd.augment.ops import OPS, apply_op
from augkd.augment.policies import RandAugment
from augkd.augment.spec import build_policy
from augkd.bench.augment import sample_images

pytestmark = pytest.mark.skipif(not kernel.available(), reason="no C compiler for augkd's augmentation kernel")


@pytest.fixture(scope="module")
def images(cifar10_zip) -> torch.Tensor:
    return sample_images(cifar10_zip, 64)


@pytest.fixture()
def torch_path() -> Iterator[None]:
    old = kernel.set_enabled(False)
    yield
    kernel.set_enabled(old)


def _both(policy, images: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    assert kernel.supports(images, policy.op_names)
    fused = policy.apply(images, params)
    old = kernel.set_enabled(False)
    try:
        reference = policy.apply(images, params)
    finally:
        kernel.set_enabled(old)
    return fused, reference


def _edge_images(images: torch.Tensor) -> torch.Tensor:
    """Real images plus the cases that take special branches: constant, two-valued, one bright pixel."""
    flat = torch.full((4, 3, 32, 32), 77, dtype=torch.uint8)
    flat[1] = 0
    flat[2, :, :16] = 255
    flat[3, 0, 5, 5] = 250
    return torch.cat([images, flat])


@pytest.mark.parametrize(
    "spec", ["aa-cifar10", "aa-imagenet", "aa-svhn", "ra-n2-m9", "ra-n3-m28-mstd0.5-p0.7", "geo-n3-m6", "ta-wide"]
)
def test_kernel_equals_torch_path_on_policies(spec: str, images: torch.Tensor) -> None:
    batch = _edge_images(images)
    policy = build_policy(spec, image_size=32, seed=9)
    for epoch in range(3):
        params = policy.sample(torch.arange(len(batch)), epoch)
        fused, reference = _both(policy, batch, params)
        assert torch.equal(fused, reference), (spec, epoch)


@pytest.mark.parametrize("space", ["autoaugment", "geometric"])
def test_kernel_equals_torch_path_on_every_op_and_level(space: str, images: torch.Tensor) -> None:
    # Every op of the space at every image, signed levels from the extremes through 0 (30 and -30 extrapolate).
    batch = _edge_images(images)
    b = len(batch)
    ops = ["shear_x", "shear_y", "translate_x", "translate_y", "cutout"] if space == "geometric" else sorted(OPS)
    top = 10.0 if space == "geometric" else 30.0
    policy = RandAugment(1, 0.0, ops=ops, space=space, image_size=32, seed=0, magnitude_max=top)
    levels = torch.linspace(-top, top, b)
    for op_id, name in enumerate(ops):
        params = policy.sample(torch.arange(b), 0)
        params["op"].fill_(op_id)
        params["level"][:, 0] = levels[torch.randperm(b, generator=torch.Generator().manual_seed(op_id))]
        fused, reference = _both(policy, batch, params)
        assert torch.equal(fused, reference), name
        centers = params["center"][:1, 0]
        one = apply_op(batch[:1], name, params["level"][:1, 0], policy.fill, space=space, centers=centers)
        assert torch.equal(fused[:1], one), name


def test_kernel_on_large_odd_images_and_threads(woof_zip) -> None:
    photos = sample_images(woof_zip, 6, image_size=97)[:, :, :, :61].contiguous()  # odd, non-square
    policy = build_policy("ra-n2-m14", image_size=(97, 61), seed=4)
    params = policy.sample(torch.arange(6), 1)
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)  # the batch is split over n kernel threads
            fused, reference = _both(policy, photos, params)
            assert torch.equal(fused, reference), n
    finally:
        torch.set_num_threads(threads)


def test_kernel_never_writes_the_input(images: torch.Tensor) -> None:
    before = images.clone()
    out = build_policy("ra-n2-m9")(images, torch.arange(len(images)), 0)
    assert torch.equal(images, before) and not torch.equal(out, images)


def test_unsupported_batches_take_the_torch_path(images: torch.Tensor, torch_path: None) -> None:
    policy = build_policy("ra-n2-m9")
    assert not kernel.supports(images, policy.op_names)  # disabled
    kernel.set_enabled(True)
    assert not kernel.supports(images[:, :1], policy.op_names)  # greyscale
    assert not kernel.supports(images.float(), policy.op_names)
    with pytest.raises(RuntimeError, match="not available"):
        kernel.set_enabled(False)
        kernel.apply_steps(images, policy.op_names, "autoaugment", *[torch.zeros(1)] * 4, fill=128)


def test_a_failed_build_warns_once_and_falls_back(tmp_path, monkeypatch, images: torch.Tensor) -> None:
    monkeypatch.setenv("CC", "false")  # a compiler that always fails
    monkeypatch.setenv("AUGKD_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(kernel, "_state", {"enabled": True})
    with pytest.warns(UserWarning, match="kernel is unavailable"):
        assert kernel.load() is None
    assert not kernel.supports(images, ("invert",)) and list(tmp_path.iterdir()) == []
    out = build_policy("ra-n2-m9")(images, torch.arange(len(images)), 0)  # the torch path
    monkeypatch.undo()
    assert torch.equal(out, build_policy("ra-n2-m9")(images, torch.arange(len(images)), 0))
