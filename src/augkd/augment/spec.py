"""Policy spec strings: the one place where a short string such as ``ra-n2-m9`` becomes a policy.

Grammar (case-insensitive; sections separated by ``-``; options after the head in any order, each at most once)::

    none                                   no augmentation
    aa-cifar10 | aa-imagenet | aa-svhn     AutoAugment with the paper's policy table for that dataset
    ra-n<N>-m<M>[-mstd<S>][-mmax<X>][-p<P>]    RandAugment: N ops, level M in [0, 30]
    geo-n<N>-m<M>[-mstd<S>][-mmax<X>][-p<P>]   RandAugment in the paper's geometric space (§4.1), M in [0, 10]
    ta-wide[-p<P>]                         TrivialAugment-wide

    N     ops per image, an integer in [1, 16]
    M     magnitude (AutoAugment level), a number such as 9 or 2.5
    S     std of gaussian noise on M per op draw (timm's mstd); ``inf`` draws levels uniformly in [0, M]
    X     clamp for noisy levels (default 30, or 10 in the geometric space)
    P     probability that each op step fires (default 1)

timm's RandAugment strings are accepted too and mapped to ``ra`` with timm's defaults
(:func:`from_timm_spec`)::

    rand[-n<N>][-m<M>][-mstd<S>][-mmax<X>][-p<P>][-inc<0|1>]
        -> ra-n<N, 2>-m<min(M, X), 10>[-mstd<S>]-mmax<X, 10>-p<P, 0.5>

``mstd`` above 100 is timm's "uniform" (``inf``). augkd's ops are timm's *increasing* variants (posterize and
solarize damage grow with the level, enhance ops are ``1 +- 0.9 L / 10``), so ``inc1`` and ``inc0`` map to the same
policy; augkd's RandAugment op list has cutout where timm's has solarize_add. ``augmix`` and timm's ``w`` / ``t``
options are refused.

Examples:
    >>> parse_spec("ra-n2-m9")
    PolicySpec(family='ra', table=None, num_ops=2, magnitude=9.0, magnitude_std=0.0, magnitude_max=None, prob=1.0)
    >>> str(parse_spec("RA-m28-n2-mstd0.5"))
    'ra-n2-m28-mstd0.5'
    >>> str(parse_spec("geo-n2-m5-p0.5"))
    'geo-n2-m5-p0.5'
    >>> parse_spec("aa-cifar10").table
    'cifar10'
    >>> str(parse_spec("rand-m9-mstd0.5-inc1"))
    'ra-n2-m9-mstd0.5-mmax10-p0.5'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from augkd.augment.policies import (
    AUTOAUGMENT_POLICIES,
    GEOMETRIC_OPS,
    MAX_STEPS,
    RANDAUGMENT_OPS,
    AutoAugment,
    NoAugment,
    Policy,
    RandAugment,
    TrivialAugmentWide,
)

__all__ = ["SPEC_FORMS", "PolicySpec", "build_policy", "from_timm_spec", "parse_spec", "with_magnitude"]

#: The accepted forms, quoted in every parse error.
SPEC_FORMS = (
    "'none'; "
    + " | ".join(f"'aa-{name}'" for name in AUTOAUGMENT_POLICIES)
    + "; 'ra-n<N>-m<M 0-30>[-mstd<S>][-mmax<X>][-p<P>]' (e.g. 'ra-n2-m9', 'ra-n2-m28-mstd0.5'); "
    "'geo-n<N>-m<M 0-10>[-mstd<S>][-mmax<X>][-p<P>]' (e.g. 'geo-n2-m5'); 'ta-wide[-p<P>]'; "
    "timm's 'rand[-n<N>][-m<M>][-mstd<S>][-mmax<X>][-p<P>][-inc<0|1>]' (e.g. 'rand-m9-mstd0.5-inc1')"
)

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_OPTION = re.compile(rf"^(mstd|mmax|n|m|p)({_NUMBER}|inf)$")
_TIMM_OPTION = re.compile(rf"^(mstd|mmax|inc|n|m|p)({_NUMBER})$")
# Which options each family takes, and which of them it needs.
_FAMILY_OPTIONS: dict[str, tuple[set[str], set[str]]] = {
    "ra": ({"n", "m", "mstd", "mmax", "p"}, {"n", "m"}),
    "geo": ({"n", "m", "mstd", "mmax", "p"}, {"n", "m"}),
    "ta": ({"p"}, set()),
    "aa": (set(), set()),
    "none": (set(), set()),
}


@dataclass(frozen=True)
class PolicySpec:
    """A parsed spec string; ``str(spec)`` gives its canonical form.

    Attributes:
        family: ``"none"``, ``"aa"`` (AutoAugment), ``"ra"`` (RandAugment), ``"geo"`` (geometric space) or
            ``"ta"`` (TrivialAugment-wide).
        table: the AutoAugment table (``"cifar10"``, ``"imagenet"``, ``"svhn"``), or ``"wide"`` for ``ta``.
        num_ops: N, ops per image (``ra``, ``geo``).
        magnitude: M, the level of every op (``ra``, ``geo``).
        magnitude_std: gaussian noise std on M per op draw; ``inf`` = uniform in [0, M].
        magnitude_max: clamp of noisy levels; ``None`` = the space's maximum (30, or 10 for ``geo``).
        prob: probability that each op step fires.
    """

    family: str
    table: str | None = None
    num_ops: int | None = None
    magnitude: float | None = None
    magnitude_std: float = 0.0
    magnitude_max: float | None = None
    prob: float = 1.0

    def __str__(self) -> str:
        if self.family == "none":
            return "none"
        if self.family in ("aa", "ta"):
            head = f"{self.family}-{self.table}"
        else:
            head = f"{self.family}-n{self.num_ops}-m{_fmt(self.magnitude)}"
            if self.magnitude_std:
                head += f"-mstd{_fmt(self.magnitude_std)}"
            if self.magnitude_max is not None:
                head += f"-mmax{_fmt(self.magnitude_max)}"
        return head + (f"-p{_fmt(self.prob)}" if self.prob != 1.0 else "")


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if math.isinf(x):
        return "inf"
    return f"{x:g}"


def _error(spec: str, why: str) -> ValueError:
    return ValueError(f"bad augmentation policy spec {spec!r}: {why}; expected one of: {SPEC_FORMS}")


def from_timm_spec(spec: str) -> str:
    """The augkd spec of a timm RandAugment string (``rand-m9-n2-mstd0.5``, ``rand-m9-mstd0.5-inc1``), with timm's
    defaults made explicit: N = 2, M = 10, each op firing with p = 0.5, noisy levels clamped to [0, 10], and M
    itself clamped to the clamp as timm does (see the module docstring for the op list).

    Raises:
        ValueError: ``augmix``, an option timm has but augkd cannot follow (``w``, ``t``), or a bad section.
    """
    parts = spec.strip().lower().split("-")
    if parts[0] == "augmix":
        raise _error(spec, "AugMix is not supported (it mixes augmented views, not one op chain); use a 'rand' spec")
    if parts[0] != "rand":
        raise _error(spec, "not a timm 'rand' spec")
    values: dict[str, float] = {}
    for part in parts[1:]:
        match = _TIMM_OPTION.match(part)
        if match is None:
            why = "timm's op weights ('w') and op lists ('t') are not supported" if part[:1] in "wt" else ""
            raise _error(spec, why or f"unexpected section {part!r} of a timm 'rand' spec")
        if match.group(1) in values:
            raise _error(spec, f"option {match.group(1)!r} given twice")
        values[match.group(1)] = float(match.group(2))
    if values.get("inc", 1.0) not in (0.0, 1.0):
        raise _error(spec, "inc must be 0 or 1")
    level_max = values.get("mmax", 10.0)
    std = values.get("mstd", 0.0)
    head = f"ra-n{_fmt(values.get('n', 2.0))}-m{_fmt(min(values.get('m', 10.0), level_max))}"
    noise = f"-mstd{'inf' if std > 100 else _fmt(std)}" if std else ""
    return f"{head}{noise}-mmax{_fmt(level_max)}-p{_fmt(values.get('p', 0.5))}"


def parse_spec(spec: str) -> PolicySpec:
    """Parse a policy spec string (grammar in the module docstring; timm's ``rand-...`` strings too).

    Raises:
        ValueError: the spec does not match the grammar or a value is out of range; the message lists the forms.
    """
    if not isinstance(spec, str):
        raise _error(str(spec), f"expected a string, got {type(spec).__name__}")
    parts = spec.strip().lower().split("-")
    if parts[0] in ("rand", "augmix"):
        return parse_spec(from_timm_spec(spec))
    family = parts[0]
    if family not in _FAMILY_OPTIONS:
        raise _error(spec, f"unknown policy family {family!r}")
    table = None
    rest = parts[1:]
    if family == "aa":
        if not rest or rest[0] not in AUTOAUGMENT_POLICIES:
            raise _error(spec, f"AutoAugment needs a table name from {sorted(AUTOAUGMENT_POLICIES)}")
        table, rest = rest[0], rest[1:]
    elif family == "ta":
        if not rest or rest[0] != "wide":
            raise _error(spec, "TrivialAugment is spelled 'ta-wide'")
        table, rest = "wide", rest[1:]

    allowed, required = _FAMILY_OPTIONS[family]
    values: dict[str, float] = {}
    for part in rest:
        match = _OPTION.match(part)
        if match is None or match.group(1) not in allowed:
            extra = f" (options for {family!r}: {sorted(allowed)})" if allowed else f" ({family!r} takes no options)"
            raise _error(spec, f"unexpected section {part!r}{extra}")
        name, value = match.group(1), float(match.group(2))
        if name in values:
            raise _error(spec, f"option {name!r} given twice")
        values[name] = value
    missing = required - values.keys()
    if missing:
        raise _error(spec, f"missing {' and '.join(sorted(missing))}")

    num_ops = None
    if "n" in values:
        if not 1 <= values["n"] <= MAX_STEPS or values["n"] != int(values["n"]):
            raise _error(spec, f"n must be an integer in [1, {MAX_STEPS}], got {_fmt(values['n'])}")
        num_ops = int(values["n"])
    level_cap = 10.0 if family == "geo" else 30.0
    magnitude_max = values.get("mmax")
    if magnitude_max is not None and not 0.0 <= magnitude_max <= level_cap:
        raise _error(spec, f"mmax must be in [0, {level_cap:g}] for {family!r}, got {_fmt(magnitude_max)}")
    magnitude = values.get("m")
    cap = level_cap if magnitude_max is None else magnitude_max
    if magnitude is not None and not 0.0 <= magnitude <= cap:
        raise _error(spec, f"m must be in [0, {cap:g}] for {family!r}, got {_fmt(magnitude)}")
    prob = values.get("p", 1.0)
    if not 0.0 <= prob <= 1.0:
        raise _error(spec, f"p must be a probability in [0, 1], got {_fmt(prob)}")
    return PolicySpec(
        family=family,
        table=table,
        num_ops=num_ops,
        magnitude=magnitude,
        magnitude_std=values.get("mstd", 0.0),
        magnitude_max=magnitude_max,
        prob=prob,
    )


def with_magnitude(spec: str, magnitude: float) -> str:
    """``spec`` with its magnitude M replaced, in canonical form: ``with_magnitude("geo-n2-m5", 2) == "geo-n2-m2"``.

    Raises:
        ValueError: ``spec`` is not a ``ra``/``geo`` spec, or ``magnitude`` is out of its range.
    """
    parsed = parse_spec(spec)
    if parsed.family not in ("ra", "geo"):
        raise ValueError(f"policy {spec!r} has no magnitude to set (only 'ra-...' and 'geo-...' specs do)")
    new = str(replace(parsed, magnitude=float(magnitude)))
    return str(parse_spec(new))  # range checks


def build_policy(spec: str | PolicySpec, image_size: int = 32, seed: int = 0, fill: int = 128) -> Policy:
    """Build the policy module a spec string names.

    Args:
        spec: a spec string (grammar in the module docstring) or a parsed :class:`PolicySpec`.
        image_size: the side of the (square) images it will see; sets default cutout centres and TA-wide's
            translate range.
        seed: run seed of the counter-based randomness.
        fill: grey level for uncovered pixels and cutout.

    Returns:
        A :class:`~augkd.augment.policies.Policy`: ``policy(images, indices, epoch)`` augments a uint8 batch.

    Raises:
        ValueError: a bad spec (the message lists the accepted forms).
    """
    parsed = spec if isinstance(spec, PolicySpec) else parse_spec(spec)
    common = {"image_size": image_size, "seed": seed, "fill": fill}
    canonical = str(parsed)
    if parsed.family == "none":
        return NoAugment(**common)
    if parsed.family == "aa":
        return AutoAugment(AUTOAUGMENT_POLICIES[parsed.table], spec=canonical, **common)
    if parsed.family == "ta":
        return TrivialAugmentWide(prob=parsed.prob, spec=canonical, **common)
    geometric = parsed.family == "geo"
    return RandAugment(
        parsed.num_ops,
        parsed.magnitude,
        ops=GEOMETRIC_OPS if geometric else RANDAUGMENT_OPS,
        magnitude_std=parsed.magnitude_std,
        magnitude_max=parsed.magnitude_max,
        prob=parsed.prob,
        space="geometric" if geometric else "autoaugment",
        spec=canonical,
        **common,
    )
