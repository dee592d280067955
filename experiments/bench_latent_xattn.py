"""Latent cross-attention: Pallas kernel vs the XLA reference (vs cuDNN on GPU), memory and time.

    python experiments/bench_latent_xattn.py            # B=8, H=8, M=512, N=50,176 (224x224 pixels), D=64
    python experiments/bench_latent_xattn.py --small    # B=2, H=2, M=64, N=1,000, D=32: seconds on CPU

What it measures, per backend:
  * every backend: XLA's compiled memory analysis (``jax.jit(f).lower(...).compile().memory_analysis()``)
    of the reference and of the kernel path, forward and forward+backward, with no execution, plus
    the analytic HBM footprint of each (the bytes that must exist at the same time).
  * CPU: the kernel path is lowered with ``interpret=True``: the Pallas interpreter turns the grid
    into XLA loops over dynamic slices of the padded operands, so its temp bytes show that no
    [B, H, M, N] buffer exists, but they are not what Mosaic/Triton would allocate (those keep the
    blocks in VMEM/SRAM). With ``--small`` both paths also run and are timed (interpret-mode time is
    not a kernel speed; it is printed only to show the script runs end to end).
  * GPU: medians over ``--iters`` of the kernel, the XLA reference and
    ``jax.nn.dot_product_attention(..., implementation="cudnn")`` in bf16, forward and forward+backward,
    and the ratios to the kernel.
The last line printed is one JSON object with every number.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.kernels.latent_cross_attention import (
    BlockSizes, latent_cross_attention, latent_cross_attention_reference)

FULL = dict(b=8, h=8, m=512, n=224 * 224, d=64)
SMALL = dict(b=2, h=2, m=64, n=1000, d=32)


def analytic_bytes(b, h, m, n, d, itemsize, *, backward: bool) -> dict[str, int]:
    """Live HBM bytes at the peak, counting arrays (not XLA's exact buffer reuse).

    Reference: q, k, v, out, plus the fp32 scores and probabilities [B, H, M, N] (backward: the
    probabilities are saved as residuals and dP/dS [B, H, M, N] are formed). Kernel: q, k, v, out and
    the fp32 logsumexp [B, H, M] (backward: dO, delta, dq, dk, dv); scores live only in on-chip tiles.
    """
    qo = b * h * m * d * itemsize
    kv = 2 * b * h * n * d * itemsize
    scores = b * h * m * n * 4
    lse = b * h * m * 4
    ref = 2 * qo + kv + 2 * scores
    ker = 2 * qo + kv + lse
    if backward:
        ref += qo + qo + kv + 2 * scores          # dO, dq, dk+dv, dP and dS
        ker += qo + lse + qo + kv                 # dO, delta, dq, dk+dv
    return {"reference": ref, "kernel": ker, "scores_fp32": scores}


def memory(fn, *args) -> dict[str, int]:
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    ma = compiled.memory_analysis()
    out = {k: int(getattr(ma, k)) for k in ("temp_size_in_bytes", "argument_size_in_bytes",
                                            "output_size_in_bytes") if ma is not None and hasattr(ma, k)}
    out["compile_s"] = round(time.perf_counter() - t0, 2)
    return out


def median_time(fn, *args, iters: int) -> float:
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="small shapes: runs in seconds on CPU")
    p.add_argument("--dtype", default=None, help="bfloat16 (default on GPU/TPU) or float32 (default on CPU)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--block_q", type=int, default=None)
    p.add_argument("--block_kv", type=int, default=None)
    args = p.parse_args(argv)

    backend = jax.default_backend()
    shape = SMALL if args.small else FULL
    b, h, m, n, d = (shape[k] for k in ("b", "h", "m", "n", "d"))
    dtype = jnp.dtype(args.dtype or ("float32" if backend == "cpu" else "bfloat16"))
    interpret = backend not in ("gpu", "tpu")
    bs = BlockSizes(block_q=args.block_q, block_kv=args.block_kv)
    # Abstract inputs for the memory analysis: nothing is allocated for the full shapes.
    aq = jax.ShapeDtypeStruct((b, h, m, d), dtype)
    akv = jax.ShapeDtypeStruct((b, h, n, d), dtype)

    def kernel(q, k, v):
        return latent_cross_attention(q, k, v, implementation="pallas", interpret=interpret, block_sizes=bs)

    def reference(q, k, v):
        return latent_cross_attention_reference(q, k, v)

    def fwd_bwd(f):
        return jax.grad(lambda q, k, v: f(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2))

    res = {"backend": backend, "device": str(jax.devices()[0].device_kind), "shape": shape,
           "dtype": str(dtype), "interpret": interpret, "block_sizes": bs.resolve(m, n).__dict__}
    mem = {}
    for name, f in (("reference", reference), ("kernel", kernel)):
        mem[f"{name}_fwd"] = memory(f, aq, akv, akv)
        mem[f"{name}_fwd_bwd"] = memory(fwd_bwd(f), aq, akv, akv)
    res["memory_analysis"] = mem
    res["analytic_bytes"] = {"fwd": analytic_bytes(b, h, m, n, d, dtype.itemsize, backward=False),
                             "fwd_bwd": analytic_bytes(b, h, m, n, d, dtype.itemsize, backward=True)}
    for key in ("fwd", "fwd_bwd"):
        r, k = mem[f"reference_{key}"]["temp_size_in_bytes"], mem[f"kernel_{key}"]["temp_size_in_bytes"]
        res[f"temp_ratio_reference_over_kernel_{key}"] = round(r / max(k, 1), 2)
        print(f"[{key:7s}] XLA temp bytes: reference {r / 2**20:10.1f} MiB | kernel "
              f"{'(interpret) ' if interpret else ''}{k / 2**20:10.1f} MiB | analytic HBM reference "
              f"{res['analytic_bytes'][key]['reference'] / 2**20:10.1f} MiB, kernel "
              f"{res['analytic_bytes'][key]['kernel'] / 2**20:8.1f} MiB")

    run = args.small or backend in ("gpu", "tpu")
    if run:
        rng = np.random.default_rng(0)
        q = jnp.asarray(rng.normal(size=aq.shape), dtype)
        k = jnp.asarray(rng.normal(size=akv.shape), dtype)
        v = jnp.asarray(rng.normal(size=akv.shape), dtype)
        fns = {"kernel": kernel, "reference": reference}
        if backend == "gpu":
            def cudnn(q, k, v):       # cuDNN wants [B, T, H, D]
                t = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
                return t(jax.nn.dot_product_attention(t(q), t(k), t(v), implementation="cudnn"))
            fns["cudnn"] = cudnn
        times = {}
        iters = args.iters if backend != "cpu" else 3
        for name, f in fns.items():
            times[f"{name}_fwd_s"] = median_time(f, q, k, v, iters=iters)
            times[f"{name}_fwd_bwd_s"] = median_time(fwd_bwd(f), q, k, v, iters=iters)
        for name in fns:
            if name != "kernel":
                for key in ("fwd", "fwd_bwd"):
                    ratio = times[f"{name}_{key}_s"] / times[f"kernel_{key}_s"]
                    times[f"{name}_over_kernel_{key}"] = round(ratio, 3)
        err = float(jnp.abs(kernel(q, k, v).astype(jnp.float32) - reference(q, k, v).astype(jnp.float32)).max())
        times["max_abs_err_kernel_vs_reference"] = err
        res["timing"] = times
        for key, val in times.items():
            print(f"  {key}: {val:.6g}")
        if interpret:
            print("  (CPU: the kernel ran in the Pallas interpreter; its time is not a kernel speed)")
    print(json.dumps(res, default=str))
    return res


if __name__ == "__main__":
    main()
