"""Building evaluators from specs and running them: the two calls the trainer makes.

    evaluators = build_evaluators(objective, config)     # at start-up; ValueError = a config error
    metrics = run_evaluators(evaluators, ctx, params)    # at every eval step -> {"eval/...": float}

Specs are ``{name: dict(type=TYPE, **options)}``: the objective's ``default_evals()`` (MAE/DINO's
probes, CLIP's zero-shot, retrieval and probe), updated by ``config.evals`` (a name set to None drops
a default). Types are the ``EVALUATORS`` registry's (``vitjax.evals.registry``).
"""
from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from vitjax.evals.base import EvalContext, EvalRun, Evaluator, plain
from vitjax.evals.registry import EVALUATORS


def build_evaluator(name: str, spec: Mapping[str, Any], config: ml_collections.ConfigDict | None = None
                    ) -> Evaluator:
    """One evaluator from ``dict(type=TYPE, **options)``; a missing or unknown type, or an option the
    type does not take, is a ValueError naming the evaluator."""
    options = plain(spec)
    kind = options.pop("type", None)
    if kind is None:
        raise ValueError(f"evaluator {name!r} has no type; set config.evals.{name}.type to one of "
                         f"{EVALUATORS.names()}")
    if kind not in EVALUATORS:
        raise ValueError(f"evaluator {name!r}: {EVALUATORS.unknown(kind)}")
    try:
        evaluator = EVALUATORS.get(kind)(name, **options)
    except TypeError as e:
        raise ValueError(f"bad options for evaluator {name!r} (type {kind!r}): {e}") from e
    if config is not None:
        evaluator.check(config)
    return evaluator


def evaluator_specs(objective, config: ml_collections.ConfigDict | None) -> dict[str, dict]:
    """The objective's default specs updated by ``config.evals`` (None entries drop a default)."""
    specs = {k: plain(v) for k, v in objective.default_evals().items()}
    overrides = config.get("evals") if config is not None else None
    for name, spec in plain(overrides or {}).items():
        if spec is None:
            specs.pop(name, None)
        else:
            specs[name] = spec
    return specs


def build_evaluators(objective, config: ml_collections.ConfigDict | None) -> dict[str, Evaluator]:
    """``{name: Evaluator}`` of the objective's defaults merged with ``config.evals``."""
    return {name: build_evaluator(name, spec, config) for name, spec in evaluator_specs(objective, config).items()}


def run_evaluators(evaluators: Mapping[str, Evaluator], ctx: EvalContext, params: Any, *,
                   prefix: str = "eval/", run: EvalRun | None = None) -> dict[str, float]:
    """Runs every evaluator on ``params`` (one ``EvalRun``: splits embedded once) ->
    ``{prefix + evaluator.prefix + metric: float}``. ``run``: an ``EvalRun`` to share (its cache)."""
    run = EvalRun(ctx, params) if run is None else run
    out: dict[str, float] = {}
    for ev in sorted(evaluators.values(), key=lambda e: e.run_order):
        for k, v in ev(run).items():
            out[f"{prefix}{ev.prefix}{k}"] = float(v)
    return out
