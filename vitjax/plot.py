"""``python -m vitjax.plot --workdir W [W2 ...] --out curves.png``: learning curves of runs.

Reads each workdir's ``metrics.jsonl`` and draws one panel per metric, every run overlaid and
labelled with its workdir's name: the training loss (``train/loss``), each eval metric
(``eval/...``: the eval steps' records and ``python -m vitjax.evaluate``'s), the learning rate
(``train/lr``) and the throughput (``train/img_per_sec``), all against the optimizer step. A
resumed run appends records: the last value logged for a step is the one drawn. ``--metrics``
picks other keys of metrics.jsonl (``train/grad_norm``, ``train/top1``...).

Needs matplotlib (``pip install matplotlib``; in the ``test`` extra), which vitjax does not
otherwise require.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Sequence

from vitjax.training.metrics import read_metrics

TRAIN_LOSS, LR, IMG_PER_SEC = "train/loss", "train/lr", "train/img_per_sec"
TITLES = {TRAIN_LOSS: "train loss", LR: "learning rate", IMG_PER_SEC: "images / s"}


def series(records: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` sorted by step, the last record of a step winning;
    non-numeric and non-finite values are left out."""
    by_key: dict[str, dict[int, float]] = {}
    for r in records:
        if "step" not in r:
            continue
        for k, v in r.items():
            if k in ("step", "source") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(v):
                by_key.setdefault(k, {})[int(r["step"])] = float(v)
            else:
                by_key.setdefault(k, {}).pop(int(r["step"]), None)
    return {k: sorted(d.items()) for k, d in by_key.items() if d}


def default_panels(runs: dict[str, dict[str, list]]) -> list[str]:
    """Train loss, every eval metric (sorted), learning rate, images/s: those any run logged."""
    keys = set().union(*(s.keys() for s in runs.values())) if runs else set()
    evals = sorted(k for k in keys if k.startswith("eval/"))
    return [k for k in [TRAIN_LOSS, *evals, LR, IMG_PER_SEC] if k in keys]


def run_labels(workdirs: Sequence[str]) -> list[str]:
    """Each workdir's folder name, or its whole path where two runs share a folder name."""
    names = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    return [w if names.count(n) > 1 else n for w, n in zip(workdirs, names)]


def plot_runs(workdirs: Sequence[str], out: str, metrics: Sequence[str] | None = None,
              columns: int = 2) -> list[str]:
    """Writes the learning curves of ``workdirs`` to the PNG ``out``; returns the panels' metrics.
    FileNotFoundError for a workdir without metrics.jsonl, ValueError when there is nothing to plot,
    ImportError (one line) without matplotlib."""
    try:
        # matplotlib is optional (only plots need it), so it is imported here, not at module level;
        # the object-oriented Figure API draws without pyplot's global state or a display.
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plotting needs matplotlib, which is not installed: pip install matplotlib") from e
    runs = {}
    for w, label in zip(workdirs, run_labels(workdirs)):
        if not os.path.isfile(os.path.join(w, "metrics.jsonl")):
            raise FileNotFoundError(f"{w} has no metrics.jsonl; is it the --workdir of a vitjax.train run?")
        runs[label] = series(read_metrics(w))
    panels = list(metrics) if metrics else default_panels(runs)
    missing = [m for m in panels if not any(m in s for s in runs.values())]
    if missing or not panels:
        logged = sorted(set().union(*(s.keys() for s in runs.values())))
        raise ValueError(f"nothing to plot for {missing or 'the default metrics'}: the runs logged {logged}")
    cols = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, panels):
        for label, s in runs.items():
            points = s.get(key)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) <= 20 else None, markersize=3, label=label)
        ax.set_title(TITLES.get(key, key))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if key == TRAIN_LOSS and all(v > 0 for s in runs.values() for _, v in s.get(key, [])):
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    return panels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", nargs="+", required=True, metavar="W", help="one or more run workdirs")
    p.add_argument("--out", required=True, metavar="curves.png", help="the PNG to write")
    p.add_argument("--metrics", default=None,
                   help="comma list of metrics.jsonl keys (default: train/loss, eval/*, train/lr, train/img_per_sec)")
    p.add_argument("--columns", type=int, default=2, help="panels per row")
    args = p.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        panels = plot_runs(args.workdir, args.out, metrics, args.columns)
    except (ImportError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(panels)} panels ({', '.join(panels)}) for {len(args.workdir)} run(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
