"""Evaluations at eval steps, chosen by config (as big_vision's ``config.evals``):

    config.evals.knn = dict(type="knn", k=20)                  # -> eval/knn_top1
    config.evals.zs = dict(type="zeroshot", class_names=[...])  # -> eval/zs_top1, eval/zs_top5

Types (``EVALUATORS``): ``classification`` (``classification.py``), ``knn``, ``ncm``,
``linear_probe`` (``probes.py``), ``zeroshot``, ``retrieval`` (``image_text.py``); each type's
options are in its class docstring. Objectives add their own defaults (``Objective.default_evals``).
Evaluators get an ``EvalContext`` (``base.py``), never the trainer. The trainer calls
``build_evaluators(objective, config)`` at start-up and ``run_evaluators(evaluators, ctx, params)``
at every eval step (``runner.py``).

Numerical cores: ``representation.py`` (kNN, nearest class mean, linear probe) and ``zeroshot.py``
(prompt ensembling, zero-shot accuracy, Recall@K); ``attention.py``: class-token attention maps.
"""
from vitjax.evals import classification, detection, image_text, probes  # noqa: F401  (they fill EVALUATORS)
from vitjax.evals.base import EvalContext, EvalRun, Evaluator  # noqa: F401
from vitjax.evals.registry import EVALUATORS, register_evaluator  # noqa: F401
from vitjax.evals.runner import build_evaluator, build_evaluators, evaluator_specs, run_evaluators  # noqa: F401
