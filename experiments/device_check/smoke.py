"""The device check's first step: does vitjax work on this machine's jax at all?

    python experiments/device_check/smoke.py --out smoke.json

Each check runs on its own and reports ``OK`` or ``BROKEN <check>: <error>`` with the file and line
where the error was raised, so an API break of a newer jax/flax/orbax/grain names itself:

* versions: jax, jaxlib, flax, optax, orbax-checkpoint, grain, ml-collections, torch, timm, and the devices;
* import: every vitjax module;
* train: two steps of the digits ViT through the real Trainer (data, jit, checkpoint, eval);
* experimental: the jax.experimental modules vitjax imports lazily (Pallas' Triton and Mosaic
  lowerings, jax's GPU flash and TPU splash kernels); a missing one costs only that path, named here;
* flash_attention: ``model.attention='pallas'`` (jax's flash kernel for this backend; interpreted on
  CPU) against dense XLA attention, causal, float32 and bfloat16;
* window_attention / latent_cross_attention: one forward + backward of each Pallas kernel, compiled for
  this backend (interpreted on CPU), against its XLA reference in float32 and bfloat16.

Writes one JSON object (``{"checks": {name: {"ok", "seconds", ...}}}``) and exits 0 either way: the
caller (experiments/device_check/run.py) records the result and carries on with the benchmarks.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# max |kernel - reference| / max |reference| allowed, per dtype (bf16 keeps 8 bits of mantissa)
TOLERANCE = {"float32": 2e-4, "bfloat16": 3e-2}


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    frame = tb[-1] if tb else None
    return f" (at {os.path.relpath(frame.filename, REPO)}:{frame.lineno})" if frame else ""


def check(results: dict, name: str, fn) -> None:
    t0 = time.time()
    try:
        out = fn() or {}
        results[name] = {"ok": True, "seconds": round(time.time() - t0, 2), **out}
        print(f"OK      {name} ({results[name]['seconds']} s) {json.dumps(out, default=str)[:300]}", flush=True)
    except Exception as e:  # noqa: BLE001  (every failure is a finding to report, not to stop at)
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{_where(e)}"
        results[name] = {"ok": False, "seconds": round(time.time() - t0, 2), "error": msg,
                         "traceback": traceback.format_exc()[-4000:]}
        print(f"BROKEN  {name}: {msg}", flush=True)


def versions() -> dict:
    import jax
    out = {"python": sys.version.split()[0]}
    for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "grain", "ml_collections", "numpy",
                "torch", "timm", "transformers"):
        try:
            out[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as e:  # noqa: BLE001
            out[mod] = f"missing ({type(e).__name__})"
    out["backend"] = jax.default_backend()
    out["devices"] = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    return out


def import_all() -> dict:
    import vitjax
    failed = {}
    names = [m.name for m in pkgutil.walk_packages(vitjax.__path__, "vitjax.")]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            failed[name] = f"{type(e).__name__}: {e}{_where(e)}"
    if failed:
        raise ImportError(f"{len(failed)} of {len(names)} modules fail to import: {failed}")
    return {"modules": len(names)}


def train_two_steps() -> dict:
    from vitjax.config import apply_overrides, load_config_file
    from vitjax.training.trainer import Trainer
    cfg = apply_overrides(load_config_file(os.path.join(REPO, "configs", "vit_digits.py")), [
        "--config.model.width=32", "--config.model.depth=1", "--config.model.num_heads=2",
        "--config.model.mlp_dim=64", "--config.input.batch_size=16", "--config.input.eval_batch_size=120",
        "--config.train.total_steps=2", "--config.train.log_every_steps=1", "--config.optim.warmup_steps=0",
        "--config.train.tensorboard=False", "--config.train.compile_cache_dir="])
    with tempfile.TemporaryDirectory() as wd:
        final = Trainer(cfg, wd).train().final_metrics
    return {k: round(float(v), 4) for k, v in final.items()}


def experimental() -> dict:
    from vitjax.kernels import dispatch
    from vitjax.models import attention
    names = sorted(set(dispatch.LOWERING.values()) | set(attention.FLASH.values()))
    missing = {n: dispatch.optional_module(n)[1] for n in names if dispatch.optional_module(n)[1]}
    if missing:
        raise ImportError(f"{len(missing)} of {len(names)} jax.experimental modules missing (those paths fall "
                          f"back or raise): {missing}")
    return {"modules": names}


def flash_attention() -> dict:
    import jax
    import jax.numpy as jnp
    from vitjax.models import attention as A
    backend = jax.default_backend()
    b, t, h, d = 2, 200, 2, 64
    ks = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(ks[i], (b, t, h, d), jnp.float32) for i in range(3))
    if backend == "gpu":
        fn = lambda q, k, v: A.attend(q, k, v, causal=True, impl="pallas")  # noqa: E731
    elif backend == "tpu":
        fn = lambda q, k, v: A._splash(q, k, v, causal=True)  # noqa: E731
    else:
        fn = lambda q, k, v: A._flash_gpu(q, k, v, causal=True, interpret=True)  # noqa: E731
    ref = lambda q, k, v: A.attend(q, k, v, causal=True, impl="xla")  # noqa: E731
    out = {"backend": backend}
    for dtype in (jnp.float32, jnp.bfloat16):
        out.update(_compare(fn, ref, [q, k, v], dtype))
    return out


def _compare(fn, ref, args, dtype) -> dict:
    import jax
    import jax.numpy as jnp

    def loss(f):
        return lambda *a: jnp.sum(f(*a).astype(jnp.float32) ** 2)

    args = [a.astype(dtype) if a.dtype == jnp.float32 and a.ndim == 4 else a for a in args]
    out, grads = jax.jit(lambda *a: (fn(*a), jax.grad(loss(fn), argnums=(0, 1, 2))(*a)))(*args)
    r_out, r_grads = jax.jit(lambda *a: (ref(*a), jax.grad(loss(ref), argnums=(0, 1, 2))(*a)))(*args)

    def rel(a, b):
        a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
        return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30))

    errs = {"out": rel(out, r_out), **{f"d{n}": rel(g, rg) for n, g, rg in zip("qkv", grads, r_grads)}}
    name = jnp.dtype(dtype).name
    worst = max(errs.values())
    if not worst <= TOLERANCE[name]:
        raise AssertionError(f"{name}: kernel vs reference max relative error {worst:.3g} > {TOLERANCE[name]} "
                             f"({errs})")
    return {f"{name}_max_rel_err": worst}


def window_kernel() -> dict:
    import jax
    import jax.numpy as jnp
    from vitjax.kernels.window_attention import window_attention, window_attention_reference, window_shift_mask
    interpret = jax.default_backend() == "cpu"
    w, heads, d, side = 7, 3, 32, 2
    n = 2 * side * side
    ks = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(ks[i], (n, heads, w * w, d), jnp.float32) for i in range(3))
    table = 0.02 * jax.random.normal(ks[3], ((2 * w - 1) ** 2, heads), jnp.float32)
    mask = jnp.asarray(window_shift_mask(side * w, side * w, w, w // 2))
    fn = lambda q, k, v, t, m: window_attention(q, k, v, t, m, window_size=w,  # noqa: E731
                                                implementation="pallas", interpret=interpret)
    ref = lambda q, k, v, t, m: window_attention_reference(q, k, v, t, m, window_size=w)  # noqa: E731
    out = {"interpret": interpret}
    for dtype in (jnp.float32, jnp.bfloat16):
        out.update(_compare(fn, ref, [q, k, v, table, mask], dtype))
    return out


def latent_kernel() -> dict:
    import jax
    import jax.numpy as jnp
    from vitjax.kernels.latent_cross_attention import latent_cross_attention, latent_cross_attention_reference
    interpret = jax.default_backend() == "cpu"
    b, h, m, n, d = 2, 2, 64, 300, 32
    ks = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(ks[0], (b, h, m, d), jnp.float32)
    k = jax.random.normal(ks[1], (b, h, n, d), jnp.float32)
    v = jax.random.normal(ks[2], (b, h, n, d), jnp.float32)
    mask = jnp.arange(n)[None, :] < jnp.array([[n], [n - 37]])
    fn = lambda q, k, v, mk: latent_cross_attention(q, k, v, mk, implementation="pallas",  # noqa: E731
                                                    interpret=interpret)
    ref = lambda q, k, v, mk: latent_cross_attention_reference(q, k, v, mk)  # noqa: E731
    out = {"interpret": interpret}
    for dtype in (jnp.float32, jnp.bfloat16):
        out.update(_compare(fn, ref, [q, k, v, mask], dtype))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--skip", default="", help="comma list of checks to skip")
    args = ap.parse_args()
    results: dict = {}
    checks = {"versions": versions, "import": import_all, "experimental": experimental, "train": train_two_steps,
              "flash_attention": flash_attention, "window_attention": window_kernel, "latent_cross_attention": latent_kernel}
    for name, fn in checks.items():
        if name not in args.skip.split(","):
            check(results, name, fn)
    broken = [n for n, r in results.items() if not r["ok"]]
    print(f"smoke: {len(results) - len(broken)} of {len(results)} checks OK"
          + (f"; BROKEN: {', '.join(broken)}" if broken else ""), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"checks": results}, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
