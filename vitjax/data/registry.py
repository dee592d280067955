"""The data package's plug-in tables (a leaf module: it imports only ``vitjax.registry``).

    SOURCES     name -> ``factory(split, data_dir=None) -> source``    (``config.input.data.name``)
    OPS         name -> ``factory(**kwargs) -> op(example, rng)``      (``config.input.*_ops``)
    BATCH_OPS   name -> ``factory(**kwargs) -> op(batch, rng)``        (``config.input.batch_ops``)

Add an entry with the decorator beside its definition:

    @register_source("my_data")
    class MySource: ...                       # MySource(split, data_dir=None)

    @register_op("my_op")
    def my_op(strength: float = 1.0):
        def op(ex, rng): ...
        return op

The modules that *use* a table import the modules that *fill* it, so that a table is complete
whenever it is used: ``sources`` imports ``digits``, ``synthetic_digits``, ``captions`` and
``digit_pairs``; ``ops`` imports ``image_ops``, ``augment``, ``text``, ``pixel_tokens`` and ``translate``; ``batch_ops``
fills and uses ``BATCH_OPS`` itself.
A plug-in defined outside ``vitjax.data`` registers itself when its module is imported.
"""
from __future__ import annotations

from vitjax.registry import Registry

SOURCES = Registry("data source")
OPS = Registry("preprocessing op",
               unknown_message="unknown {kind} {name!r}; nearest: {near}; all ops: {names}")
BATCH_OPS = Registry("batch op",
                     unknown_message="unknown {kind} {name!r}; nearest: {near}; all batch ops: {names}")


def register_source(name: str):
    """``@register_source(NAME)``: a source factory (usually the class), called as
    ``factory(split, data_dir=data_dir)``; sources that need no files ignore ``data_dir``."""
    return SOURCES.register(name)


def register_op(name: str):
    """``@register_op(NAME)``: a per-example op factory, ``factory(**kwargs) -> op(example, rng)``."""
    return OPS.register(name)


def register_batch_op(name: str):
    """``@register_batch_op(NAME)``: a batch op factory, ``factory(**kwargs) -> op(batch, rng)``."""
    return BATCH_OPS.register(name)
