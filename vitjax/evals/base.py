"""What an evaluator sees: ``EvalContext`` (the run, for every evaluation) and ``EvalRun`` (one
evaluation of one set of parameters, with its cache of whole-split outputs).

Evaluators never receive the trainer. The trainer (or a command line such as ``vitjax.probe``)
builds one ``EvalContext`` per run:

    ctx = EvalContext(model=trainer.model, objective=trainer.objective, config=trainer.config,
                      train_source=trainer.train_source, eval_source=trainer.eval_source,
                      map_batches=trainer.map_batches)

``map_batches(name, fn, params, source, ops=None, batch_size=None, max_examples=None)`` runs
``fn(params, batch) -> {key: [B, ...]}`` (jitted, sharded like the eval step; ``name`` keys its
compile cache) over one ordered pass of ``source`` prepared with ``ops`` (default: the eval ops) and
returns the per-example outputs as numpy arrays, padding removed, plus ``label`` when the data has
labels: ``Trainer.map_batches``.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import ml_collections
import numpy as np

from vitjax.data.sources import get_source


def plain(x: Any) -> Any:
    """ConfigDicts / mappings / sequences -> plain dicts and lists (for specs read from a config)."""
    if isinstance(x, ml_collections.ConfigDict):
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    return x


def value_key(x: Any) -> str:
    """A hashable key of a data dict or op list, equal for equal values (cache keys)."""
    x = plain(x)
    if isinstance(x, dict):
        return "{" + ",".join(f"{k!r}:{value_key(v)}" for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(x, list):
        return "[" + ",".join(value_key(v) for v in x) + "]"
    return repr(x)


def without_tokenize(ops) -> list[dict]:
    """``ops`` less any ``tokenize`` op: the image-only preprocessing of an image-text eval split."""
    return [o for o in plain(list(ops or ())) if o.get("op") != "tokenize"]


@dataclasses.dataclass
class EvalContext:
    """The run as evaluators see it (see the module docstring). Build it once per run: it caches
    the sources that evaluators' ``data`` dicts name.

    Attributes:
      model: the Flax model; objective: the run's ``Objective`` (its ``feature_fn`` gives the frozen
        features of representation evaluators); config: the run's config.
      train_source, eval_source: the run's splits (``eval_source`` may be None).
      map_batches: ``Trainer.map_batches`` (see the module docstring).
      get_source: ``data dict -> source`` for evaluators that read another split
        (default ``vitjax.data.sources.get_source(**data)``).
    """
    model: Any
    objective: Any
    config: ml_collections.ConfigDict
    train_source: Any
    eval_source: Any
    map_batches: Callable[..., dict[str, np.ndarray]]
    get_source: Callable[..., Any] = get_source
    _sources: dict = dataclasses.field(default_factory=dict, repr=False)

    def source(self, data: Mapping) -> Any:
        """The source of a ``data`` dict (``get_source`` kwargs), opened once per context."""
        key = value_key(data)
        if key not in self._sources:
            self._sources[key] = self.get_source(**plain(data))
        return self._sources[key]

    @property
    def eval_ops(self) -> list:
        return plain(list(self.config.input.eval_ops))


class EvalRun:
    """One evaluation of ``params`` under ``ctx``. Whole-split outputs are cached for the duration
    of the evaluation, so kNN, NCM and a linear probe on the same split, features and cap embed it
    once, and zero-shot reuses retrieval's image embeddings of the same split."""

    def __init__(self, ctx: EvalContext, params: Any):
        self.ctx, self.params = ctx, params
        self._cache: dict[tuple, dict[str, np.ndarray]] = {}
        self._feature_fn = None
        self.passes = 0            # map_batches passes run (tests and logs)

    def split(self, data: Mapping | None, default: str, where: str) -> tuple[str, Any]:
        """(cache key, source): ``data`` (``get_source`` kwargs) when given, else the run's training
        (``default="train"``) or eval split. ``where``: the option named when no eval split exists."""
        if data:
            return value_key(data), self.ctx.source(data)
        if default == "train":
            return "train", self.ctx.train_source
        if self.ctx.eval_source is None:
            raise ValueError(f"this evaluation needs a split: set config.input.eval_data or {where}")
        return "eval", self.ctx.eval_source

    def map(self, name: str, fn, source, ops=None, max_examples: int | None = None) -> dict[str, np.ndarray]:
        """``ctx.map_batches`` under this evaluation's parameters (uncached)."""
        self.passes += 1
        return self.ctx.map_batches(name, fn, self.params, source, ops=ops, max_examples=max_examples)

    def cached(self, key: tuple, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def lookup(self, key: tuple) -> dict[str, np.ndarray] | None:
        return self._cache.get(key)

    def store(self, key: tuple, value: dict[str, np.ndarray]) -> None:
        self._cache.setdefault(key, value)

    def features(self, data: Mapping | None, default: str, ops=None, max_examples: int | None = None,
                 where: str = "config.evals") -> dict[str, np.ndarray]:
        """``{"feat": [N, D], "label": [N] (labelled data)}``: the objective's frozen features
        (``objective.feature_fn(model)``) of a split, computed once per (split, ops, cap)."""
        key, source = self.split(data, default, where)
        ops = without_tokenize(self.ctx.eval_ops if ops is None else ops)
        if self._feature_fn is None:
            self._feature_fn = self.ctx.objective.feature_fn(self.ctx.model)
        f = self._feature_fn
        x = getattr(self.ctx.objective, "feature_input", "image")   # token models read "tokens"
        return self.cached(("features", key, value_key(ops), max_examples),
                           lambda: self.map("features", lambda p, b: {"feat": f(p, b[x])}, source,
                                            ops=ops, max_examples=max_examples))


class Evaluator(abc.ABC):
    """One named evaluation, built from a spec ``dict(type=TYPE, **options)``.

    Options every type takes:
      prefix: metric names are ``eval/<prefix><metric>``; default ``"<name>_"`` (so
        ``config.evals.knn`` logs ``eval/knn_top1``).
      origin: the config path error messages name (default ``config.evals.<name>``; an objective's
        default evaluators name the objective option they come from).
    """
    run_order = 0      # lower runs first (zero-shot after retrieval, to reuse its image embeddings)

    def __init__(self, name: str, prefix: str | None = None, origin: str | None = None):
        self.name = str(name)
        self.prefix = f"{self.name}_" if prefix is None else str(prefix)
        self.origin = origin or f"config.evals.{self.name}"

    def check(self, config: ml_collections.ConfigDict) -> None:
        """Start-up checks against the run's config (raise ValueError). Default: none."""

    @abc.abstractmethod
    def __call__(self, run: EvalRun) -> dict[str, float]:
        """``{metric: value}`` (unprefixed) for one evaluation."""
        raise NotImplementedError
