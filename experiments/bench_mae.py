"""MAE's asymmetric design, measured: one training step of MAE ViT-L/16 (encoder on the 49 visible
patches) against the same model with the encoder on all 196 patches (mask tokens in the encoder).

    python experiments/bench_mae.py                       # ViT-L/16, batch 8 per device, bf16
    python experiments/bench_mae.py --variant B/16 --batch 256 --steps 20

On every platform: the XLA cost-analysis FLOPs of both compiled steps (forward + backward + AdamW)
and their ratio (the paper's goal: >= 3x). On a GPU/TPU also the median step time of each, their
ratio, and MFU against the device's bf16 peak (``vitjax.training.flops.PEAK_FLOPS``). On CPU the steps are
compiled but not run (``--run`` runs them anyway). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="L/16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image_size", type=int, default=224)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--run", action="store_true", help="also time the steps on CPU")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import linen as nn

    from vitjax.training.flops import compiled_flops, device_peak_flops
    from vitjax.models.mae import MAE, mae, mae_loss, pixel_targets

    model = mae(args.variant, image_size=args.image_size, dtype=args.dtype)
    b, s = args.batch, args.image_size
    images = jnp.asarray(np.random.default_rng(0).normal(size=(b, s, s, 3)), jnp.float32)
    noise = jax.random.uniform(jax.random.key(1), (b, model.num_patches))
    # Parameters in init's shapes, filled on the host: compiling init's RNG for ViT-L takes minutes on
    # CPU, and a step's speed does not depend on the values.
    shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, images[:1])))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.ones(a.shape, a.dtype) if jax.tree_util.keystr(path).endswith("['scale']")
        else jnp.asarray(0.02 * rng.standard_normal(a.shape, np.float32), a.dtype), shapes)
    tx = optax.adamw(1e-4, b2=0.95, weight_decay=0.05)
    opt = tx.init(params)
    n_params = sum(x.size for x in jax.tree.leaves(params))

    def make_step(method):
        def loss_fn(p):
            if method == "mae":
                out = model.apply({"params": p}, images, noise=noise, train=True)
            else:
                out = model.apply({"params": p}, images, noise, method=MAE.all_tokens_baseline)
            return mae_loss(out["pred"], pixel_targets(images, model.patch_size, True), out["mask"])

        def step(p, o):
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, o = tx.update(g, o, p)
            return optax.apply_updates(p, u), o, loss
        return jax.jit(step, donate_argnums=(0, 1))

    platform = jax.devices()[0].platform
    run = platform != "cpu" or args.run
    peak = device_peak_flops()
    res = {"variant": args.variant, "batch": b, "dtype": args.dtype, "platform": platform,
           "device": jax.devices()[0].device_kind, "params": int(n_params),
           "visible_patches": model.num_visible, "patches": model.num_patches}
    for name in ("mae", "all_tokens"):
        t0 = time.time()
        compiled = make_step(name).lower(params, opt).compile()
        res[f"{name}_compile_s"] = round(time.time() - t0, 1)
        res[f"{name}_flops"] = compiled_flops(compiled)
        if run:
            p = jax.tree.map(jnp.copy, params)
            o = jax.tree.map(jnp.copy, opt)
            p, o, loss = compiled(p, o)
            jax.block_until_ready(loss)
            times = []
            for _ in range(args.steps):
                t = time.perf_counter()
                p, o, loss = compiled(p, o)
                jax.block_until_ready(loss)
                times.append(time.perf_counter() - t)
            res[f"{name}_step_s"] = float(np.median(times))
            if peak and res[f"{name}_flops"]:
                res[f"{name}_mfu"] = res[f"{name}_flops"] / res[f"{name}_step_s"] / peak
    res["flops_ratio"] = res["all_tokens_flops"] / res["mae_flops"] if res["mae_flops"] else None
    if run:
        res["speedup"] = res["all_tokens_step_s"] / res["mae_step_s"]
    print(f"MAE ViT-{args.variant}, batch {b}, {args.dtype}, {res['device']}: encoder on "
          f"{model.num_visible} of {model.num_patches} patches")
    print(f"  {'':<22}{'GFLOP/step':>12}{'step (ms)':>12}{'MFU':>8}")
    for name, label in (("mae", "MAE (visible only)"), ("all_tokens", "encoder on all")):
        st = f"{res[name + '_step_s'] * 1e3:12.1f}" if run else f"{'-':>12}"
        mfu = f"{res[name + '_mfu']:8.1%}" if res.get(name + "_mfu") else f"{'-':>8}"
        print(f"  {label:<22}{res[name + '_flops'] / 1e9:12.1f}{st}{mfu}")
    print(f"  FLOPs ratio (all / MAE): {res['flops_ratio']:.2f}x (goal >= 3x)"
          + (f"; measured step-time ratio {res['speedup']:.2f}x" if run else "; step times: run on a GPU/TPU"))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
