"""Small named tables of extension points: optimizers, schedules, KD modes, datasets, log sinks, teachers, ...

In the style of :mod:`augkd.models.registry`: an entry is registered once, under its name, where it is defined;
the config validates its choices against the registry's names, so every allowed value is written once.

Example:
    >>> SINKS = Registry("log sink")
    >>> @SINKS.register("jsonl")
    ... def write_jsonl(run_dir, history): ...
    >>> SINKS.names()
    ('jsonl',)
    >>> SINKS.check("csv", "log.sinks")
    Traceback (most recent call last):
    ...
    ValueError: log.sinks must be one of jsonl; got 'csv'
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")
_MISSING: Any = object()  # register(name) without an entry: a decorator (None is a valid entry)


class Registry(Mapping[str, T], Generic[T]):
    """An ordered, read-only mapping name -> entry, filled with :meth:`register`.

    Args:
        what: what an entry is, for messages ("optimizer", "KD weighting").
        entries: initial ``{name: entry}`` in order.
    """

    def __init__(self, what: str, entries: Mapping[str, T] | None = None) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: Any = _MISSING) -> Any:
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds the decorated object.

        Raises:
            ValueError: ``name`` is taken.
        """

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add if entry is _MISSING else add(entry)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def check(self, name: str, key: str) -> None:
        """Raise ``ValueError`` naming config ``key``, the bad ``name`` and the allowed names unless registered."""
        if name not in self._entries:
            raise ValueError(f"{key} must be one of {', '.join(self._entries)}; got {name!r}")

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(f"unknown {self.what} {name!r}; known: {', '.join(self._entries)}")
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"
