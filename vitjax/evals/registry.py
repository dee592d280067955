"""``EVALUATORS``: evaluator types by name (``config.evals.<name> = dict(type=TYPE, ...)``).

    @register_evaluator("knn")
    class Knn(Evaluator): ...

A type registered twice is a ValueError naming both definitions; an unknown type in a config is a
ValueError naming the nearest registered types (``vitjax.registry.Registry``).
"""
from __future__ import annotations

from vitjax.registry import Registry

EVALUATORS = Registry("evaluator", unknown_message="unknown {kind} type {name!r}; nearest types: {near}; "
                                                   "registered: {names}")


def register_evaluator(name: str):
    """Class decorator: registers an ``Evaluator`` subclass as type ``name``."""
    return EVALUATORS.register(name)
