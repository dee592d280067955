"""Dense vs sparse vs linear attention on long pixel sequences (configs/vit_digits_long.py).

    python experiments/long_attention_digits.py                  # 1,024 tokens, 15 epochs (~25 min on 2 cores)
    python experiments/long_attention_digits.py --tokens 64 --epochs 10 --impls xla,band,linear,performer

Trains the same ViT once per ``model.attention`` (same seed, data order and schedule) and prints each
run's held-out top-1, its difference from dense (``xla``), its step time and its wall time, side by
side; ``--out`` also writes them as JSON. ``band`` runs with the config's options (one image row each
side, the class token global).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from vitjax.config import apply_overrides, load_config_file  # noqa: E402
from vitjax.training.trainer import Trainer  # noqa: E402


def run_one(impl: str, tokens: int, epochs: int, workdir: str, extra: list[str]) -> dict:
    cfg = load_config_file(os.path.join(REPO, "configs", f"vit_digits_long.py:{tokens}"))
    cfg = apply_overrides(cfg, [f"--config.model.attention={impl}", f"--config.train.num_epochs={epochs}"] + extra)
    t0 = time.perf_counter()
    summary = Trainer(cfg, os.path.join(workdir, impl)).train()
    wall = time.perf_counter() - t0
    return dict(attention=impl, tokens=tokens, epochs=epochs, top1=float(summary["eval/top1"]),
                loss=float(summary["eval/loss"]), wall_s=wall, steps=summary.step,
                compile_s=summary.compile_seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1024, choices=(64, 1024))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--impls", default="linear,band,xla")
    p.add_argument("--workdir", default=None, help="parent of the runs' workdirs (default: a temp dir)")
    p.add_argument("--override", action="append", default=[], help="--config.KEY=VALUE for every run")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="vitjax_long_attn_")
    rows = []
    for impl in args.impls.split(","):
        rows.append(run_one(impl, args.tokens, args.epochs, workdir, args.override))
        r = rows[-1]
        print(f"{impl}: top1 {r['top1']:.4f} loss {r['loss']:.4f} wall {r['wall_s']:.0f} s", flush=True)
    dense = next((r["top1"] for r in rows if r["attention"] == "xla"), None)
    print(f"\n{args.tokens} tokens, {args.epochs} epochs")
    print(f"{'attention':<12}{'top1':>8}{'vs dense':>10}{'wall s':>9}")
    for r in rows:
        delta = "" if dense is None else f"{100 * (r['top1'] - dense):+.1f} pt"
        print(f"{r['attention']:<12}{r['top1']:>8.4f}{delta:>10}{r['wall_s']:>9.0f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
