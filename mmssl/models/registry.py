"""A name -> builder registry shared by every encoder family (video, audio, ...)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., object])


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message, adding quotes
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to builders (classes or functions) that return a ``T``.

    Iterating yields the registered names in sorted order; ``name in registry`` tests membership.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[B], B]:
        """Decorator that registers a builder under ``name``; a name can be taken once."""

        def decorator(builder: B) -> B:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def build(self, name: str, **kwargs: object) -> T:
        """Call the builder registered under ``name`` with ``kwargs``."""
        try:
            builder = self._builders[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}") from None
        return builder(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self)})"
