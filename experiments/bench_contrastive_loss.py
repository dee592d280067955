"""Per-device peak temporary memory of the contrastive losses (loss + gradients), sharded vs unsharded.

    python experiments/bench_contrastive_loss.py [--batches 1024 8192] [--dim 512] [--devices 8]
                                                 [--json out.json]

Nothing is run: each variant is compiled (``jit(...).lower(...).compile()``) for ``--devices``
simulated CPU devices and XLA's ``memory_analysis().temp_size_in_bytes`` is read: the per-device
buffer space the program needs besides its inputs and outputs. Variants, for the global batch B and
n devices (local batch b = B / n), embeddings [B, dim] float32, value and gradient w.r.t. both
embeddings and the logit scale (and bias):

* ``unsharded``   -- the reference loss on one device: [B, B] logits.
* ``gspmd``       -- the same reference code jitted with batch-sharded inputs on the n-device mesh,
                     left to XLA's sharding propagation (whatever it chooses).
* ``sharded``     -- ``vitjax.losses.contrastive.sharded_*``: softmax with two [b, B] blocks per
                     device, sigmoid with a [b, b] block per ring hop.

The claim under test (issue 6): the sharded softmax needs a small constant times b x B = B^2 / n
bytes of logits per device (n times less than the B x B of one device, at every B), and the sharded
sigmoid a constant times b x b plus the O(B dim) ring carry. Prints a table, each variant in units of
its logit block, and a JSON record.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--json", default=None, help="also write the JSON record here")
    args = p.parse_args(argv)

    import jax
    jax.config.update("jax_num_cpu_devices", args.devices)
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    from vitjax.losses import contrastive as C

    n = args.devices
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))
    one = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:1])

    def temp_bytes(fn, shapes, m, spec_rows):
        shard = [NamedSharding(m, spec_rows), NamedSharding(m, spec_rows)] + \
            [NamedSharding(m, P())] * (len(shapes) - 2)
        args_ = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=sh) for s, sh in zip(shapes, shard)]
        grad = jax.value_and_grad(fn, argnums=tuple(range(len(shapes))))
        with jax.set_mesh(m):
            compiled = jax.jit(grad).lower(*args_).compile()
        return int(compiled.memory_analysis().temp_size_in_bytes)

    rows = []
    for B in args.batches:
        emb = (B, args.dim)
        for kind in ("softmax", "sigmoid"):
            if kind == "softmax":
                ref = lambda a, b, s: C.softmax_loss(a, b, s)  # noqa: E731
                shd = lambda a, b, s: C.sharded_softmax_loss(a, b, s, mesh=mesh, axes=("data",))  # noqa: E731
                shapes = [emb, emb, ()]
            else:
                ref = lambda a, b, s, c: C.sigmoid_loss(a, b, s, c)  # noqa: E731
                shd = lambda a, b, s, c: C.sharded_sigmoid_loss(a, b, s, c, mesh=mesh, axes=("data",))  # noqa: E731
                shapes = [emb, emb, (), ()]
            rec = {"loss": kind, "global_batch": B, "local_batch": B // n, "devices": n, "dim": args.dim,
                   "unsharded": temp_bytes(ref, shapes, one, P()),
                   "gspmd": temp_bytes(ref, shapes, mesh, P("data", None)),
                   "sharded": temp_bytes(shd, shapes, mesh, P("data", None))}
            rec["logits_BxB_bytes"] = B * B * 4
            rec["logits_bxB_bytes"] = (B // n) * B * 4
            rec["logits_bxb_bytes"] = (B // n) ** 2 * 4
            rows.append(rec)
            print(f"  compiled {kind} B={B}", file=sys.stderr)

    def mib(x):
        return f"{x / 2**20:10.2f}"

    print(f"\nper-device peak temporary memory of loss + grads, MiB (XLA memory_analysis), "
          f"{n} simulated CPU devices, dim {args.dim}, float32")
    print(f"{'loss':8} {'B':>6} {'b=B/n':>6} | {'unsharded':>10} {'gspmd':>10} {'sharded':>10} | "
          f"{'B*B*4':>10} {'b*B*4':>10} {'b*b*4':>10}")
    for r in rows:
        print(f"{r['loss']:8} {r['global_batch']:6d} {r['local_batch']:6d} | {mib(r['unsharded'])} "
              f"{mib(r['gspmd'])} {mib(r['sharded'])} | {mib(r['logits_BxB_bytes'])} "
              f"{mib(r['logits_bxB_bytes'])} {mib(r['logits_bxb_bytes'])}")
    print("\nin units of one logit block (memory / (rows x cols x 4 bytes)) and the saving:")
    for r in rows:
        block = r["logits_bxB_bytes"] if r["loss"] == "softmax" else r["logits_bxb_bytes"]
        r["sharded_per_block"] = r["sharded"] / block
        r["unsharded_per_BxB"] = r["unsharded"] / r["logits_BxB_bytes"]
        r["saving"] = r["unsharded"] / max(r["sharded"], 1)
        what = "b*B" if r["loss"] == "softmax" else "b*b"
        print(f"  {r['loss']:8} B={r['global_batch']:5d}: unsharded = {r['unsharded_per_BxB']:.2f} x B*B*4, "
              f"sharded = {r['sharded_per_block']:.2f} x {what}*4, unsharded / sharded = {r['saving']:.1f}")
    record = {"rows": rows, "backend": jax.default_backend(), "jax": jax.__version__}
    print(json.dumps(record))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
