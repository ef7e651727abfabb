"""Spec strings: the forms parse to the right policy, bad ones fail naming the accepted forms."""

from __future__ import annotations

import math

import pytest

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
        "rand-m9-n2",
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
    with pytest.raises(ValueError, match="unknown policy family 'rand'"):
        parse_spec("rand-m9-n2")
