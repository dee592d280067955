"""Run a scaling sweep (grid or star over width, depth, MLP size, images seen, learning rate), then fit
and report the scaling laws.

    python experiments/scaling/sweep.py --config configs/scaling_digits.py --out workdirs/scaling_digits
    python experiments/scaling/sweep.py --config configs/scaling_digits.py --out DIR --dry_run
    python experiments/scaling/sweep.py --config configs/scaling_digits.py --out DIR --config.grid.width=[16,32]

Runs train one after another in this process, each in ``DIR/runs/<name>/``. Rerunning the command
skips finished runs and resumes a half-finished one from its checkpoint. On several hosts or slices
sharing DIR, start the same command with ``--shard i/n`` on each (i = 0..n-1), then run
``experiments/scaling/analyze.py --out DIR`` once all are done. See docs/scaling.md.

In parallel on a cluster, one job per planned run (any number at once, in any order):

    python experiments/scaling/sweep.py --config C --out DIR --run_index 3 --no_analyze
    python experiments/scaling/sweep.py --config C --out DIR --emit_slurm DIR/sweep.sbatch --slurm_gpus_per_node 8
    sbatch DIR/sweep.sbatch          # array task i runs --run_index i (vitjax/scaling/cluster.py)
    python experiments/scaling/analyze.py --out DIR     # whatever has finished; names the missing runs

A run that spans several hosts adds ``--distributed`` (``--slurm_nodes N`` does), as ``vitjax.train``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from vitjax.config import ConfigError  # noqa: E402
from vitjax.scaling import sweep as sw  # noqa: E402
from vitjax.scaling.analysis import analyze_sweep, summary  # noqa: E402
from vitjax.scaling.cluster import slurm_array_script  # noqa: E402
from vitjax.training import distributed  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="sweep config file, e.g. configs/scaling_digits.py")
    p.add_argument("--out", required=True, help="sweep folder (runs, records, report, plots)")
    p.add_argument("--shard", default="0/1", help="i/n: train only runs i, i+n, ... of the plan")
    p.add_argument("--run_index", type=int, action="append", default=None,
                   help="train only planned run I (repeatable; see --dry_run for the indices)")
    p.add_argument("--dry_run", action="store_true", help="print the planned runs and exit")
    s = p.add_argument_group("SLURM job array (one task per planned run)")
    s.add_argument("--emit_slurm", default=None, metavar="FILE", help="write the sbatch script to FILE and exit")
    s.add_argument("--slurm_nodes", type=int, default=1, help="hosts per run (> 1: --distributed)")
    s.add_argument("--slurm_gpus_per_node", type=int, default=0)
    s.add_argument("--slurm_cpus_per_task", type=int, default=None)
    s.add_argument("--slurm_time", default="04:00:00", help="time limit of one run")
    s.add_argument("--slurm_partition", default=None)
    s.add_argument("--slurm_max_parallel", type=int, default=None, help="runs at once (array throttle)")
    distributed.add_arguments(p)
    p.add_argument("--no_analyze", action="store_true", help="train only; fit later with analyze.py")
    p.add_argument("--compilation_cache", default="auto",
                   help="jax persistent compilation cache folder ('auto': OUT/jax_cache, 'none': off); "
                        "runs of the same shape share their compiled eval step")
    args, overrides = p.parse_known_args(argv)
    try:
        idx, _, n = args.shard.partition("/")
        shard = (int(idx), int(n or 1))
    except ValueError:
        print(f"error: --shard {args.shard!r} must look like 0/4", file=sys.stderr)
        return 2
    try:
        cfg = sw.load_sweep_config(args.config, overrides)
        if args.emit_slurm:
            n = len(sw.plan(cfg))
            text = slurm_array_script(args.config, args.out, n, overrides=overrides, nodes=args.slurm_nodes,
                                      gpus_per_node=args.slurm_gpus_per_node, cpus_per_task=args.slurm_cpus_per_task,
                                      time_limit=args.slurm_time, partition=args.slurm_partition,
                                      max_parallel=args.slurm_max_parallel, python=sys.executable)
            os.makedirs(os.path.join(args.out, "slurm"), exist_ok=True)    # sbatch does not create it
            with open(args.emit_slurm, "w") as fh:
                fh.write(text)
            print(f"wrote {args.emit_slurm}: a job array of {n} runs; submit with: sbatch {args.emit_slurm}")
            return 0
        if args.dry_run:
            specs = sw.plan(cfg)
            for i, s in enumerate(specs):
                print(f"{i:3d} {s.name:28s} " + " ".join(f"{k}={v}" for k, v in s.overrides.items()))
            print(f"{len(specs)} runs, {sum(s.overrides['train.total_steps'] for s in specs)} steps in all")
            return 0
        # Each run's Trainer points jax's cache at $VITJAX_COMPILE_CACHE (vitjax.training.compile_cache)
        # unless its config sets train.compile_cache_dir.
        cache = os.path.join(args.out, "jax_cache") if args.compilation_cache == "auto" else args.compilation_cache
        os.environ["VITJAX_COMPILE_CACHE"] = "" if cache == "none" else os.path.abspath(cache)
        problem = distributed.initialize(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 3
        t0 = time.time()
        load0 = os.getloadavg()[0]
        sw.run_sweep(cfg, args.out, shard=shard, only=args.run_index)
        print(f"sweep: {time.time() - t0:.0f} s of training (load average {load0:.2f} -> "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)", file=sys.stderr)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.no_analyze or shard[1] > 1 or args.run_index is not None or jax.process_index() != 0:
        return 0
    t1 = time.time()
    doc = analyze_sweep(args.out)
    print(f"analysis: {time.time() - t1:.0f} s; report: {os.path.join(args.out, 'report.md')}", file=sys.stderr)
    print(f"total: {time.time() - t0:.0f} s", file=sys.stderr)
    print(summary(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
