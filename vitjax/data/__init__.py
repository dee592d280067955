"""Input pipelines: sources (``sources``; ``digits``, ``synthetic_digits``, ``captions``),
per-example ops (``ops``: ``image_ops``, ``augment``, ``text``), batch ops (``batch_ops``), grain
pipelines (``pipeline``) and converters (``convert``, CLI ``python -m vitjax.data convert``). The
plug-in tables (``SOURCES``, ``OPS``, ``BATCH_OPS``) and their decorators are in ``registry``.
See docs/data.md.

Names are imported on first use, so that converter worker processes and ``python -m vitjax.data``
do not pay for importing grain.
"""
import importlib

_EXPORTS = {
    "get_source": "vitjax.data.sources",
    "get_eval_source": "vitjax.data.sources",
    "SOURCES": "vitjax.data.sources",          # the modules that use a table import those that fill it
    "register_source": "vitjax.data.registry",
    "train_iterator": "vitjax.data.pipeline",
    "eval_batches": "vitjax.data.pipeline",
    "OPS": "vitjax.data.ops",
    "build_ops": "vitjax.data.ops",
    "register_op": "vitjax.data.registry",
    "BATCH_OPS": "vitjax.data.batch_ops",
    "build_batch_ops": "vitjax.data.batch_ops",
    "register_batch_op": "vitjax.data.registry",
    "get_tokenizer": "vitjax.data.text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitjax.data' has no attribute {name!r}")
