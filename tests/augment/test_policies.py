"""Policies: tables, replayable sampling, the grouped apply path, magnitude noise, on real CIFAR-10 images."""

from __future__ import annotations

import math

import pytest
import torch

from augkd.augment.ops import OPS, apply_op, level_to_arg
from augkd.augment.policies import (
    AUTOAUGMENT_POLICIES,
    GEOMETRIC_OPS,
    STEP_KINDS,
    STEP_STRIDE,
    TRIVIALAUGMENT_WIDE_OPS,
    step_slot,
)
from augkd.augment.rng import SLOTS
from augkd.augment.spec import build_policy
from augkd.bench.augment import sample_images

SPECS = ["aa-cifar10", "aa-imagenet", "aa-svhn", "ra-n2-m9", "ra-n3-m28-mstd0.5-p0.7", "geo-n2-m5", "ta-wide"]
_TV_NAMES = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y"}


@pytest.fixture(scope="module")
def images(cifar10_zip) -> torch.Tensor:
    return sample_images(cifar10_zip, 48)


def _assert_params_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------------ tables
@pytest.mark.parametrize("table", ["cifar10", "imagenet", "svhn"])
def test_autoaugment_tables_match_torchvision(table: str) -> None:
    from torchvision.transforms import v2

    ours = AUTOAUGMENT_POLICIES[table]
    assert len(ours) == 25
    theirs = v2.AutoAugment(getattr(v2.AutoAugmentPolicy, table.upper()))._policies
    for ours_sp, theirs_sp in zip(ours, theirs, strict=True):
        assert len(ours_sp) == 2
        for (name, prob, level), (tv_name, tv_prob, tv_level) in zip(ours_sp, theirs_sp, strict=True):
            assert name in OPS
            assert name == _TV_NAMES.get(tv_name, tv_name.lower())
            assert prob == tv_prob
            assert 0 <= level <= 10
            if tv_level is not None:
                assert level == tv_level


def test_imagenet_table_levels_match_timm() -> None:
    from timm.data.auto_augment import auto_augment_policy_original

    timm_levels = [[op.magnitude for op in sp] for sp in auto_augment_policy_original({})]
    assert [[lv for _, _, lv in sp] for sp in AUTOAUGMENT_POLICIES["imagenet"]] == timm_levels


def test_slot_layout_is_fixed() -> None:
    # Stored params and soft-label caches depend on these numbers: changing them must fail a test.
    assert SLOTS["policy_base"] == 1000 and STEP_STRIDE == 16
    assert step_slot(0, "op") == 1000 and step_slot(1, "sign") == 1000 + 16 + STEP_KINDS["sign"]
    assert len(set(STEP_KINDS.values())) == len(STEP_KINDS) and max(STEP_KINDS.values()) < STEP_STRIDE


# ------------------------------------------------------------------------------------------------ replay
@pytest.mark.parametrize("spec", SPECS)
def test_split_and_shuffled_batches_give_identical_images(spec: str, images: torch.Tensor) -> None:
    policy = build_policy(spec, image_size=32, seed=3)
    indices = torch.arange(1000, 1000 + len(images))
    full = policy(images, indices, 5)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    first, second = perm[:17], perm[17:]
    assert torch.equal(policy(images[first], indices[first], 5), full[first])
    assert torch.equal(policy(images[second], indices[second], 5), full[second])


@pytest.mark.parametrize("spec", SPECS)
def test_params_round_trip(spec: str, images: torch.Tensor) -> None:
    policy = build_policy(spec, image_size=32, seed=1)
    indices = torch.arange(len(images))
    params = policy.sample(indices, 2)
    assert params["op"].shape == (len(images), policy.num_steps)
    assert torch.equal(policy(images, None, params=params), policy(images, indices, 2))
    _assert_params_equal(params, policy.sample(indices, 2))


