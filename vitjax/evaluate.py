"""``python -m vitjax.evaluate --workdir DIR [--step N] [--config.key=value ...]``.

Scores a workdir's latest (or given) checkpoint on the eval split its config names, prints the
metrics as JSON and appends them to the workdir's metrics.jsonl with ``"source": "evaluate"``.
The metrics are those of a training run's eval steps: the objective's per-batch ``eval/...`` metrics
and its evaluators (``config.evals`` and the objective's defaults, ``vitjax.evals``).
Overrides change the evaluation setup (e.g. ``--config.input.eval_data.split=validation``, or
``--config.evals.knn.k=10`` for an evaluator the config declares).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax

from vitjax.config import ConfigError
from vitjax.training.checkpoint import Checkpointer
from vitjax.training.trainer import Trainer
from vitjax.training.workdir import latest_step, read_config


def evaluate_workdir(workdir: str, step: int | None = None, overrides=()) -> dict[str, float]:
    config = read_config(workdir, overrides)
    trainer = Trainer(config, workdir)
    if trainer.eval_source is None:
        raise ValueError("the config names no eval data (config.input.eval_data)")
    abstract = trainer.setup_state()
    step = latest_step(workdir) if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no finished checkpoint")
    ckpt = Checkpointer(workdir, async_save=False)
    try:       # restored straight into the run's shardings (no full copy on one device)
        ckpt.check_params(step, abstract.params)
        params = ckpt.restore_params(step, abstract.params)
    finally:
        ckpt.close()
    metrics = trainer.evaluate(params)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "metrics.jsonl"), "a") as fh:
            fh.write(json.dumps({"step": int(step), "source": "evaluate", **metrics}) + "\n")
    return {"step": int(step), **metrics}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--step", type=int, default=None)
    args, overrides = p.parse_known_args(argv)
    try:
        result = evaluate_workdir(args.workdir, args.step, overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
