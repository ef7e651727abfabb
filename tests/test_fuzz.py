"""Fuzzing the user-facing inputs: config overrides, policy spec strings, CLI arguments.

Every input either builds or fails with the project's one-line error that names the key; never another exception,
never a traceback from deep inside, never a hang (hypothesis ``deadline``). Examples are bounded so the file runs in
well under 30 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import typing

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from augkd.augment.spec import build_policy
from augkd.cli import main
from augkd.config import ConfigError, config_to_dict, key_name, load_config
from augkd.train.config import TrainConfig

# AUGKD_FUZZ_EXAMPLES=5000 fuzzes deeper with fresh random draws; the default is a fixed, quick sample for CI.
EXAMPLES = int(os.environ.get("AUGKD_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 150, deadline=2000, suppress_health_check=[HealthCheck.too_slow], derandomize=not EXAMPLES
)


def _keys(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        key = prefix + key_name(f.name)
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _keys(hints[f.name], key + ".")
    return keys


KEYS = _keys(TrainConfig)
NASTY_VALUES = [
    "",
    "~",
    "null",
    "None",
    ".nan",
    ".inf",
    "-.inf",
    "1e999",
    "-1",
    "0",
    "2**64",
    "99999999999999999999999",
    "0x10",
    "1e-3",
    "1_000",
    "true",
    "off",
    "yes",
    "[1, 2]",
    "[]",
    "{}",
    "{a: 1}",
    "[[1]]",
    "&a [*a]",
    "&b {x: *b}",
    "!!python/object/apply:os.system ['echo pwned']",
    "!!binary aGk=",
    "!!set {a}",
    "!!timestamp 2024-01-01",
    "2024-01-31",
    "'quoted'",
    '"x\\ny"',
    "a: b: c",
    "- a",
    "[unclosed",
    "{bad",
    "\x00",
    "\udcff",
    "é" * 300,
    "x" * 5000,
    "../../etc",
    "/",
    ".",
    "..",
    "a/b",
    "cuda:0",
    "cuda:x",
    "ra-n2-m9",
    "aa-cifar10",
    "geo-n99-m5",
]
VALUES = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-5, 5), max_size=3).map(str),
)
KEY = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k[:-1] if len(k) > 1 else k + "x"),  # typos
    st.sampled_from(["model.kwargs.width", "model.kwargs.a.b", "optim..lr", ".lr", "data.root.x", " epochs "]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", max_size=15),
)
OVERRIDE = st.tuples(KEY, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}") | st.text(max_size=15)


def _names_a_key(message: str, overrides: list[str]) -> bool:
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        parts = key.split(".")
        if any(".".join(parts[:i]) in message for i in range(1, len(parts) + 1) if ".".join(parts[:i])):
            return True
        if repr(item) in message or repr(key) in message:
            return True
    return False


@FUZZ
@given(st.lists(OVERRIDE, min_size=1, max_size=3))
def test_config_overrides_build_or_fail_in_one_line(overrides):
    try:
        cfg = load_config(TrainConfig, None, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert _names_a_key(message, overrides), (message, overrides)
        return
    # What a run does with a config before it trains: save it as YAML, rebuild it from that (as resume does).
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    assert load_config(TrainConfig, None, []) is not None and yaml.safe_load(text)["name"] == cfg.name


VALID_SPECS = [
    "none",
    "aa-cifar10",
    "aa-imagenet",
    "aa-svhn",
    "ra-n2-m9",
    "ra-n2-m28-mstd0.5-mmax30",
    "geo-n2-m5-p0.5",
    "ta-wide",
    "ta-wide-p0.5",
    "ra-n1-m0-mstdinf",
]


@st.composite
def mutated_spec(draw) -> str:
    spec = list(draw(st.sampled_from(VALID_SPECS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
        i = draw(st.integers(0, len(spec)))
        char = draw(st.sampled_from([*list("-0123456789.mnpstdaxi e+"), "inf", "nan", "-", "--", "\x00", "é"]))
        if op == "insert":
            spec.insert(i, char)
        elif spec and i < len(spec):
            if op == "delete":
                del spec[i]
            elif op == "replace":
                spec[i] = char
            elif i + 1 < len(spec):
                spec[i], spec[i + 1] = spec[i + 1], spec[i]
    return "".join(spec)


@FUZZ
@given(st.one_of(mutated_spec(), st.text(max_size=25), st.sampled_from(VALID_SPECS)))
def test_policy_specs_build_or_fail_in_one_line(spec):
    try:
        build_policy(spec, image_size=32, seed=0)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(f"bad augmentation policy spec {spec.strip().lower()!r}") or repr(spec) in message
        assert "\n" not in message
        return
    # a spec that builds also passes the config check of augment.policy
    assert load_config(TrainConfig, None, [f"augment.policy={yaml.safe_dump(spec).strip()}"]) is not None


@settings(max_examples=EXAMPLES or 40, deadline=5000, derandomize=not EXAMPLES)
@given(st.lists(OVERRIDE, min_size=1, max_size=2))
def test_cli_exits_0_or_2_with_one_line(overrides):
    out, err = io.StringIO(), io.StringIO()
    parsed = True
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["config", *overrides])
        except SystemExit as exc:  # argparse itself: an argument that looks like an option (``-x``)
            code, parsed = exc.code, False
    assert code in (0, 2)
    if code == 2:
        lines = err.getvalue().rstrip("\n").split("\n")  # not splitlines(): "\x85" in an echoed argument is no line
        if not parsed:  # argparse prints its usage line, then "augkd[ config]: error: ..."
            assert len(lines) == 2 and lines[0].startswith("usage: augkd"), err.getvalue()
            assert lines[1].startswith("augkd") and ": error: " in lines[1], err.getvalue()
        else:
            assert len(lines) == 1 and lines[0].startswith("augkd config: error: "), err.getvalue()
    else:
        assert err.getvalue() == "" and out.getvalue()  # the resolved config (or --list, which "--l" abbreviates)