@pytest.mark.parametrize("spec", SPECS)
def test_params_depend_on_epoch_and_seed_only(spec: str) -> None:
    indices = torch.arange(512)
    params = build_policy(spec, seed=7).sample(indices, 4)
    _assert_params_equal(params, build_policy(spec, seed=7).sample(indices, 4))
    for other in (build_policy(spec, seed=7).sample(indices, 5), build_policy(spec, seed=8).sample(indices, 4)):
        assert not torch.equal(other["op"], params["op"]) or not torch.equal(other["level"], params["level"])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_index_dtype_does_not_change_params(dtype: torch.dtype) -> None:
    policy = build_policy("ra-n2-m9-mstd0.5-p0.5", seed=11)
    indices = torch.arange(200)
    _assert_params_equal(policy.sample(indices, 1), policy.sample(indices.to(dtype), 1))


def test_forward_does_not_modify_input(images: torch.Tensor) -> None:
    before = images.clone()
    out = build_policy("ra-n2-m9")(images, torch.arange(len(images)), 0)
    assert torch.equal(images, before) and not torch.equal(out, images)
    assert out.dtype == torch.uint8 and out.shape == images.shape


# ------------------------------------------------------------------------------------------------ apply
@pytest.mark.parametrize("spec", ["aa-cifar10", "ra-n2-m9", "geo-n3-m6", "ta-wide"])
def test_grouped_apply_equals_per_image_loop(spec: str, images: torch.Tensor) -> None:
    policy = build_policy(spec, image_size=32, seed=5)
    params = policy.sample(torch.arange(len(images)), 0)
    expected = []
    for i in range(len(images)):
        image = images[i : i + 1]
        for step in range(policy.num_steps):
            name = policy.op_names[int(params["op"][i, step])]
            if params["applied"][i, step] and name != "identity":
                centers = params["center"][i : i + 1, step] if name == "cutout" else None
                level = params["level"][i : i + 1, step]
                image = apply_op(image, name, level, policy.fill, space=policy.space, centers=centers)
        expected.append(image)
    assert torch.equal(policy.apply(images, params), torch.cat(expected))


def test_grouped_apply_handles_odd_sizes_and_offsets(images: torch.Tensor) -> None:
    # 3 x 31 x 31 bytes per image fits no wider word, and a slice starting at image 1 has an odd storage offset.
    odd = images[:, :, :31, :31].contiguous()[1:]
    policy = build_policy("ra-n2-m9", image_size=31, seed=2)
    indices = torch.arange(1, len(odd) + 1)
    out = policy(odd, indices, 0)
    parts = [policy(odd[i : i + 1], indices[i : i + 1], 0) for i in range(len(odd))]
    assert torch.equal(out, torch.cat(parts))


def test_geometric_magnitude_zero_is_identity(images: torch.Tensor) -> None:
    out = build_policy("geo-n2-m0", image_size=32)(images, torch.arange(len(images)), 0)
    assert torch.equal(out, images)


def test_none_policy_is_identity(images: torch.Tensor) -> None:
    policy = build_policy("none")
    assert torch.equal(policy(images, torch.arange(len(images)), 0), images)
    assert policy.describe(policy.sample(torch.arange(2), 0)) == ["#0: no augmentation", "#1: no augmentation"]


def test_bad_inputs_raise(images: torch.Tensor) -> None:
    policy = build_policy("ra-n2-m9")
    with pytest.raises(ValueError, match="uint8"):
        policy(images.float(), torch.arange(len(images)), 0)
    with pytest.raises(ValueError, match="batch"):
        policy(images[:4], None, params=policy.sample(torch.arange(5), 0))
    with pytest.raises(ValueError, match="indices"):
        policy.sample(torch.rand(4), 0)


