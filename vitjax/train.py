"""Command line: ``python -m vitjax.train --config configs/vit_digits.py --workdir /tmp/run``.

Any config key can be overridden: ``--config.train.num_epochs=10 --config.mesh.fsdp=4``. Rerunning
with the same ``--workdir`` resumes from its latest intact checkpoint. One run at a time per workdir
(``<workdir>/run.lock``). SIGTERM stops at a step boundary after a checkpoint (exit 0); Ctrl-C does
the same and exits 130, a second Ctrl-C stops at once. Mistakes found at start-up (config, dataset,
workdir in use, ``config.init.path``, damaged checkpoints) are one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

import jax
from absl import flags

from vitjax import config as config_lib
from vitjax.data.sources import DatasetNotPreparedError
from vitjax.models.registry import model_options
from vitjax.training import distributed
from vitjax.training.checkpoint import CheckpointDamagedError, CheckpointMismatchError
from vitjax.training.dry_run import format_dry_run
from vitjax.training.trainer import Trainer

INTERRUPTED = ("vitjax: interrupted (Ctrl-C) without saving; rerun the same command to resume from the "
               "last checkpoint")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m vitjax.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="config file, optionally with an argument: path.py[:arg]")
    p.add_argument("--workdir", required=True, help="where checkpoints, metrics.jsonl and TensorBoard go")
    p.add_argument("--dry_run", action="store_true",
                   help="compile the train step for this config and mesh, print per-device memory and "
                        "collectives, and exit without training (reads no data)")
    p.add_argument("--simulate_devices", type=int, default=None,
                   help="run on N simulated CPU devices (e.g. a dry run of an 8-way mesh on a laptop)")
    distributed.add_arguments(p)
    return p.parse_known_args(argv)


def main(argv=None) -> int:
    args, overrides = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    flags.FLAGS.mark_as_parsed()      # grain worker processes read absl flags
    if args.simulate_devices:   # before the backend starts: importing jax does not start it
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.simulate_devices)
    problem = distributed.initialize(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 3
    try:
        config = config_lib.apply_overrides(config_lib.load_config_file(args.config), overrides, model_options)
        trainer = Trainer(config, args.workdir, load_data=not args.dry_run)
    except (config_lib.ConfigError, DatasetNotPreparedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if args.dry_run:
        print(format_dry_run(trainer.dry_run()))
        return 0
    try:
        result = trainer.train()
    except (config_lib.ConfigError, CheckpointDamagedError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if trainer.preempted_at is not None:
        return 130 if trainer.stop_signal == "SIGINT" else 0
    if result:
        print("final: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
