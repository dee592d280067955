"""Model registry, timm-style: every model family registers factories by name here.

    vitjax.create_model("vit_b16", num_classes=10)       # a named variant
    vitjax.create_model("vit", variant="S/16", ...)      # the family factory
    vitjax.list_models("vit_*")
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Callable

_MODELS: dict[str, Callable] = {}
_DOCS: dict[str, str] = {}


def register_model(name: str, doc: str | None = None) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        _DOCS[name] = doc or (fn.__doc__ or "").strip().splitlines()[0] if (doc or fn.__doc__) else ""
        return fn
    return wrap


def _ensure_loaded():
    # Importing the model package runs every family's register_model calls.
    import vitjax.models  # noqa: F401


def create_model(name: str, **overrides):
    """Builds a registered model; keyword overrides replace the variant's defaults."""
    _ensure_loaded()
    if name not in _MODELS:
        near = difflib.get_close_matches(name, list(_MODELS), n=5)
        raise ValueError(f"unknown model {name!r}; nearest registered names: {near}. "
                         f"See vitjax.list_models().")
    return _MODELS[name](**overrides)


def build_module(cls, kwargs: dict, family: str, tuples: tuple[str, ...] = ()):
    """``cls(**kwargs)`` for a model dataclass built from a config: an unknown option is a ValueError
    naming the nearest valid ones; "float32"/"bfloat16" strings become dtypes; list values of the
    fields in ``tuples`` become tuples (configs hold lists, flax modules need hashable fields)."""
    import dataclasses

    import jax.numpy as jnp
    fields = tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))
    unknown = [k for k in kwargs if k not in fields]
    if unknown:
        hints = {k: difflib.get_close_matches(k, fields, n=3) for k in unknown}
        raise ValueError(f"unknown {family} option(s) {unknown}; nearest valid names: {hints}. "
                         f"Valid options: {sorted(fields)}")
    kwargs = dict(kwargs)
    for key in ("dtype", "param_dtype"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = jnp.dtype(kwargs[key])
    for key in tuples:
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return cls(**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))
