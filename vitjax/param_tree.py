"""Parameter trees: the one walker (nested dicts <-> ``{"a/b/c": leaf}``) and the one abstract-shape
builder (a model's parameter shapes without allocating them), shared by checkpoints, workdirs,
init-from-weights and every PyTorch converter."""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import numpy as np
from flax.linen import meta


def strip_boxes(tree: Any) -> Any:
    """The values inside flax ``AxisMetadata`` boxes (``nn.LogicallyPartitioned``...), without the
    sharding constraint ``nn.meta.unbox`` applies under active rules (which fails on abstract values)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, meta.AxisMetadata) else x, tree,
                        is_leaf=lambda x: isinstance(x, meta.AxisMetadata))


def _key_name(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def flatten(tree: Any, sep: str = "/", leaf: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}`` for any pytree of dicts (flax boxes are unboxed first).
    ``leaf`` maps each leaf (e.g. ``np.asarray``)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(strip_boxes(tree))
    return {sep.join(_key_name(k) for k in path): (leaf(x) if leaf else x) for path, x in flat}


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> dict:
    """The inverse of ``flatten``: ``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, last = path.split(sep)
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return tree


def shapes(tree: Any) -> dict[str, tuple]:
    """``{"a/b/c": shape}`` of a tree of arrays or ``jax.ShapeDtypeStruct``s."""
    return {k: tuple(v.shape) for k, v in flatten(tree).items()}


def first_mismatch(expected: Any, found: Any) -> str | None:
    """Describes the first parameter whose presence or shape differs, or None when they agree."""
    exp, got = shapes(expected), shapes(found)
    for name in sorted(set(exp) | set(got)):
        if name not in got:
            return f"parameter {name!r} (shape {exp[name]}) is missing from the checkpoint"
        if name not in exp:
            return f"the checkpoint has parameter {name!r} (shape {got[name]}) that the model does not"
        if exp[name] != got[name]:
            return f"parameter {name!r} has shape {got[name]} in the checkpoint but {exp[name]} in the model"
    return None


def abstract_variables(model, *inputs, **kwargs) -> dict:
    """``jax.eval_shape(model.init)`` on ``inputs`` (arrays or ``jax.ShapeDtypeStruct``s): every
    collection's shapes and dtypes, boxes (logical axis names) kept. No compile, no memory."""
    key = jax.random.key(0)
    rngs = {"params": key, "dropout": key, "masking": key}
    return jax.eval_shape(functools.partial(model.init, rngs, **kwargs), *inputs)


@functools.lru_cache(maxsize=32)
def _cached_params(model, specs: tuple, kw: tuple) -> Any:
    inputs = [jax.ShapeDtypeStruct(s, d) for s, d in specs]
    return strip_boxes(abstract_variables(model, *inputs, **dict(kw))["params"])


def abstract_params(model, *inputs, **kwargs) -> Any:
    """The unboxed parameter tree of ``model.init(*inputs, **kwargs)`` as ``jax.ShapeDtypeStruct``s;
    cached (tracing a deep model takes about a second; flax modules hash by their fields)."""
    specs = tuple((tuple(x.shape), np.dtype(x.dtype)) for x in inputs)
    return _cached_params(model, specs, tuple(sorted(kwargs.items())))
