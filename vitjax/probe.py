"""``python -m vitjax.probe --workdir DIR``: kNN / nearest-class-mean / linear-probe accuracy of a
pretrained encoder's frozen features (an MAE, DINO or classification workdir).

    python -m vitjax.probe --workdir workdirs/mae_digits                     # latest checkpoint
    python -m vitjax.probe --workdir workdirs/mae_digits --random_init       # same encoder, untrained
    python -m vitjax.probe --workdir DIR --methods knn,ncm,linear --linear_epochs 90 --json out.json

The data, eval ops and mesh are the workdir's own (its config.json); any ``--config.KEY=VALUE``
overrides them (e.g. ``--config.input.data.data_dir=...``). Features: the objective's probe feature
(MAE: ``objective.probe_pool``; DINO: the backbone's normalised class token), or a classifier's
pooled features before its head. The linear probe trains on the training split's features (eval ops,
no augmentation) and scores the eval split.

DINO workdirs probe the EMA teacher, as the paper evaluates it; ``--student`` probes the student.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def features(trainer, params, source, max_examples=None):
    """{"feat": [N, D], "label": [N]} of ``source`` under ``params`` (objective's probe feature, or
    the model's pooled features)."""
    obj, model = trainer.objective, trainer.model
    if hasattr(obj, "features"):
        return obj.features(trainer, params, source, max_examples=max_examples)

    def fn(p, b):
        return {"feat": model.apply({"params": p}, b["image"], output="features")}
    return trainer.map_batches("probe_features", fn, params, source, max_examples=max_examples)


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

    import jax

    from vitjax import config as config_lib
    from vitjax.checkpoint import load_workdir, weights_for
    from vitjax.evals.representation import representation_evals
    from vitjax.models.dino import DINO
    from vitjax.trainer import Trainer

    cfg_path = os.path.join(args.workdir, "config.json")
    if not os.path.isfile(cfg_path):
        print(f"error: {args.workdir} has no config.json; pass the --workdir of a vitjax.train run", file=sys.stderr)
        return 2
    with open(cfg_path) as fh:
        config = config_lib.from_json(fh.read())
    try:
        config_lib.apply_overrides(config, overrides)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trainer = Trainer(config, args.workdir)
    try:
        weights = weights_for(trainer.model, args.student, args.workdir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
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
    if trainer.eval_source is None:
        print("error: the workdir's config has no eval data (config.input.eval_data)", file=sys.stderr)
        return 2
    t0 = time.time()
    train = features(trainer, params, trainer.train_source, args.max_train_examples)
    test = features(trainer, params, trainer.eval_source)
    if "label" not in train or "label" not in test:
        print("error: the dataset has no labels to probe with", file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    res = representation_evals(train["feat"], train["label"], test["feat"], test["label"], methods=methods,
                               knn_k=args.knn_k, knn_temperature=args.knn_temperature,
                               linear_epochs=args.linear_epochs, linear_batch_size=args.linear_batch_size,
                               linear_lr=args.linear_lr, linear_optimizer=args.linear_optimizer)
    res.update(features=int(train["feat"].shape[-1]), train_examples=int(len(train["feat"])),
               test_examples=int(len(test["feat"])), seconds=round(time.time() - t0, 1), params=what)
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
