"""Scanned layers (``model.scan_layers=True``) against unrolled blocks, side by side in one run.

    python experiments/bench_scan_layers.py                       # both parts, ~10 min on 2 CPU cores
    python experiments/bench_scan_layers.py --part compile --variant g/14
    python experiments/bench_scan_layers.py --part losses --steps 10

``compile``: the ViT-g/14 FSDP-8 dry run of ``experiments/dry_run_vit_g14.sh`` (224 px, batch 256,
bf16, remat full, 8 simulated devices, ``mesh.fsdp=8``) with and without scanning, each in its own
process (``python -m vitjax.train --dry_run``): trace and compile seconds, per-device parameter and
optimizer bytes, and the collectives one step runs.

``losses``: ViT-B/16 (fp32, 224 px, batch 4, DeiT's AdamW recipe, a random (not zero) head, drop-path 0 so that no random mask
depends on the layout) trained ``--steps`` steps on the same random batches, unscanned and scanned from
the *same* initial weights (the unscanned init converted with ``vitjax.models.scan.to_layout``): the
largest relative difference of the per-step losses.

Writes ``--out`` (JSON) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def dry_run(variant: str, scan: bool, batch: int) -> dict:
    cmd = [sys.executable, "-m", "vitjax.train", "--config", "configs/vit_b16_imagenet.py", "--workdir",
           tempfile.mkdtemp(prefix="vitjax_scan_dry_"), "--dry_run", "--simulate_devices", "8",
           f"--config.model.variant={variant}", f"--config.input.batch_size={batch}", "--config.model.remat=full",
           "--config.mesh.data=1", "--config.mesh.fsdp=8", f"--config.model.scan_layers={scan}"]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"dry run failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    text = out.stdout
    m = re.search(r"traced in ([\d.]+)s, compiled in ([\d.]+)s", text)

    def mib(label):
        v = re.search(rf"{label}\s+([\d.]+) (MiB|GiB)", text)
        return float(v.group(1)) * (1024 if v.group(2) == "GiB" else 1)

    coll = dict(re.findall(r"(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute) (\d+)",
                           text.split("collectives per step:")[1].splitlines()[0]))
    return {"scan_layers": scan, "trace_s": float(m.group(1)), "compile_s": float(m.group(2)),
            "wall_s": time.time() - t0, "params_mib": mib("params"), "optimizer_mib": mib("optimizer"),
            "collectives": {k: int(v) for k, v in coll.items()}, "report": text}


def losses(steps: int, scan: bool, init_params, batches, variant: str):
    import jax

    from vitjax import config as config_lib
    from vitjax.models import scan as scan_lib
    from vitjax.models.registry import model_options
    from vitjax.training.trainer import Trainer

    overrides = [f"--config.model.variant={variant}", "--config.model.dtype=float32", "--config.model.drop_path=0.0",
                 "--config.model.head_zero_init=False",
                 f"--config.input.batch_size={len(batches[0]['label'])}", f"--config.model.scan_layers={scan}",
                 f"--config.train.total_steps={steps}", "--config.optim.warmup_steps=2"]
    config = config_lib.apply_overrides(config_lib.load_config_file(os.path.join(ROOT, "configs/vit_b16_imagenet.py")),
                                        overrides, model_options)
    trainer = Trainer(config, tempfile.mkdtemp(prefix="vitjax_scan_losses_"), load_data=False)
    trainer.setup_state()
    state = trainer.init_state()
    if init_params is not None:
        params = jax.device_put(scan_lib.to_layout(init_params, trainer.abstract_state.params),
                                trainer.state_sharding.params)
        state = state.replace(params=params, opt_state=jax.device_put(trainer.tx.init(params),
                                                                      trainer.state_sharding.opt_state))
    first = jax.device_get(state.params)
    step = trainer.compiled_train_step(batches[0])
    out = []
    for b in batches:
        state, metrics = step(state, jax.device_put(b, trainer.batches.batch_sharding(b)))
        out.append(float(jax.device_get(metrics["train/loss"])))
    return out, first, trainer.compile_seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["compile", "losses", "both"], default="both")
    p.add_argument("--variant", default="g/14", help="ViT variant of the dry run")
    p.add_argument("--batch", type=int, default=256, help="global batch of the dry run")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--loss_variant", default="B/16")
    p.add_argument("--out", default="/tmp/bench_scan_layers.json")
    args = p.parse_args()
    result = {}
    if args.part in ("compile", "both"):
        runs = [dry_run(args.variant, False, args.batch), dry_run(args.variant, True, args.batch)]
        result["compile"] = [{k: v for k, v in r.items() if k != "report"} for r in runs]
        print(f"ViT-{args.variant} FSDP-8 dry run (batch {args.batch}, bf16, remat full, 8 simulated CPU devices)")
        print(f"{'':>12} {'trace s':>8} {'compile s':>10} {'params MiB':>11} {'optim MiB':>10} {'all-gathers':>12} "
              f"{'all-reduces':>12}")
        for r in runs:
            print(f"{'scanned' if r['scan_layers'] else 'unscanned':>12} {r['trace_s']:8.1f} {r['compile_s']:10.1f} "
                  f"{r['params_mib']:11.2f} {r['optimizer_mib']:10.2f} {r['collectives']['all-gather']:12d} "
                  f"{r['collectives']['all-reduce']:12d}")
        print(f"compile time, unscanned / scanned: {runs[0]['compile_s'] / runs[1]['compile_s']:.1f}x")
        result["compile_ratio"] = runs[0]["compile_s"] / runs[1]["compile_s"]
    if args.part in ("losses", "both"):
        import numpy as np
        rng = np.random.RandomState(0)
        batches = [{"image": rng.randn(4, 224, 224, 3).astype(np.float32),
                    "label": rng.randint(0, 1000, (4,)).astype(np.int32)} for _ in range(args.steps)]
        plain, init, c0 = losses(args.steps, False, None, batches, args.loss_variant)
        scanned, _, c1 = losses(args.steps, True, init, batches, args.loss_variant)
        rel = [abs(a - b) / abs(a) for a, b in zip(plain, scanned)]
        print(f"ViT-{args.loss_variant} fp32, {args.steps} steps from the same weights (compile {c0:.1f}s unscanned, "
              f"{c1:.1f}s scanned)")
        print(f"{'step':>5} {'unscanned':>12} {'scanned':>12} {'rel diff':>10}")
        for i, (a, b, r) in enumerate(zip(plain, scanned, rel), 1):
            print(f"{i:5d} {a:12.6f} {b:12.6f} {r:10.2e}")
        print(f"largest relative loss difference: {max(rel):.2e}")
        result["losses"] = {"unscanned": plain, "scanned": scanned, "max_rel_diff": max(rel)}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
