"""``python -m vitjax.evaluate --workdir DIR [--step N] [--config.key=value ...]``.

Scores a workdir's latest (or given) checkpoint on the eval split its config names, prints the
metrics as JSON and appends them to the workdir's metrics.jsonl with ``"source": "evaluate"``.
The metrics are those of a training run's eval steps: the objective's per-batch ``eval/...`` metrics
and its evaluators (``config.evals`` and the objective's defaults, ``vitjax.evals``).
Overrides change the evaluation setup (e.g. ``--config.input.eval_data.split=validation``, or
``--config.evals.knn.k=10`` for an evaluator the config declares).

The metrics are printed before anything is written: on a read-only workdir the append fails with
a one-line warning and the command still succeeds. A damaged latest checkpoint is skipped with a
one-line warning for the newest intact one (``vitjax.training.checkpoint``); an explicit ``--step``
that is damaged is an error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import jax

from vitjax.config import ConfigError
from vitjax.training.checkpoint import Checkpointer
from vitjax.training.trainer import Trainer
from vitjax.training.workdir import read_config

log = logging.getLogger("vitjax")


def evaluate_workdir(workdir: str, step: int | None = None, overrides=(), record: bool = True) -> dict[str, float]:
    """``{"step": N, **metrics}`` of the workdir's newest intact (or given) checkpoint; ``record``
    appends them to metrics.jsonl (``record_metrics``: a failure to write is a warning)."""
    config = read_config(workdir, overrides)
    trainer = Trainer(config, workdir)
    if trainer.eval_source is None:
        raise ValueError("the config names no eval data (config.input.eval_data)")
    abstract = trainer.setup_state()
    ckpt = Checkpointer(workdir, async_save=False)

    def read(s):   # restored straight into the run's shardings (no full copy on one device)
        ckpt.check_params(s, abstract.params)
        return ckpt.restore_params(s, abstract.params)

    try:
        step, params, _ = ckpt.newest_intact(read, step)
    finally:
        ckpt.close()
    result = {"step": int(step), **trainer.evaluate(params)}
    if record:
        record_metrics(workdir, result)
    return result


def record_metrics(workdir: str, result: dict) -> bool:
    """Appends ``result`` to the workdir's metrics.jsonl (process 0) with ``"source": "evaluate"``;
    False, after a one-line warning, when the file cannot be written (e.g. a read-only workdir)."""
    if jax.process_index() != 0:
        return True
    path = os.path.join(workdir, "metrics.jsonl")
    try:
        with open(path, "a") as fh:
            fh.write(json.dumps({"step": result["step"], "source": "evaluate",
                                 **{k: v for k, v in result.items() if k != "step"}}) + "\n")
    except OSError as e:
        log.warning("could not append the metrics to %s (%s); they were printed but not recorded. Make "
                    "the workdir writable to record them", path, e.strerror or e)
        return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, default=None)
    args, overrides = p.parse_known_args(argv)
    try:
        result = evaluate_workdir(args.workdir, args.step, overrides, record=False)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1), flush=True)
    record_metrics(args.workdir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
