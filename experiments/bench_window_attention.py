"""Window attention: Pallas kernel vs XLA reference vs jax.nn.dot_product_attention, at Swin stage-1 shapes.

    python experiments/bench_window_attention.py            # Swin-T and Swin-B stage 1, batch 64
    python experiments/bench_window_attention.py --small    # batch 2: a quick CPU run

Shapes: 56x56 tokens in 7x7 windows -> 64 windows per image, T = 49; Swin-T stage 1 has 3 heads of
32 (embed 96), Swin-B 4 heads of 32 (embed 128). The shifted-window mask is on (SW-MSA blocks).

* On CPU (no accelerator to time on) it compiles forward and forward+backward of each path and
  prints XLA's compiled memory analysis (``*_temp_bytes``). Caveat: the kernel path runs in the
  Pallas *interpreter* there, which keeps whole-operand copies of every kernel input and output, so
  its CPU temp bytes measure the interpreter, not the kernel. The structural figure that carries
  over to TPU/GPU is ``*_largest_intermediate_bytes``: the largest array the program creates
  outside Pallas kernels (walking the jaxpr, including custom-VJP and pjit sub-jaxprs); for the
  reference and dot_product_attention that is an [N, H, T, T] score/bias tensor, for the kernel a
  q-sized array. Interpret-mode *timings* say nothing about a TPU/GPU and are not printed.
* On GPU/TPU it times forward and forward+backward (bf16 inputs) of the kernel, the XLA reference
  and ``jax.nn.dot_product_attention`` with the bias + mask passed as ``bias=`` (XLA or cuDNN picks
  the implementation), and prints medians and ratios. On GPU the kernel runs in its padded GPU form
  (``pad_tokens=True``: T = 49 padded to 64, Triton lowering, one 2-D matmul chain per window); the
  row's ``kernel_pad_tokens`` says which form was timed. (As of this writing the GPU branch has not
  been run: the padded kernel was only checked in interpret mode and lowered to Triton IR on a CPU host.)

Each result is one JSON line on stdout.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.kernels.window_attention import (relative_position_index, window_attention,
                                             window_attention_reference, window_shift_mask)

SHAPES = {  # name: (heads, head_dim, embed)   Liu et al. 2021, Table 7 (stage 1 of T and B)
    "swin_t_stage1": (3, 32, 96),
    "swin_b_stage1": (4, 32, 128),
}


def dpa_window_attention(q, k, v, table, mask, *, window_size):
    """The same function through jax.nn.dot_product_attention: bias [N, H, T, T] built by XLA."""
    n, h, t, d = q.shape
    idx = relative_position_index(window_size)
    bias = table[idx.reshape(-1)].reshape(t, t, h).transpose(2, 0, 1)[None]
    nw = mask.shape[0]
    bias = (bias.reshape(1, 1, h, t, t) + mask[None, :, None]).astype(q.dtype)
    bias = jnp.broadcast_to(bias, (n // nw, nw, h, t, t)).reshape(n, h, t, t)
    # dot_product_attention takes [B, T, H, D].
    out = jax.nn.dot_product_attention(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3),
                                       v.transpose(0, 2, 1, 3), bias=bias)
    return out.transpose(0, 2, 1, 3)


def largest_intermediate_bytes(fn, *args) -> int:
    """Bytes of the largest array created outside Pallas kernels in ``fn``'s jaxpr."""
    best = 0

    def walk(jaxpr):
        nonlocal best
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                aval = var.aval
                if hasattr(aval, "shape"):
                    best = max(best, int(np.prod(aval.shape)) * jnp.dtype(aval.dtype).itemsize)
            if eqn.primitive.name == "pallas_call":
                continue
            for param in eqn.params.values():
                for sub in (param if isinstance(param, (tuple, list)) else (param,)):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return best


def make_inputs(batch, heads, head_dim, dtype, side=8, window=7):
    n = batch * side * side
    t = window * window
    ks = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(ks[i], (n, heads, t, head_dim), dtype) for i in range(3))
    table = 0.02 * jax.random.normal(ks[3], ((2 * window - 1) ** 2, heads), jnp.float32)
    shift = window // 2
    mask = jnp.asarray(window_shift_mask(side * window, side * window, window, shift))
    return q, k, v, table, mask


def fwd_and_train(fn):
    fwd = jax.jit(fn)

    def loss(q, k, v, table, mask):
        return jnp.sum(fn(q, k, v, table, mask).astype(jnp.float32))
    train = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))
    return fwd, train


def median_ms(f, args, iters):
    out = f(*args)
    jax.block_until_ready(out)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="batch 2 (quick CPU check)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    batch = args.batch or (2 if args.small else 64)
    backend = jax.default_backend()
    on_cpu = backend == "cpu"
    window = 7
    for name, (heads, head_dim, embed) in SHAPES.items():
        dtype = jnp.float32 if on_cpu else jnp.bfloat16
        inputs = make_inputs(batch, heads, head_dim, dtype)
        pad = backend == "gpu"   # Triton needs power-of-two tiles: the padded GPU form of the kernel
        paths = {
            "kernel": lambda q, k, v, t, m: window_attention(q, k, v, t, m, window_size=window,
                                                             implementation="pallas", interpret=on_cpu,
                                                             pad_tokens=pad),
            "reference": lambda q, k, v, t, m: window_attention_reference(q, k, v, t, m, window_size=window),
            "dot_product_attention": lambda q, k, v, t, m: dpa_window_attention(q, k, v, t, m,
                                                                                window_size=window),
        }
        row = dict(shape=name, backend=backend, batch=batch, tokens="56x56", window=window, heads=heads,
                   head_dim=head_dim, embed=embed, dtype=jnp.dtype(dtype).name,
                   num_windows=int(inputs[0].shape[0]), kernel_pad_tokens=pad)
        for path, fn in paths.items():
            fwd, train = fwd_and_train(fn)
            row[f"{path}_fwd_bwd_largest_intermediate_bytes"] = largest_intermediate_bytes(train, *inputs)
            if on_cpu:
                for tag, f in (("fwd", fwd), ("fwd_bwd", train)):
                    mem = f.lower(*inputs).compile().memory_analysis()
                    row[f"{path}_{tag}_temp_bytes"] = int(mem.temp_size_in_bytes)
            else:
                row[f"{path}_fwd_ms"] = median_ms(fwd, inputs, args.iters)
                row[f"{path}_fwd_bwd_ms"] = median_ms(train, inputs, args.iters)
        if on_cpu:
            scores = int(np.prod((row["num_windows"], heads, 49, 49))) * 4
            row["one_fp32_score_tensor_bytes"] = scores
        else:
            for tag in ("fwd", "fwd_bwd"):
                k = row[f"kernel_{tag}_ms"]
                row[f"speedup_vs_reference_{tag}"] = round(row[f"reference_{tag}_ms"] / k, 3)
                row[f"speedup_vs_dpa_{tag}"] = round(row[f"dot_product_attention_{tag}_ms"] / k, 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
