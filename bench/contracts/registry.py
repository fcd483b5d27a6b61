"""The one registry idiom of every plugin family: backends, pruning methods, models, datasets,
samplers and transports.

A family owns one module-level :class:`Registry`; a plugin is declared where it is defined::

    BACKENDS = Registry("backend", discover="edgebench.backends")

    @BACKENDS.register            # the object's ``name`` attribute is its name
    class OrtBackend(Backend): ...

    @METHODS.register("magnitude_unstructured")   # or an explicit name
    def magnitude(...): ...

``discover`` names a package whose modules are imported on the first lookup, so adding a plugin is
adding a module: nothing else lists it. Modules whose name starts with ``_`` (helpers) and ``base``
are not imported by discovery.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class UnknownName(KeyError):
    """A name no plugin of the family is registered under; the message names the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Plugins of one family by name, in registration order."""

    def __init__(self, kind: str, discover: str | None = None) -> None:
        self.kind = kind
        self._discover_package = discover
        self._discovered = discover is None
        self._items: dict[str, T] = {}

    @overload
    def register(self, obj: T) -> T: ...
    @overload
    def register(self, obj: str) -> Callable[[T], T]: ...

    def register(self, obj: Any) -> Any:
        """Decorator: ``@REG.register`` (named by ``obj.name``) or ``@REG.register("name")``."""
        if isinstance(obj, str):
            return lambda target: self.add(obj, target)
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{obj!r} has no 'name' attribute; use @register('name')")
        return self.add(name, obj)

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` (a second plugin with the same name is a programming error)."""
        existing = self._items.get(name)
        if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
            raise ValueError(f"two {self.kind}s are both registered as {name!r}: {_qualname(existing)} and {_qualname(obj)}")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """The plugin called ``name``; :class:`UnknownName` names the known ones and a close match."""
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            raise UnknownName(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The one-line message for a name that is not registered."""
        self._discover()
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {self.kind} {name!r}; {hint}known {self.kind}s: {', '.join(sorted(self._items)) or 'none'}"

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._discover()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """(name, plugin) pairs, sorted by name."""
        self._discover()
        return sorted(self._items.items())

    def __getitem__(self, name: str) -> T:
        """``REG[name]``, as :meth:`get` (an unknown name is :class:`UnknownName`, a KeyError)."""
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._discover()
        return len(self._items)

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # before importing: a plugin module may look itself up
        package = importlib.import_module(self._discover_package)  # type: ignore[arg-type]
        for info in pkgutil.iter_modules(package.__path__):
            if info.name != "base" and not info.name.startswith("_"):
                importlib.import_module(f"{self._discover_package}.{info.name}")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
