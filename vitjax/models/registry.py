"""The model registry (timm-style): every family registers its factories here by name.

    vitjax.create_model("vit_b16", num_classes=10)       # a named variant
    vitjax.create_model("vit", variant="S/16", ...)      # the family factory
    vitjax.list_models("vit_*")

``create_model``/``list_models`` live in ``vitjax.models`` (the package imports every family first).
"""
from __future__ import annotations

import dataclasses
import difflib

import jax
import jax.numpy as jnp

from vitjax import param_tree
from vitjax.registry import Registry

MODELS = Registry("model", unknown_message="unknown model {name!r}; nearest registered names: {near}. "
                                           "See vitjax.list_models().")


def register_model(name: str, doc: str | None = None):
    """Decorator: registers a factory ``fn(**overrides) -> flax module`` under ``name``."""
    return MODELS.register(name, doc=doc)


def build_module(cls, kwargs: dict, family: str, tuples: tuple[str, ...] = ()):
    """``cls(**kwargs)`` for a model dataclass built from a config: an unknown option is a ValueError
    naming the nearest valid ones; "float32"/"bfloat16" strings become dtypes; list values of the
    fields in ``tuples`` become tuples (configs hold lists, flax modules need hashable fields)."""
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


def example_inputs(model, batch_size: int = 1) -> tuple:
    """Positional inputs of ``model.init`` as ``jax.ShapeDtypeStruct``s: a model whose inputs are
    not one image [B, H, W, C] of ``model.image_size`` (CLIP, Perceiver AR) defines
    ``example_inputs(batch_size)`` itself."""
    own = getattr(model, "example_inputs", None)
    if own is not None:
        return tuple(own(batch_size))
    s = model.image_size
    return (jax.ShapeDtypeStruct((batch_size, s, s, model.in_channels), jnp.float32),)


def model_param_shapes(model):
    """The model's (unboxed) parameter tree as ``jax.ShapeDtypeStruct``s, nothing allocated."""
    return param_tree.abstract_params(model, *example_inputs(model))


def model_options(name: str) -> tuple[str, ...]:
    """The options (dataclass fields) of the module the factory ``name`` builds: the keys
    ``--config.model.KEY=VALUE`` may add to a config that does not set them (``config.apply_overrides``).
    An unknown ``name`` gives none."""
    if name not in MODELS:
        return ()
    cls = type(MODELS.get(name)())
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name"))
