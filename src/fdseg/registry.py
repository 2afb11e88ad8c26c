"""Name → factory registries with did-you-mean errors (one registry per family, no aliases)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from fdseg._checks import did_you_mean

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A small explicit registry: ``register(name)`` decorates a factory, ``build(name, **kw)`` calls it.

    Example:
        >>> MODELS: Registry[object] = Registry("model")
        >>> @MODELS.register("identity")
        ... def identity(**kw): return kw
        >>> MODELS.build("identity", a=1)
        {'a': 1}
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``factory`` under ``name``; a duplicate name raises ``KeyError``."""

        def deco(factory: F) -> F:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._items[name] = factory
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``; ``KeyError`` with the closest names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)} available: {self.names()}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> T:
        """Call the factory registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
