"""PNG of the last block's class-token attention, one panel per head (Caron et al. 2021, Fig. 1 and 3).

    python experiments/dino_attention.py --workdir workdirs/dino_digits --out workdirs/dino_digits/attn.png
    python experiments/dino_attention.py --workdir workdirs/dino_digits --out attn_student.png --student

One row per image: the input, then for each head of the last block the class token's attention over
the patches (``vitjax.evals.attention.cls_attention_maps``), upsampled to the image size by repeating
each patch's value (nearest, as the official ``visualize_attention.py``) and min-max normalised to
[0, 1] per map (viridis). Images come from the workdir's eval split with its eval ops; the input is
shown with the eval ops' ``normalize`` undone. DINO workdirs show the EMA teacher (the network the
paper visualises) unless ``--student``; ViT workdirs with a class token and MAE workdirs (their
encoder) work too. Small images are enlarged (``--panel_size``) so the panels stay legible.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GAP = 2          # white pixels between panels


def normalisation(config, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per channel of the eval ops' ``normalize`` op (identity without one)."""
    for op in config.input.get("eval_ops") or []:
        if op.get("op") == "normalize":
            mean = np.broadcast_to(np.asarray(op.get("mean", 0.5), np.float32).reshape(-1), (channels,))
            std = np.broadcast_to(np.asarray(op.get("std", 0.5), np.float32).reshape(-1), (channels,))
            return mean, std
    return np.zeros(channels, np.float32), np.ones(channels, np.float32)


def render(images: np.ndarray, maps: np.ndarray, patch_size: int, mean, std, scale: int) -> np.ndarray:
    """images [B, H, W, C] (normalised), maps [B, heads, gh, gw] -> uint8 RGB grid
    [B rows, 1 + heads columns] of (H*scale, W*scale) panels separated by GAP white pixels."""
    from matplotlib import colormaps
    cmap = colormaps["viridis"]
    b, h, w, c = images.shape
    heads = maps.shape[1]
    ph, pw = h * scale, w * scale
    grid = np.full((b * ph + (b - 1) * GAP, (1 + heads) * pw + heads * GAP, 3), 255, np.uint8)

    def put(i, j, rgb):                                       # rgb [H, W, 3] floats in [0, 1]
        big = np.repeat(np.repeat(rgb, scale, 0), scale, 1)
        y, x = i * (ph + GAP), j * (pw + GAP)
        grid[y:y + ph, x:x + pw] = np.round(np.clip(big, 0, 1) * 255).astype(np.uint8)

    for i in range(b):
        img = images[i] * std + mean
        put(i, 0, np.repeat(img, 3, -1) if c == 1 else img[..., :3])
        for k in range(heads):
            m = np.repeat(np.repeat(maps[i, k], patch_size, 0), patch_size, 1)[:h, :w]
            m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
            put(i, 1 + k, cmap(m)[..., :3])
    return grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", default=None, help="PNG path (default WORKDIR/attention.png)")
    ap.add_argument("--num_images", type=int, default=4)
    ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    ap.add_argument("--student", action="store_true", help="DINO: the student (default: the EMA teacher)")
    ap.add_argument("--panel_size", type=int, default=128,
                    help="enlarge panels by an integer factor to about this many pixels (smaller images)")
    args = ap.parse_args(argv)

    from PIL import Image

    from vitjax.training.workdir import load_evaluated
    from vitjax.data import eval_batches
    from vitjax.data.sources import get_eval_source
    from vitjax.evals.attention import cls_attention_maps
    from vitjax.models.dino import DINO
    from vitjax.models.mae import MAE

    try:
        config, model, params = load_evaluated(args.workdir, args.step, args.student)
    except (ValueError, FileNotFoundError) as e:      # not a workdir, --student on a non-DINO, a bad step
        print(f"error: {e}", file=sys.stderr)
        return 2
    is_dino = isinstance(model, DINO)
    if isinstance(model, MAE):
        from vitjax.interop import mae as mx
        model, params = mx.encoder_model(model), mx.encoder_params(params)
    source = get_eval_source(config.input.data, config.input.get("eval_data"))
    batch = next(iter(eval_batches(source, config.input.eval_ops, args.num_images, num_threads=0)))
    images = np.asarray(batch["image"][:args.num_images], np.float32)
    try:
        maps = np.asarray(cls_attention_maps(model, params, images))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    mean, std = normalisation(config, images.shape[-1])
    scale = max(1, round(args.panel_size / images.shape[1]))
    grid = render(images, maps, model.patch_size, mean, std, scale)
    out = args.out or os.path.join(args.workdir, "attention.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    Image.fromarray(grid).save(out)
    what = f"DINO {'student' if args.student else 'teacher'}" if is_dino else type(model).__name__
    print(f"wrote {out}: shape {grid.shape} ({len(images)} images x (input + {maps.shape[1]} heads), "
          f"{what}, last block's class-token attention on a {maps.shape[2]}x{maps.shape[3]} grid)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
