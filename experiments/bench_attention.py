"""Attention implementations: time and peak memory of forward+backward vs sequence length.

    nice -n 10 python experiments/bench_attention.py --out /tmp/bench_attention     # JSON + PNG
    python experiments/bench_attention.py --lengths 256,1024 --impls xla,band --repeats 3

For each ``vitjax.models.attention`` implementation available on this platform and each length:
the peak memory XLA plans for one jitted forward+backward (``compiled.memory_analysis()``:
arguments + outputs + temporaries - aliased), and its median wall time over ``--repeats`` runs.
A run is timed only when that memory fits ``--max_run_gb`` (on CPU dense attention at 16k tokens
does not: its memory is still reported). Prints the memory ratio per doubling of length from 2k to
16k (and per token), the Performer approximation error at 64/256/1024 features, and writes
``attention.json`` and a log-log ``attention.png`` (time and memory vs length) under ``--out``.
Also compares the dense formulations on CPU: ``jax.nn.dot_product_attention`` on [B, T, H, D]
against vitjax's ``xla`` ([B*H, T, D] batched matmuls), forward and forward+backward, at ViT-S/16's
shapes (B=32, T=197, H=6, D=64).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vitjax.models.attention import attend, available  # noqa: E402

LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)
# Band: 128 tokens each side; bigbird: 64-token blocks, 3 random; performer: 256 features.
OPTIONS = dict(window=128, global_tokens=1, random_blocks=3, block_size=64, dilation=2, features=256, seed=0)


def _peak(compiled) -> int | None:
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _median_time(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fwd_bwd(impl: str, options=None):
    def loss(q, k, v):
        return jnp.sum(attend(q, k, v, impl=impl, options=options).astype(jnp.float32) ** 2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def bench(impls, lengths, batch, heads, head_dim, dtype, repeats, max_run_bytes) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for t in lengths:
        q, k, v = (jnp.asarray(rng.normal(size=(batch, t, heads, head_dim)), dtype) for _ in range(3))
        for impl in impls:
            fn = fwd_bwd(impl, OPTIONS)
            try:
                compiled = fn.lower(q, k, v).compile()
            except Exception as e:  # noqa: BLE001 -- report and go on (e.g. a kernel that rejects a shape)
                rows.append(dict(impl=impl, length=t, error=f"{type(e).__name__}: {e}"[:200]))
                print(f"{impl:<12}{t:>7}  failed: {rows[-1]['error']}", flush=True)
                continue
            peak = _peak(compiled)
            secs = None
            if peak is not None and peak <= max_run_bytes:
                secs = _median_time(compiled, (q, k, v), repeats)
            rows.append(dict(impl=impl, length=t, peak_bytes=peak, time_s=secs))
            print(f"{impl:<12}{t:>7}  peak {peak / 2**20 if peak else float('nan'):>10.1f} MiB  "
                  f"time {'(not run)' if secs is None else f'{secs * 1e3:.1f} ms'}", flush=True)
    return rows


def doubling_ratios(rows, lo=2048, hi=16384) -> dict:
    out = {}
    for impl in sorted({r["impl"] for r in rows}):
        pts = {r["length"]: r.get("peak_bytes") for r in rows if r["impl"] == impl and r.get("peak_bytes")}
        ls = [n for n in sorted(pts) if lo <= n <= hi]
        if len(ls) >= 2:
            per = [pts[b] / pts[a] for a, b in zip(ls, ls[1:])]
            out[impl] = dict(per_doubling=per, mean=float(np.exp(np.mean(np.log(per)))),
                             per_token_mean=float(np.exp(np.mean(np.log(per)))) / 2)
    return out


def performer_error(length=256, heads=4, head_dim=64, features=(64, 256, 1024), seeds=(0, 1, 2)) -> dict:
    """Mean |performer - exact| / mean |exact| on random inputs (scaled so attention is not uniform),
    averaged over feature draws."""
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.normal(size=(2, length, heads, head_dim)) * s, jnp.float32)
               for s in (0.5, 0.5, 1.0))
    exact = attend(q, k, v, impl="xla")
    out = {}
    for m in features:
        errs = [float(jnp.abs(attend(q, k, v, impl="performer", options=dict(features=m, seed=s)) - exact).mean()
                      / jnp.abs(exact).mean()) for s in seeds]
        out[m] = float(np.mean(errs))
    return out


def dense_formulations(repeats: int) -> dict:
    """jax.nn.dot_product_attention vs vitjax's xla formulation at ViT-S/16 shapes, fwd and fwd+bwd."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(32, 197, 6, 64)), jnp.float32) for _ in range(3))
    fns = {"jax.nn.dot_product_attention": lambda q, k, v: jax.nn.dot_product_attention(q, k, v),
           "vitjax xla": lambda q, k, v: attend(q, k, v, impl="xla")}
    out = {}
    for name, f in fns.items():
        fwd = jax.jit(f)
        both = jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) ** 2), argnums=(0, 1, 2)))
        out[name] = dict(fwd_ms=_median_time(fwd, (q, k, v), repeats) * 1e3,
                         fwd_bwd_ms=_median_time(both, (q, k, v), repeats) * 1e3)
    return out


