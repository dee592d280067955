"""Swin-T training step with the Pallas window-attention kernel vs the XLA reference: the same config
(``configs/swin_t_imagenet.py``, bf16, batch 128 per device) compiled twice, ``model.attention_impl``
"pallas" then "reference", on synthetic batches already on the device.

    python experiments/device_check/swin_step.py               # GPU/TPU
    python experiments/device_check/swin_step.py --small      # configs/swin_digits.py, batch 2: CPU code-path check

Prints a table and one JSON line: median step time of each, their ratio (reference / kernel), compile times.
On CPU the kernel runs in the Pallas interpreter, so ``--small`` checks the code path, not the speed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def step_time(impl: str, args, overrides: list[str]) -> tuple[float, float]:
    import jax
    import numpy as np

    from vitjax.config import apply_overrides, load_config_file
    from vitjax.training.trainer import Trainer

    on_cpu = jax.default_backend() == "cpu"
    cfg = apply_overrides(load_config_file(args.config), [
        f"--config.model.attention_impl={impl}", f"--config.input.batch_size={args.batch * jax.device_count()}",
        "--config.train.total_steps=1000", "--config.train.compile_cache_dir=", *overrides])
    if on_cpu and impl == "pallas":     # the kernel runs on CPU only in the Pallas interpreter
        with cfg.unlocked():
            cfg.model.attention_interpret = True
    tr = Trainer(cfg, "/tmp/vitjax_swin_step", load_data=False)
    tr.setup_state()
    state = tr.init_state()
    example = tr.objective.example_batch(tr.model, tr.batch_size)
    rng = np.random.default_rng(0)
    host = {k: (rng.normal(size=v.shape) if np.issubdtype(v.dtype, np.floating)
                else rng.integers(0, 10, size=v.shape)).astype(v.dtype) for k, v in example.items()}
    batch = jax.device_put(host, tr.batches.batch_sharding(host))
    step = tr.compiled_train_step(batch)
    for _ in range(args.warmup):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), tr.compile_seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--batch", type=int, default=None, help="per device (default 128; 2 with --small)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    import jax

    args.batch = args.batch or (2 if args.small else 128)
    args.steps = args.steps or (1 if args.small else 10)
    args.config = "configs/swin_digits.py" if args.small else "configs/swin_t_imagenet.py"
    small = ["--config.model.dtype=float32"] if args.small else []
    res = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "batch_per_device": args.batch,
           "small": args.small}
    for impl in ("pallas", "reference"):
        t, c = step_time(impl, args, small)
        res[f"{impl}_step_s"], res[f"{impl}_compile_s"] = t, c
        print(f"swin {impl:10s}: {1e3 * t:9.1f} ms/step (compiled in {c:.1f}s)", flush=True)
    res["speedup"] = res["reference_step_s"] / res["pallas_step_s"]
    print(f"reference / kernel step time: {res['speedup']:.2f}x")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
