"""Spec strings: the forms parse to the right policy, bad ones fail naming the accepted forms."""

from __future__ import annotations

import math

import pytest
import torch

from augkd.augment.policies import (
    GEOMETRIC_OPS,
    RANDAUGMENT_OPS,
    AutoAugment,
    NoAugment,
    RandAugment,
    TrivialAugmentWide,
)
from augkd.augment.spec import PolicySpec, build_policy, parse_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("none", PolicySpec("none")),
        ("aa-cifar10", PolicySpec("aa", table="cifar10")),
        ("aa-imagenet", PolicySpec("aa", table="imagenet")),
        ("AA-SVHN", PolicySpec("aa", table="svhn")),
        ("ra-n2-m9", PolicySpec("ra", num_ops=2, magnitude=9.0)),
        ("ra-n2-m28-mstd0.5", PolicySpec("ra", num_ops=2, magnitude=28.0, magnitude_std=0.5)),
        ("ra-m15-n3-p0.5-mmax20", PolicySpec("ra", num_ops=3, magnitude=15.0, magnitude_max=20.0, prob=0.5)),
        ("ra-n1-m9-mstdinf", PolicySpec("ra", num_ops=1, magnitude=9.0, magnitude_std=math.inf)),
        ("geo-n2-m5", PolicySpec("geo", num_ops=2, magnitude=5.0)),
        (" geo-n2-m2.5 ", PolicySpec("geo", num_ops=2, magnitude=2.5)),
        ("ta-wide", PolicySpec("ta", table="wide")),
        ("ta-wide-p0.8", PolicySpec("ta", table="wide", prob=0.8)),
    ],
)
def test_good_specs_parse_and_round_trip(spec: str, expected: PolicySpec) -> None:
    parsed = parse_spec(spec)
    assert parsed == expected
    assert parse_spec(str(parsed)) == parsed


def test_canonical_form() -> None:
    assert str(parse_spec("RA-m28-n2-mstd0.5")) == "ra-n2-m28-mstd0.5"
    assert str(parse_spec("geo-n2-m5-p0.50")) == "geo-n2-m5-p0.5"
    assert build_policy("ra-m9-n2").spec == "ra-n2-m9"


def test_build_policy_wires_the_parameters() -> None:
    ra = build_policy("ra-n3-m28-mstd0.5-p0.5", image_size=224, seed=4, fill=0)
    assert isinstance(ra, RandAugment)
    assert (ra.num_steps, ra.magnitude, ra.magnitude_std, ra.magnitude_max, ra.prob) == (3, 28.0, 0.5, 30.0, 0.5)
    assert ra.op_names == RANDAUGMENT_OPS and ra.space == "autoaugment"
    assert (ra.image_size, ra.seed, ra.fill) == ((224, 224), 4, 0)
    geo = build_policy("geo-n2-m7")
    assert isinstance(geo, RandAugment) and geo.space == "geometric" and geo.op_names == GEOMETRIC_OPS
    assert geo.magnitude_max == 10.0
    aa = build_policy("aa-svhn")
    assert isinstance(aa, AutoAugment) and len(aa.sub_policies) == 25 and aa.num_steps == 2
    assert isinstance(build_policy("ta-wide"), TrivialAugmentWide)
    assert isinstance(build_policy("none"), NoAugment)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "ra",
        "ra-n2",
        "ra-m9",
        "ra-n2-m31",
        "ra-n2-m9-mmax8",
        "ra-n0-m9",
        "ra-n17-m9",
        "ra-n2.5-m9",
        "ra-ninf-m9",
        "ra-n2-n3-m9",
        "ra-n2-m9-p1.5",
        "ra-n2-m9-x1",
        "ra-n2-m-9",
        "ran-m9-n2",
        "geo-n2-m11",
        "aa",
        "aa-cifar100",
        "aa-cifar10-p0.5",
        "ta",
        "ta-wide-n2",
        "none-p0.5",
    ],
)
def test_bad_specs_raise_with_the_forms(spec: str) -> None:
    with pytest.raises(ValueError, match=r"expected one of: 'none'.*'aa-cifar10'.*'ra-n<N>.*'geo-n<N>.*'ta-wide"):
        build_policy(spec)


def test_error_names_the_problem() -> None:
    with pytest.raises(ValueError, match=r"m must be in \[0, 10\] for 'geo', got 12"):
        parse_spec("geo-n2-m12")
    with pytest.raises(ValueError, match="missing m"):
        parse_spec("ra-n2")
    with pytest.raises(ValueError, match="unknown policy family 'ran'"):
        parse_spec("ran-m9-n2")


@pytest.mark.parametrize(
    ("timm", "ours"),
    [
        ("rand-m9-n2-mstd0.5", "ra-n2-m9-mstd0.5-mmax10-p0.5"),
        ("rand-m9-mstd0.5-inc1", "ra-n2-m9-mstd0.5-mmax10-p0.5"),
        ("rand-m15-n3", "ra-n3-m10-mmax10-p0.5"),  # timm clamps M to its mmax (10 by default)
        ("rand-m15-mmax20-p1", "ra-n2-m15-mmax20"),
        ("rand-mstd101", "ra-n2-m10-mstdinf-mmax10-p0.5"),  # timm: mstd > 100 draws levels uniformly
        ("rand", "ra-n2-m10-mmax10-p0.5"),
    ],
)
def test_timm_rand_specs_map_to_randaugment_with_timms_defaults(timm: str, ours: str) -> None:
    assert str(parse_spec(timm)) == ours
    policy = build_policy(timm, image_size=32, seed=0)
    assert policy.spec == ours and type(policy).__name__ == "RandAugment"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("augmix-m5-w4-d2", "AugMix is not supported"),
        ("rand-m9-w0", "op weights"),
        ("rand-m9-inc2", "inc must be 0 or 1"),
        ("rand-m9-m8", "given twice"),
        ("rand-x3", "unexpected section 'x3'"),
    ],
)
def test_timm_specs_augkd_cannot_follow_are_one_line_errors(spec: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        parse_spec(spec)
    assert "\n" not in str(err.value)


def test_a_policy_without_ids_draws_fresh_parameters() -> None:
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    policy = build_policy("ra-n2-m9", image_size=32, seed=0)
    torch.manual_seed(3)
    a = policy(images)
    torch.manual_seed(3)
    assert torch.equal(policy(images), a) and not torch.equal(policy(images), a)
    assert a.dtype == torch.uint8 and a.shape == images.shape
