"""``python -m vitjax.export --workdir DIR --format hf|timm --out OUT [--step N]``.

Writes ``OUT/model.safetensors`` + ``OUT/config.json`` loadable by
``transformers.ViTForImageClassification.from_pretrained(OUT)`` (``--format hf``) or by timm
(``--format timm``; the exact call is printed at the end).
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a vitjax training workdir")
    p.add_argument("--format", required=True, choices=("hf", "timm"))
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    args = p.parse_args(argv)

    import numpy as np

    import vitjax
    from vitjax.export import vit as vit_export

    config, model, params = vitjax.load(args.workdir, args.step)
    params = __import__("jax").tree.map(np.asarray, params)
    try:
        if args.format == "hf":
            state, cfg = vit_export.to_hf(params, model), vit_export.hf_config(model)
        else:
            state, cfg = vit_export.to_timm(params, model), vit_export.timm_config(model)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vit_export.write_export(args.out, state, cfg)
    n = sum(int(np.prod(v.shape)) for v in state.values())
    print(f"wrote {os.path.join(args.out, 'model.safetensors')} ({len(state)} tensors, {n / 1e6:.2f}M "
          f"values) and config.json")
    if args.format == "hf":
        print(f"load with: transformers.AutoModelForImageClassification.from_pretrained({args.out!r})")
    else:
        print(f"load with: {vit_export.timm_load_snippet(args.out, cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
