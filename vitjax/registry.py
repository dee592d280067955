"""``Registry``: the one name -> definition table behind every plug-in point of vitjax.

Models, objectives, data sources, per-example ops, batch ops, evaluators and PyTorch converters are
each one ``Registry``. They all behave the same way:

    MODELS = Registry("model")

    @MODELS.register("vit_b16")
    def vit_b16(**kw): ...

    MODELS.get("vit_b16")          # the definition
    MODELS.get("vit_b61")          # ValueError: unknown model 'vit_b61'; nearest: ['vit_b16']; ...
    MODELS.names("vit_*")          # sorted names matching a glob

- A name registered twice is a ValueError naming both definitions (module and qualified name), so
  two plug-ins cannot silently shadow each other.
- An unknown name is a ValueError naming the nearest registered names, so a typo in a config is a
  one-line fix.

This module knows nothing about what it holds: each table lives beside the code that fills it
(``vitjax.models.registry``, ``vitjax.objectives.base``, ``vitjax.data.registry``,
``vitjax.evals.registry``, ``vitjax.interop.registry``).
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Generic, Hashable, Iterator, TypeVar

T = TypeVar("T")


def describe(obj: Any) -> str:
    """Where a definition comes from, for error messages: ``module.qualname``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}" if module else repr(obj)


class Registry(Generic[T]):
    """A table of named definitions of one kind (see the module docstring).

    Attributes:
      kind: what the entries are, as error messages name them ("model", "batch op").
      unknown_message: format of the error for an unknown name; fields ``kind``, ``name``,
        ``near`` (the nearest registered names) and ``names`` (all of them, sorted).
    """

    def __init__(self, kind: str,
                 unknown_message: str = "unknown {kind} {name!r}; nearest: {near}; registered: {names}"):
        self.kind = kind
        self.unknown_message = unknown_message
        self._entries: dict[Hashable, T] = {}
        self._docs: dict[Hashable, str] = {}

    def register(self, name: Hashable, obj: T | None = None, *, doc: str | None = None):
        """``register(name, obj)`` adds ``obj``; ``@register(name)`` adds the decorated definition.
        A second definition under the same name is a ValueError naming both."""
        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice: first by "
                                 f"{describe(self._entries[name])}, again by {describe(value)}")
            self._entries[name] = value
            text = doc if doc is not None else (getattr(value, "__doc__", None) or "")
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return value
        return add if obj is None else add(obj)

    def get(self, name: Hashable) -> T:
        if name not in self._entries:
            raise ValueError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: Hashable) -> str:
        """The error message for an unknown ``name`` (for callers that raise their own error type)."""
        keys = [str(k) for k in self._entries]
        near = difflib.get_close_matches(str(name), keys, n=3)
        return self.unknown_message.format(kind=self.kind, name=name, near=near, names=sorted(keys))

    def doc(self, name: Hashable) -> str:
        """The first line of the definition's docstring (or the ``doc`` it was registered with)."""
        self.get(name)
        return self._docs[name]

    def names(self, pattern: str = "*") -> list:
        """Registered names matching the glob ``pattern``, sorted."""
        return sorted(k for k in self._entries if fnmatch.fnmatch(str(k), pattern))

    def items(self):
        return self._entries.items()

    def __contains__(self, name: Hashable) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def build_from_specs(specs, registry: Registry[Callable], key: str = "op") -> list:
    """A config list of ``dict(op=NAME, **kwargs)`` -> ``[registry.get(NAME)(**kwargs), ...]``, with
    bad arguments reported as a ValueError naming the entry (shared by per-example and batch ops)."""
    built = []
    for spec in specs or ():
        spec = dict(spec)
        name = spec.pop(key, None)
        factory = registry.get(name)
        try:
            built.append(factory(**spec))
        except TypeError as e:
            raise ValueError(f"bad arguments for {registry.kind} {name!r}: {e}") from e
    return built
