"""Dataclass configs filled from YAML and ``key=value`` overrides, with errors that name the key.

Every section of a run's config is a dataclass with a docstring per field and checks in ``__post_init__``.
This module holds the generic machinery: building a nested dataclass from a dict with type checks, dotted
overrides from the command line, and turning a config back into plain data (saved beside the checkpoints).

Example:
    >>> from augkd.train.config import TrainConfig
    >>> cfg = load_config(TrainConfig, None, ["optim.lr=0.2", "data.subset_per_class=50"])
    >>> cfg.optim.lr
    0.2
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import keyword
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "build_config",
    "check_finite",
    "config_diff",
    "config_from_dict",
    "config_to_dict",
    "describe_changes",
    "field_docs",
    "key_name",
    "load_config",
    "parse_overrides",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config key or value; the message names the key and what is allowed."""


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that names one key twice (YAML would silently keep the last one)."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans and exponents: only ``true``/``false`` are bools (``amp: off`` stays the string ``"off"``)
    and ``1e-3`` is a float; a key given twice in one mapping is an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base constructor reports it
                break
            if duplicate:  # a second `optim:` section or `lr:` key would replace the first one without a word
                line = key_node.start_mark.line + 1
                raise DuplicateKeyError(f"duplicate key {key!r} on line {line} (each key may appear once per mapping)")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Dates stay strings (``name=2024-01-31`` is a run name); booleans are re-added below with YAML 1.2 spellings.
_NOT_IMPLICIT = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NOT_IMPLICIT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 floats too: ``1e-3`` is a number (YAML 1.1, and so PyYAML, reads it as a string without a dot).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def key_name(field_name: str) -> str:
    """The config key of a field: fields named after a Python keyword end in ``_`` (``lambda_`` is ``lambda``)."""
    if field_name.endswith("_") and keyword.iskeyword(field_name[:-1]):
        return field_name[:-1]
    return field_name


def _field_name(key: str) -> str:
    return f"{key}_" if keyword.iskeyword(key) else key


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (safe for YAML, JSON and ``weights_only`` checkpoints)."""

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {key_name(k): rename(v) for k, v in value.items()}
        return value

    return rename(dataclasses.asdict(cfg))


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict) or not data:
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every leaf that differs between two plain configs (a key that
    only one side has counts as a change from or to ``None``), in sorted key order."""
    a, b = _flat(old), _flat(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def describe_changes(changes: dict[str, tuple[Any, Any]], limit: int = 4) -> str:
    """``optim.lr 0.1 -> 0.2, seed 0 -> 1`` (at most ``limit`` changes, then how many more)."""
    items = [f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML file (or defaults) plus ``key=value`` overrides.

    Raises:
        ConfigError: unreadable file, unknown key, or a value of the wrong type or range.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = _yaml_load(path.read_text())
        except DuplicateKeyError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded or {}
    return build_config(cls, data, overrides)


def build_config(cls: type[T], data: dict[str, Any], overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a nested dict (e.g. a checkpoint's saved config) plus ``key=value`` overrides."""
    data = copy.deepcopy(data)
    for dotted, value in parse_overrides(overrides or []):
        _set_dotted(cls, data, dotted, value)
    return config_from_dict(cls, data)


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """Split ``key.sub=value`` strings; values are read as YAML scalars (``0.1``, ``true``, ``[1, 2]``)."""
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=0.1)")
        dotted, raw = item.split("=", 1)
        try:
            value = _yaml_load(raw) if raw.strip() else ""
        except DuplicateKeyError as exc:
            raise ConfigError(f"{dotted.strip()}: {exc}") from None
        except yaml.YAMLError:
            value = raw
        parsed.append((dotted.strip(), value))
    return parsed


def config_from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a (nested) dataclass from a dict, checking keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        name = _field_name(str(key))
        if name not in fields:
            raise ConfigError(_unknown_key(prefix + str(key), [key_name(f) for f in fields], prefix))
        kwargs[name] = _coerce(hints[name], value, prefix + str(key))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def check_finite(section: Any, prefix: str) -> None:
    """Raise ``ValueError`` naming the first float field of the dataclass ``section`` that is NaN or infinite.

    The YAML and override path already refuses such values (:func:`config_from_dict`); this holds the same rule
    for configs built in Python, where ``lr=float("nan")`` would pass every range check (NaN compares false).
    """
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{prefix}{key_name(f.name)} must be a finite number; got {value!r}")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it in the class body (for ``--help`` style listings)."""
    import ast
    import inspect
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _unknown_key(key: str, allowed: list[str], prefix: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
    names = ", ".join(prefix + a for a in allowed)
    return f"unknown config key {key!r}{hint}; allowed: {names}"


def _set_dotted(cls: type, data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"bad config key {dotted!r}: expected dotted names such as optim.lr")
    node, node_cls, prefix = data, cls, ""
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node_cls)}
        if _field_name(part) not in fields:
            raise ConfigError(_unknown_key(prefix + part, [key_name(f) for f in fields], prefix))
        hint = typing.get_type_hints(node_cls)[_field_name(part)]
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(hint):
            if last:
                if not isinstance(value, dict):
                    raise ConfigError(f"{prefix + part}: is a section; set one of its keys, e.g. {prefix + part}.x=...")
                node.setdefault(part, {}).update(value)
                return
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{prefix + part}: expected a mapping in the config file")
            node, node_cls, prefix = child, hint, prefix + part + "."
        elif last:
            node[part] = value
        elif _origin_is_dict(hint):
            # free-form mappings (e.g. model.kwargs.width=32)
            child = node.setdefault(part, {})
            for depth, sub in enumerate([*parts[i + 1 : -1], None]):
                if not isinstance(child, dict):
                    where = ".".join(parts[: i + 1 + depth])
                    raise ConfigError(f"{where}: expected a mapping, got {child!r} (setting {dotted!r})")
                if sub is not None:
                    child = child.setdefault(sub, {})
            child[parts[-1]] = value
            return
        else:
            raise ConfigError(f"{prefix + part}: is a value, not a section (got {dotted!r})")


def _origin_is_dict(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _plain(value: Any, key: str, depth: int = 0) -> Any:
    """``value`` if it is plain data (what YAML, JSON and ``weights_only`` checkpoints hold), else a ConfigError."""
    if depth > 20:
        raise ConfigError(f"{key}: nested too deeply (or refers to itself)")
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, (str, int, float, bool)):
                raise ConfigError(f"{key}: keys must be strings or numbers, got {k!r}")
        return {k: _plain(v, f"{key}.{k}", depth + 1) for k, v in value.items()}
    raise ConfigError(f"{key}: expected plain data (numbers, strings, lists, mappings), got {type(value).__name__}")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; int -> float is the only silent conversion."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:  # ``float | None``: the float's own message (e.g. "expected a finite number")
            raise errors[0]
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{key}: expected {names}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return config_from_dict(tp, value if value is not None else {}, key + ".")
    if tp is Any:
        return _plain(value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # NaN passes every `x < 0` check; inf makes a loss or a clip meaningless
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if _origin_is_dict(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(_plain(value, key))
    raise ConfigError(f"{key}: unsupported field type {tp!r}")
