"""A name → entry registry: how the package lists its PEFT methods, selection strategies and robust methods.

A new method is one registered definition; every caller (the dispatch, the lists the notebooks iterate, the error
message for an unknown name) reads the registry, so nothing else changes. Example::

    >>> from molft_utils.core.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(x: float) -> float:
    ...     return x * x
    >>> shapes["square"](3.0), shapes.names()
    (9.0, ('square',))
    >>> "circle" in shapes
    False

``shapes["circle"]`` raises :class:`UnknownNameError` (a ``ValueError`` and a ``KeyError``) listing the known names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name that is not registered (a ``ValueError`` for callers, a ``KeyError`` for ``Mapping.get``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name, in registration order; read-only as a mapping, extended only by :meth:`register`.

    Parameters
    ----------
    kind
        What the entries are ("PEFT method", "selection strategy", ...), for error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> Callable[[T], T] | T:
        """Register ``entry`` under ``name``; without ``entry``, a decorator that registers what it decorates.

        A name can be registered once (a second registration is an error, not a silent replacement).
        """

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def check(self, name: str) -> str:
        """``name`` if registered, else an :class:`UnknownNameError` that lists the known names."""
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return name

    def __getitem__(self, name: str) -> T:
        return self._entries[self.check(name)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
