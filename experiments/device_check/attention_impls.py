"""Issue 21's GPU figures in one process: the attention implementations side by side.

    python experiments/device_check/attention_impls.py            # on a GPU: the device check's last step
    python experiments/device_check/attention_impls.py --small    # any machine: toy sizes, checks the script

1. ViT-B/16 training step (bf16, synthetic batch already on the device) with ``model.attention`` =
   ``xla``, ``cudnn`` and ``pallas``: median step time, img/s, MFU, and each one's speed over ``xla``.
   Layers are scanned (``model.scan_layers=True``) so each variant compiles in seconds; the three
   share that setting, so the ratios compare the attention alone.
2. The dense kernels' forward+backward against XLA at 4k and 16k tokens (B=1, 12 heads of 64, bf16;
   ``experiments/bench_attention.py``'s measurement: median time and XLA's planned peak memory).

Each variant runs on its own: one that is unavailable here or fails is recorded with its error, and
the others still run. Prints one JSON object per line (``{"part": ...}``), the last a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "experiments"))

IMPLS = ("xla", "cudnn", "pallas")
# The ViT step's batch/steps/warmup/model overrides and the kernels' lengths/heads/repeats.
SIZES = {"full": dict(batch=128, steps=10, warmup=3, overrides={}, lengths=(4096, 16384), heads=12, repeats=5),
         "small": dict(batch=2, steps=2, warmup=1, overrides=dict(depth=2, image_size=32), lengths=(256, 512),
                       heads=2, repeats=1)}


def vit_steps(impls, batch: int, steps: int, warmup: int, overrides: dict) -> list[dict]:
    from benchmark import bench_vitjax
    rows = []
    for impl in impls:
        try:
            r = bench_vitjax("vit_b16", batch, "bfloat16", steps, warmup, "none", {"data": -1, "fsdp": 1},
                             {"attention": impl, "scan_layers": True, **overrides})
            row = dict(part="vit_b16", attention=impl, step_time_s=r["step_time_s"], img_per_s=r["img_per_s"],
                       mfu=r["mfu"], compile_s=r["compile_s"], batch=batch, device_kind=r["device_kind"])
        except Exception as e:  # noqa: BLE001 -- an implementation this machine lacks is a finding, not a stop
            row = dict(part="vit_b16", attention=impl, error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def kernels(impls, lengths, heads: int, head_dim: int, repeats: int) -> list[dict]:
    import jax.numpy as jnp
    from bench_attention import bench
    rows = bench(impls, lengths, 1, heads, head_dim, jnp.bfloat16, repeats, max_run_bytes=float("inf"))
    for r in rows:
        r["part"] = "kernels"
        print(json.dumps(r), flush=True)
    return rows


def summary(vit: list[dict], kern: list[dict], unavailable=()) -> dict:
    """Times and ratios over xla; errors of the implementations that exist here (the others are listed
    once, under ``unavailable_here``)."""
    out = {}
    base = next((r["step_time_s"] for r in vit if r["attention"] == "xla" and "step_time_s" in r), None)
    for r in vit:
        if "step_time_s" in r:
            out[f"vit_b16_{r['attention']}_ms"] = round(1e3 * r["step_time_s"], 2)
            if base and r["attention"] != "xla":
                out[f"vit_b16_{r['attention']}_vs_xla"] = round(base / r["step_time_s"], 3)
        elif r["attention"] not in unavailable:
            out[f"vit_b16_{r['attention']}"] = r["error"][:120]
    for n in sorted({r["length"] for r in kern}):
        at = {r["impl"]: r for r in kern if r["length"] == n}
        ref = (at.get("xla") or {}).get("time_s")
        for impl, r in at.items():
            if r.get("time_s"):
                out[f"{n}_{impl}_ms"] = round(1e3 * r["time_s"], 2)
                if ref and impl != "xla":
                    out[f"{n}_{impl}_vs_xla"] = round(ref / r["time_s"], 3)
            elif r.get("error"):
                out[f"{n}_{impl}"] = r["error"][:120]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="toy sizes: a 2-block ViT, 256/512 tokens (CPU check)")
    p.add_argument("--impls", default=",".join(IMPLS))
    args = p.parse_args(argv)
    import jax
    from vitjax.models.attention import available
    impls, here = args.impls.split(","), available()
    z = SIZES["small" if args.small else "full"]
    vit = vit_steps(impls, batch=z["batch"], steps=z["steps"], warmup=z["warmup"], overrides=z["overrides"])
    kern = kernels([i for i in impls if i in here], z["lengths"], heads=z["heads"], head_dim=64, repeats=z["repeats"])
    missing = [i for i in impls if i not in here]
    print(json.dumps({"part": "summary", "backend": jax.default_backend(), "unavailable_here": missing,
                      **summary(vit, kern, missing)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
