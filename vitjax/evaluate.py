"""``python -m vitjax.evaluate --workdir DIR [--step N] [--config.key=value ...]``.

Scores a workdir's latest (or given) checkpoint on the eval split its config names, prints the
metrics as JSON and appends them to the workdir's metrics.jsonl with ``"source": "evaluate"``.
Overrides change the evaluation setup (e.g. ``--config.input.eval_data.split=validation``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def evaluate_workdir(workdir: str, step: int | None = None, overrides=()) -> dict[str, float]:
    import jax

    from vitjax import config as config_lib
    from vitjax.checkpoint import Checkpointer
    from vitjax.trainer import Trainer

    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{workdir} has no config.json; is it a vitjax workdir?")
    with open(cfg_path) as fh:
        config = config_lib.apply_overrides(config_lib.from_json(fh.read()), overrides)
    trainer = Trainer(config, workdir)
    if trainer.eval_source is None:
        raise ValueError("the config names no eval data (config.input.eval_data)")
    abstract = trainer.setup_state()
    ckpt = Checkpointer(workdir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no finished checkpoint")
    ckpt.check_params(step, abstract.params)
    params = ckpt.restore_params(step, abstract.params)
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
    from vitjax.config import ConfigError
    try:
        result = evaluate_workdir(args.workdir, args.step, overrides)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