# ------------------------------------------------------------------------------------------------ statistics
def test_magnitude_noise_statistics() -> None:
    indices = torch.arange(40_000)
    level = build_policy("ra-n2-m9-mstd0.5").sample(indices, 0)["level"].abs()
    assert abs(level.mean().item() - 9.0) < 0.02
    assert abs(level.std().item() - 0.5) < 0.02
    # clamped at the top of the range, and uniform in [0, M] for mstd=inf
    clamped = build_policy("ra-n2-m29-mstd3").sample(indices, 0)["level"].abs()
    assert clamped.max().item() == 30.0 and (clamped == 30.0).float().mean().item() > 0.3
    uniform = build_policy("ra-n2-m9-mstdinf").sample(indices, 0)["level"].abs()
    assert abs(uniform.mean().item() - 4.5) < 0.05 and uniform.min() >= 0 and uniform.max() <= 9.0
    # steps draw independent noise
    corr = torch.corrcoef(build_policy("ra-n2-m9-mstd1").sample(indices, 0)["level"].abs().T)[0, 1]
    assert abs(corr.item()) < 0.03


def test_signs_ops_and_apply_probability() -> None:
    policy = build_policy("ra-n2-m9-p0.3")
    params = policy.sample(torch.arange(30_000), 0)
    signed = torch.tensor([OPS[n].signed for n in policy.op_names])[params["op"]]
    level = params["level"]
    assert (level[~signed] == 9.0).all()
    assert abs((level[signed] < 0).float().mean().item() - 0.5) < 0.02
    counts = torch.bincount(params["op"].flatten(), minlength=len(policy.op_names)).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    assert abs(params["applied"].float().mean().item() - 0.3) < 0.01


def test_autoaugment_subpolicy_and_probabilities() -> None:
    policy = build_policy("aa-cifar10")
    params = policy.sample(torch.arange(50_000), 0)
    sub = params["subpolicy"]
    counts = torch.bincount(sub, minlength=25).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.1
    table = AUTOAUGMENT_POLICIES["cifar10"]
    for k in (0, 3, 14, 21):
        rows = sub == k
        for step, (name, prob, level) in enumerate(table[k]):
            assert (params["op"][rows, step] == policy.op_names.index(name)).all()
            assert (params["level"][rows, step].abs() == level).all()
            assert abs(params["applied"][rows, step].float().mean().item() - prob) < 0.05


def test_trivialaugment_levels_span_the_wide_range() -> None:
    policy = build_policy("ta-wide", image_size=32)
    params = policy.sample(torch.arange(30_000), 0)
    op, level = params["op"][:, 0], params["level"][:, 0].abs()
    top = policy.max_levels((32, 32))
    assert policy.op_names == TRIVIALAUGMENT_WIDE_OPS
    assert (level <= top[op] + 1e-4).all()
    rotate = op == policy.op_names.index("rotate")
    assert math.isclose(level[rotate].max().item(), 45.0, rel_tol=1e-5)  # 135 degrees on the AutoAugment scale
    assert len(torch.unique(level[rotate])) == 31


@pytest.mark.parametrize("size", [32, 224])
def test_trivialaugment_maxima_reach_torchvisions_wide_ranges(size: int) -> None:
    policy = build_policy("ta-wide", image_size=size)
    top = dict(zip(policy.op_names, policy.max_levels((size, size)).tolist(), strict=True))
    expected = {"rotate": 135.0, "shear_x": 0.99, "shear_y": 0.99, "translate_x": 32.0, "translate_y": 32.0}
    expected |= {name: 1.99 for name in ("brightness", "color", "contrast", "sharpness")}
    expected |= {"solarize": 0, "posterize": 2}
    for name, value in expected.items():
        arg = level_to_arg(name, torch.tensor([top[name]]), size)
        assert arg.item() == pytest.approx(value, rel=1e-5), name


def test_describe_names_ops_levels_and_skips() -> None:
    policy = build_policy("geo-n2-m5-p0.5", image_size=32)
    params = policy.sample(torch.arange(64), 0)
    lines = policy.describe(params)
    assert len(lines) == 64 and lines[3].startswith("#3: ")
    text = "\n".join(lines)
    assert "skipped" in text and "cutout(5.00 @ " in text
    assert all(any(name in line for name in GEOMETRIC_OPS) for line in lines)
    assert "sub-policy" in build_policy("aa-svhn").describe(build_policy("aa-svhn").sample(torch.arange(2), 0))[0]
