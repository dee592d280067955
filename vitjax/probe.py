"""``python -m vitjax.probe --workdir DIR``: kNN / nearest-class-mean / linear-probe accuracy of a
pretrained encoder's frozen features (an MAE, DINO, CLIP or classification workdir).

    python -m vitjax.probe --workdir workdirs/mae_digits                     # latest checkpoint
    python -m vitjax.probe --workdir workdirs/mae_digits --random_init       # same encoder, untrained
    python -m vitjax.probe --workdir DIR --methods knn,ncm,linear --linear_epochs 90 --json out.json

The data, eval ops and mesh are the workdir's own (its config.json); any ``--config.KEY=VALUE``
overrides them (e.g. ``--config.input.data.data_dir=...``). Features: the objective's
``feature_fn`` (MAE: ``objective.probe_pool``; DINO: the backbone's normalised class token; CLIP: the
image tower; a classifier: its pooled features before its head). The probes are the ``knn``,
``ncm`` and ``linear_probe`` evaluators of ``vitjax.evals``, the code training runs at eval steps.
The linear probe trains on the training split's features (eval ops, no augmentation) and scores the
eval split; ``--max_train_examples`` caps the training split (default: the objective's own cap,
``objective.probe_train_examples``).

DINO workdirs probe the EMA teacher, as the paper evaluates it; ``--student`` probes the student.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax

from vitjax import config as config_lib
from vitjax.evals import EvalRun, build_evaluator, run_evaluators
from vitjax.evals.probes import PROBE_TYPES, ProbeOptions, feature_sizes, representation_cap
from vitjax.models.dino import DINO
from vitjax.training.trainer import Trainer
from vitjax.training.workdir import load_workdir, read_config, weights_for


def probe_evaluators(args, config, cap) -> dict:
    """The ``knn`` / ``ncm`` / ``linear_probe`` evaluators the flags ask for (named knn, ncm, linear)."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in PROBE_TYPES]
    if bad:
        raise ValueError(f"--methods has {bad}; choose from {sorted(PROBE_TYPES)}")
    options = ProbeOptions(probe=methods, probe_train_examples=cap, knn_k=args.knn_k,
                           knn_temperature=args.knn_temperature, linear_epochs=args.linear_epochs,
                           linear_batch_size=args.linear_batch_size, linear_lr=args.linear_lr,
                           linear_optimizer=args.linear_optimizer)
    return {name: build_evaluator(name, spec, config)
            for name, spec in options.specs(missing_labels="error", origin="--methods").items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a vitjax training workdir")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--random_init", action="store_true", help="probe the untrained model (the baseline)")
    p.add_argument("--methods", default="knn,linear", help="comma list of knn, ncm, linear")
    p.add_argument("--knn_k", type=int, default=20)
    p.add_argument("--knn_temperature", type=float, default=0.07)
    p.add_argument("--linear_epochs", type=int, default=90)
    p.add_argument("--linear_batch_size", type=int, default=16384)
    p.add_argument("--linear_lr", type=float, default=0.1)
    p.add_argument("--linear_optimizer", default="lars", choices=("lars", "sgd", "adamw"))
    p.add_argument("--max_train_examples", type=int, default=None, help="cap on the kNN bank / probe set")
    p.add_argument("--student", action="store_true",
                   help="DINO: probe the student (default: the EMA teacher, as the paper)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args, overrides = p.parse_known_args(argv)

    try:
        config = read_config(args.workdir, overrides)
        trainer = Trainer(config, args.workdir)
        weights = weights_for(trainer.model, args.student, args.workdir)
        cap = args.max_train_examples
        if cap is None:
            cap = representation_cap(trainer.objective.default_evals())
        evaluators = probe_evaluators(args, config, cap)
    except (config_lib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if trainer.eval_source is None:
        print("error: the workdir's config has no eval data (config.input.eval_data)", file=sys.stderr)
        return 2
    trainer.setup_state()
    if args.random_init:
        params = trainer.init_state().params      # DINO's teacher starts as this copy
        what = "random init"
    else:
        _, _, loaded = load_workdir(args.workdir, args.step, weights=weights)
        params = jax.device_put(loaded, trainer.state_sharding.params)
        what = f"checkpoint of {args.workdir}" + (f" (DINO {'student' if args.student else 'teacher'})"
                                                  if isinstance(trainer.model, DINO) else "")
    ctx = trainer.eval_context       # the run's model, objective, splits and map_batches
    t0 = time.time()
    run = EvalRun(ctx, params)
    train = run.features(None, "train", max_examples=cap)      # the evaluators below reuse both
    test = run.features(None, "eval")
    if "label" not in train or "label" not in test:
        print("error: the dataset has no labels to probe with", file=sys.stderr)
        return 2
    res = run_evaluators(evaluators, ctx, params, prefix="", run=run)
    res.update(**feature_sizes(train, test), seconds=round(time.time() - t0, 1), params=what)
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
