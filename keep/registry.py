"""A small, explicit registry in the BasicSR vocabulary (``type:`` + kwargs), without its mechanisms.

Classes are registered by decorator at import time of the module that defines them; nothing scans
folders. A duplicate name raises, an unknown name raises and lists what exists, and building from a
spec never mutates the spec.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Generic, Iterator, Mapping, Optional, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> class (or factory function) mapping.

    >>> ARCHS = Registry("arch")
    >>> @ARCHS.register()
    ... class Foo: ...
    >>> ARCHS.build({"type": "Foo"})  # doctest: +ELLIPSIS
    <...Foo object at ...>
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable[..., T]] = {}

    def register(self, name: Optional[str] = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(obj: Callable[..., T]) -> Callable[..., T]:
            key = name or obj.__name__
            if key in self._items:
                raise KeyError(
                    f"{self.kind} '{key}' is already registered (by {self._items[key]!r}); "
                    f"pick another name")
            self._items[key] = obj
            return obj
        return decorator

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} '{name}'; registered {self.kind}s: {known}") from None

    def build(self, spec: Mapping[str, Any], **extra: Any) -> T:
        """Build ``spec['type'](**rest, **extra)``; ``spec`` is deep-copied, never modified."""
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"a {self.kind} spec must be a mapping with a 'type' key, got {spec!r}")
        kwargs = copy.deepcopy(dict(spec))
        cls = self.get(kwargs.pop("type"))
        kwargs.update(extra)
        return cls(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


ARCHS: Registry = Registry("arch")
LOSSES: Registry = Registry("loss")
DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("model")
METRICS: Registry = Registry("metric")
