"""Perceiver AR against the dense decoder of the same width and depth, on the same two-digit sequences:
eval bits per pixel and attention FLOPs side by side, in one run.

    python experiments/perceiver_ar_vs_dense.py --perceiver_ar_workdir /tmp/perceiver_ar_digits \\
        --dense_workdir /tmp/lm_pairs_digits [--samples PNG]

bits_per_pixel: each run's ``eval/bits_per_pixel`` recomputed from its final checkpoint over the
whole eval split (the next-token objective's ``eval_metrics``: mean over the 360 x 128 pixel tokens).

FLOPs are those of scoring one sequence, i.e. predicting all 128 pixel tokens (the objective's
forward: one causal pass for the dense decoder; for Perceiver AR one pass per 16-token latent
window, prefixes 16, 32, ..., 128). "forward" is XLA's cost analysis of that whole jitted function.
"attention" isolates the attention: the function's jaxpr is walked for the dot_generals with batch
dimensions -- the score (QK^T) and mixing (softmax x V) products; projections, MLPs and the head
contract activations with parameters and have none -- and each is compiled alone and costed by
XLA's cost analysis; their sum is printed. With ``--samples`` the Perceiver AR run also completes
the second digit of held-out pairs given the first (cached decoding) and writes a PNG grid.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _subjaxprs(eqn):
    from jax.extend import core as jcore

    for value in eqn.params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jcore.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jcore.Jaxpr):
                yield v


def attention_dots(jaxpr) -> list:
    """(lhs aval, rhs aval, dimension_numbers) of every dot_general with batch dims, recursively."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (_, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
            if lhs_batch:
                found.append((eqn.invars[0].aval, eqn.invars[1].aval, eqn.params["dimension_numbers"]))
        for sub in _subjaxprs(eqn):
            found += attention_dots(sub)
    return found


def flops_of(fn, *args) -> float:
    import jax

    from vitjax.training.flops import compiled_flops
    return float(compiled_flops(jax.jit(fn).lower(*args).compile()) or 0.0)


def attention_flops(fn, *args) -> float:
    import jax

    total = 0.0
    for lhs, rhs, dn in attention_dots(jax.make_jaxpr(fn)(*args).jaxpr):
        a = jax.ShapeDtypeStruct(lhs.shape, lhs.dtype)
        b = jax.ShapeDtypeStruct(rhs.shape, rhs.dtype)
        total += flops_of(lambda x, y, dn=dn: jax.lax.dot_general(x, y, dn), a, b)
    return total


def evaluate(workdir: str):
    """(config, model, params, objective, eval bits_per_pixel, tokens of the eval split)."""
    import jax

    from vitjax.data import eval_batches
    from vitjax.data.sources import get_eval_source
    from vitjax.objectives import create_objective
    from vitjax.training.workdir import load_workdir

    config, model, params = load_workdir(workdir)
    obj = create_objective(config.objective)
    source = get_eval_source(config.input.data, config.input.get("eval_data"))
    fn = jax.jit(lambda p, b: obj.eval_metrics(model, p, b))
    total = count = 0.0
    tokens = []
    for batch in eval_batches(source, list(config.input.eval_ops), int(config.input.eval_batch_size)):
        m = fn(params, {"tokens": batch["tokens"], "mask": batch["mask"]})
        total += float(m[obj.metric][0])
        count += float(m[obj.metric][1])
        tokens.append(batch["tokens"][batch["mask"]])
    return config, model, params, obj, total / count, np.concatenate(tokens)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--perceiver_ar_workdir", required=True)
    ap.add_argument("--dense_workdir", required=True)
    ap.add_argument("--samples", default=None, help="PNG of second digits sampled by Perceiver AR")
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args(argv)

    import jax

    rows = {}
    for name, wd in (("perceiver_ar", args.perceiver_ar_workdir), ("dense", args.dense_workdir)):
        config, model, params, obj, bpp, tokens = evaluate(wd)
        one = tokens[:1]
        loss_fn = lambda p, t, model=model, obj=obj: obj.token_losses(model, p, t)[0].sum()  # noqa: E731
        rows[name] = dict(bpp=bpp, forward=flops_of(loss_fn, params, one),
                          attention=attention_flops(loss_fn, params, one),
                          width=getattr(model, "width", None), depth=getattr(model, "depth", None),
                          params=sum(x.size for x in jax.tree.leaves(params)), model=model, p=params,
                          tokens=tokens, config=config)
    par, dense = rows["perceiver_ar"], rows["dense"]
    print(f"{'':14s}{'eval bits/pixel':>16s}{'attention FLOPs':>17s}{'forward FLOPs':>15s}{'params':>9s}")
    for name, r in rows.items():
        print(f"{name:14s}{r['bpp']:16.4f}{r['attention']:17.3e}{r['forward']:15.3e}{r['params']:9d}")
    print(f"perceiver_ar / dense: bits/pixel {par['bpp'] / dense['bpp']:.3f} "
          f"({100 * (par['bpp'] / dense['bpp'] - 1):+.1f}%), "
          f"attention FLOPs {par['attention'] / dense['attention']:.3f}, "
          f"forward FLOPs {par['forward'] / dense['forward']:.3f}  (per sequence of 128 pixel tokens; "
          f"Perceiver AR: {par['model'].num_latents} latents, depth {par['depth']} + 1 cross-attend; "
          f"dense depth {dense['depth']}, width {dense['width']} both)")

    if args.samples:
        from experiments.igpt_completion import grid_png
        from vitjax.data.pixel_tokens import tokens_to_image
        from vitjax.generation import generate
        cfg, tokens = par["config"], par["tokens"][:24]
        h, w, _ = cfg.data.image_shape
        half = (h // 2) * w
        out = generate(par["model"], par["p"], tokens[:, :1 + half], max_new_tokens=h * w - half,
                       temperature=args.temperature, rng=jax.random.key(0))
        pal = np.asarray(cfg.data.palette, np.uint8)
        real = tokens_to_image(tokens[:, 1:], pal, (h, w))
        sampled = tokens_to_image(np.concatenate([tokens[:, 1:1 + half], np.asarray(out.tokens)], 1), pal, (h, w))
        grid_png([real, sampled], args.samples)
        print(f"wrote {args.samples} (top: real pairs; bottom: second digit sampled given the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