def plot(rows, path: str) -> None:
    # matplotlib: only this script's figure needs it.
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for impl in sorted({r["impl"] for r in rows}):
        pts = sorted((r["length"], r.get("time_s"), r.get("peak_bytes")) for r in rows if r["impl"] == impl)
        t = [(n, s) for n, s, _ in pts if s]
        m = [(n, b) for n, _, b in pts if b]
        if t:
            axes[0].plot(*zip(*t), marker="o", label=impl)
        if m:
            axes[1].plot([n for n, _ in m], [b / 2**20 for _, b in m], marker="o", label=impl)
    for ax, label in zip(axes, ("forward+backward time (s)", "peak memory (MiB, XLA plan)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"vitjax attention on {jax.devices()[0].device_kind}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impls", default=None, help="comma list (default: every available one)")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head_dim", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max_run_gb", type=float, default=2.0, help="time a run only if its plan fits this")
    p.add_argument("--skip_formulations", action="store_true")
    p.add_argument("--out", default="/tmp/bench_attention")
    args = p.parse_args(argv)
    impls = args.impls.split(",") if args.impls else [i for i in available() if i != "cudnn" or args.dtype != "float32"]
    os.makedirs(args.out, exist_ok=True)
    result = dict(device=jax.devices()[0].device_kind, options=OPTIONS, batch=args.batch, heads=args.heads,
                  head_dim=args.head_dim, dtype=args.dtype)
    if not args.skip_formulations and jax.default_backend() == "cpu":
        result["dense_formulations"] = dense_formulations(args.repeats)
        for name, r in result["dense_formulations"].items():
            print(f"{name:<30} fwd {r['fwd_ms']:.1f} ms   fwd+bwd {r['fwd_bwd_ms']:.1f} ms  (B=32 T=197 H=6 D=64)")
    result["performer_error"] = performer_error()
    for m, e in result["performer_error"].items():
        print(f"performer relative error, {m:>5} features: {e:.4f}")
    rows = bench(impls, [int(x) for x in args.lengths.split(",")], args.batch, args.heads, args.head_dim,
                 jnp.dtype(args.dtype), args.repeats, args.max_run_gb * 2**30)
    result["rows"] = rows
    result["memory_per_doubling_2k_16k"] = doubling_ratios(rows)
    for impl, r in result["memory_per_doubling_2k_16k"].items():
        print(f"{impl:<12} peak memory x{r['mean']:.2f} per doubling 2k->16k "
              f"({', '.join(f'{x:.2f}' for x in r['per_doubling'])}); per token x{r['per_token_mean']:.2f}")
    with open(os.path.join(args.out, "attention.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    plot(rows, os.path.join(args.out, "attention.png"))
    print(f"wrote {args.out}/attention.json and attention.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
