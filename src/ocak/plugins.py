"""Named builders for engine kinds and provider types, filled by entry points or a decorator.

ocak's own engines (``llama.cpp``, ``ctranslate2``, the test ``fake``) and providers
(``openai``, ``replicate``) are declared as entry points in ``pyproject.toml``
(groups ``ocak.engines`` and ``ocak.providers``), so another package can add one the same
way, and a module is imported only when its kind is first used. ``register`` adds a
builder in-process (tests do, exactly as the real ones are found).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class UnknownKind(LookupError):
    """No builder is registered under that name."""


class Registry(Generic[T]):
    """Builders by name: registered here, or found in the entry-point ``group``."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._builders: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@ENGINES.register("mine")`` above a builder."""

        def add(builder: T) -> T:
            self._builders[name] = builder
            return builder

        return add

    def get(self, name: str) -> T:
        builder = self._builders.get(name)
        if builder is None:
            found = entry_points(group=self.group, name=name)
            if not found:
                raise UnknownKind(f"no {self.group} entry named '{name}' (known: {self.names()})")
            builder = next(iter(found)).load()
            self._builders[name] = builder
        return builder

    def names(self) -> list[str]:
        return sorted({*self._builders, *(ep.name for ep in entry_points(group=self.group))})
