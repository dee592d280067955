"""Start-up time with JAX's persistent compilation cache (vitjax.training.compile_cache): the same run
started twice in fresh processes with an empty cache folder, and the train step's compile time of each
(the ``vitjax: step traced in T s, compiled in N s`` line; with the cache the second start loads the
executable instead of compiling; tracing to HLO is paid on every start).

    python experiments/bench_compile_cache.py                                 # the digits demo, 3 steps
    python experiments/bench_compile_cache.py --config configs/vit_b16_imagenet.py --dry_run \\
        --simulate_devices 8 --config.input.batch_size=64                     # a dry run: compile only

Prints both times and their ratio (goal: the second start compiles in <= 20% of the first's time).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILED = re.compile(r"traced in ([0-9.]+)s, compiled in ([0-9.]+)s")


def start(args, extra, cache: str, workdir: str) -> tuple[float, float, float]:
    """(trace and compile seconds the run printed, wall seconds of the whole process)."""
    cmd = [sys.executable, "-m", "vitjax.train", "--config", args.config, "--workdir", workdir,
           f"--config.train.compile_cache_dir={cache}"]
    if args.dry_run:
        cmd.append("--dry_run")
    else:
        cmd += [f"--config.train.total_steps={args.steps}", "--config.train.eval_every_steps=0",
                "--config.train.checkpoint_every_steps=0"]
    if args.simulate_devices:
        cmd += ["--simulate_devices", str(args.simulate_devices)]
    t0 = time.time()
    p = subprocess.run(cmd + extra, cwd=REPO, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode:
        sys.exit(f"{' '.join(cmd + extra)} failed:\n{p.stderr[-3000:]}")
    found = COMPILED.findall(p.stdout + p.stderr)
    if not found:
        sys.exit(f"no 'traced in N s, compiled in M s' line in the output of {' '.join(cmd)}")
    return float(found[0][0]), float(found[0][1]), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/vit_digits.py")
    ap.add_argument("--steps", type=int, default=3, help="train steps per start (not with --dry_run)")
    ap.add_argument("--dry_run", action="store_true", help="compile only (python -m vitjax.train --dry_run)")
    ap.add_argument("--simulate_devices", type=int, default=None)
    args, extra = ap.parse_known_args()
    root = tempfile.mkdtemp(prefix="vitjax_cc_")
    cache = os.path.join(root, "jax_cache")
    try:
        first = start(args, extra, cache, os.path.join(root, "run1"))
        files = len(os.listdir(cache)) if os.path.isdir(cache) else 0
        second = start(args, extra, cache, os.path.join(root, "run2"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    what = "dry run" if args.dry_run else f"{args.steps}-step run"
    print(f"{args.config} ({what}{', ' + ' '.join(extra) if extra else ''}); cache entries after the first "
          f"start: {files}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'start':28s} {'step trace':>11s} {'step compile':>13s} {'process wall':>13s}")
    for name, (tr, co, wall) in (("first (empty cache)", first), ("second (same run, cached)", second)):
        print(f"{name:28s} {tr:10.2f}s {co:12.2f}s {wall:12.1f}s")
    print(f"second / first compile: {second[1] / first[1]:.3f} (goal <= 0.20); trace + compile: "
          f"{(second[0] + second[1]) / (first[0] + first[1]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
