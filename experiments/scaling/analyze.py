"""Fit scaling laws to a finished (or partly finished) sweep and write report.md/report.json/plots.

It reads whatever runs have a record (a sweep trained by parallel jobs may still be running) and
says which planned runs are missing, with their --run_index.

    python experiments/scaling/analyze.py --out workdirs/scaling_digits
    python experiments/scaling/analyze.py --out workdirs/scaling_digits --loss best_loss --n N --holdout 4
    python experiments/scaling/analyze.py --out workdirs/scaling_digits --e_min 0      # L(N, D) with E free

Options not given default to the ``analysis`` section of the sweep config (saved in OUT/sweep.json).
See vitjax/scaling/analysis.py for what is fitted and docs/scaling.md for how to read the report.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from vitjax.scaling.analysis import analyze_sweep, summary  # noqa: E402
from vitjax.scaling.records import describe_missing, progress  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="the sweep folder given to sweep.py")
    p.add_argument("--loss", choices=("loss", "best_loss"), default=None, help="final (default) or best eval loss")
    p.add_argument("--n", choices=("N_nonembed", "N"), default=None, help="parameter count to fit against")
    p.add_argument("--holdout", type=int, default=None, help="largest-compute runs held out (default 3)")
    p.add_argument("--n_boot", type=int, default=None, help="bootstrap resamples per law (default 200)")
    p.add_argument("--e_min", type=float, default=None,
                   help="known lower bound of L(N, D)'s irreducible loss E (0: none; default: the sweep config's)")
    p.add_argument("--no_plots", action="store_true")
    args = p.parse_args(argv)
    t0 = time.time()
    print(f"analysis of {args.out}: {describe_missing(progress(args.out))}", file=sys.stderr)
    try:
        doc = analyze_sweep(args.out, loss_key=args.loss, n_key=args.n, holdout=args.holdout,
                            n_boot=args.n_boot, e_min=args.e_min, plots=False if args.no_plots else None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"analysis: {time.time() - t0:.0f} s; report: {os.path.join(args.out, 'report.md')}", file=sys.stderr)
    print(summary(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
