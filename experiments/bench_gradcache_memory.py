"""Per-device memory of a CLIP step at a large contrastive batch: the full batch at once vs gradient
caching over micro-batches (``train.micro_batch_size``, ``vitjax.training.gradcache``). Dry runs:
compiles only, allocates nothing, reads no data.

    python experiments/bench_gradcache_memory.py                        # batch 8192, 8 micro-batches
    python experiments/bench_gradcache_memory.py --batch 8192 --micro 1024 --devices 8

Prints each step's XLA temporaries (activations + workspace) per device and their ratio. The loss of
both is the full-batch contrastive loss (tests/test_gradcache.py checks they agree to 1e-5).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/clip_digits.py")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--micro", type=int, default=1024, help="train.micro_batch_size of the cached step")
    ap.add_argument("--devices", type=int, default=8, help="simulated CPU devices (data-parallel mesh)")
    ap.add_argument("overrides", nargs="*", help="--config.KEY=VALUE overrides for both steps")
    args, extra = ap.parse_known_args()

    import jax   # after the device count is set: importing jax does not start the backend
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.devices)
    from vitjax.config import apply_overrides, load_config_file
    from vitjax.training.trainer import Trainer

    rows = []
    for micro in (0, args.micro):
        cfg = apply_overrides(load_config_file(args.config), [
            f"--config.input.batch_size={args.batch}", f"--config.train.micro_batch_size={micro}",
            "--config.train.compile_cache_dir=", *args.overrides, *extra])
        t0 = time.time()
        r = Trainer(cfg, "/tmp/vitjax_gradcache_dry_run", load_data=False).dry_run()
        rows.append((micro, r, time.time() - t0))
    print(f"{args.config}, global batch {args.batch}, {args.devices} devices ({jax.devices()[0].platform})")
    print(f"{'step':34s} {'temporaries/device':>20s} {'total/device':>14s} {'compile':>8s}")
    for micro, r, dt in rows:
        name = "full batch" if not micro else f"gradient caching, micro-batch {micro}"
        print(f"{name:34s} {r['bytes_temporaries'] / 2**20:16.1f} MiB {r['bytes_total'] / 2**20:10.1f} MiB "
              f"{r['compile_seconds']:7.1f}s")
    ratio = rows[1][1]["bytes_temporaries"] / rows[0][1]["bytes_temporaries"]
    print(f"temporaries ratio (cached / full): {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
