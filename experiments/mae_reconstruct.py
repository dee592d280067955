"""PNG grid of MAE reconstructions from a checkpoint: original | masked | reconstruction | reconstruction
with the visible patches pasted back (the figure of He et al. 2021, Fig. 2).

    python experiments/mae_reconstruct.py --workdir workdirs/mae_digits --out workdirs/mae_digits/recon.png

Images come from the workdir's eval split (eval ops); the masking is drawn from ``--seed``. With the
normalised-pixel target, each predicted patch is mapped back to pixels with the original patch's
mean and standard deviation (as the paper's visualisations do), then the input normalisation is
undone (``--pixel_mean/--pixel_std``, default the digits config's 0.5/0.5).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def reconstruct(model, params, images, noise):
    """-> (masked input, reconstruction, reconstruction with visible patches pasted), each [B,H,W,C]."""
    import jax.numpy as jnp

    from vitjax.models.mae import patchify, unpatchify
    out = model.apply({"params": params}, jnp.asarray(images), noise=jnp.asarray(noise))
    p, c = model.patch_size, model.in_channels
    pred = np.asarray(out["pred"], np.float32)
    mask = np.asarray(out["mask"])[..., None]                                # 1 = removed
    patches = np.asarray(patchify(jnp.asarray(images), p))
    if model.norm_pix_loss:
        mean = patches.mean(-1, keepdims=True)
        std = np.sqrt(patches.var(-1, keepdims=True, ddof=1) + 1e-6)
        pred = pred * std + mean
    masked = unpatchify(jnp.asarray(patches * (1 - mask)), p, c)
    recon = unpatchify(jnp.asarray(pred), p, c)
    pasted = unpatchify(jnp.asarray(patches * (1 - mask) + pred * mask), p, c)
    return np.asarray(masked), np.asarray(recon), np.asarray(pasted), mask[..., 0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", default=None, help="PNG path (default WORKDIR/reconstructions.png)")
    ap.add_argument("--num_images", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--pixel_mean", type=float, default=0.5)
    ap.add_argument("--pixel_std", type=float, default=0.5)
    args = ap.parse_args(argv)

    import jax
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitjax.training.workdir import load_workdir
    from vitjax.data import eval_batches
    from vitjax.data.sources import get_eval_source
    from vitjax.models.mae import MAE

    try:
        config, model, params = load_workdir(args.workdir, args.step)
    except (ValueError, FileNotFoundError) as e:    # not a workdir, a damaged or missing step
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not isinstance(model, MAE):
        print(f"error: {args.workdir} holds a {type(model).__name__}, not an MAE", file=sys.stderr)
        return 2
    source = get_eval_source(config.input.data, config.input.get("eval_data"))
    batch = next(iter(eval_batches(source, config.input.eval_ops, args.num_images, num_threads=0)))
    images = batch["image"][:args.num_images].astype(np.float32)
    noise = np.asarray(jax.random.uniform(jax.random.key(args.seed), (len(images), model.num_patches)))
    masked, recon, pasted, mask = reconstruct(model, params, images, noise)

    def show(x):
        x = np.clip(x * args.pixel_std + args.pixel_mean, 0, 1)
        return x[..., 0] if x.shape[-1] == 1 else x

    cols = ["original", f"masked ({model.mask_ratio:.0%})", "reconstruction", "reconstruction + visible"]
    fig, axes = plt.subplots(len(images), 4, figsize=(8, 2 * len(images)), squeeze=False)
    for i in range(len(images)):
        for j, img in enumerate((images[i], masked[i], recon[i], pasted[i])):
            ax = axes[i, j]
            ax.imshow(show(img), cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    fig.tight_layout()
    out = args.out or os.path.join(args.workdir, "reconstructions.png")
    fig.savefig(out, dpi=100)
    err = float(np.mean(((pasted - images) ** 2)[np.repeat(np.repeat(
        mask.reshape(len(images), *(2 * [int(round(model.num_patches ** 0.5))])), model.patch_size, 1),
        model.patch_size, 2) > 0]))
    print(f"wrote {out}: {len(images)} images; pixel MSE on the masked patches {err:.4f} "
          f"(inputs normalised, variance {float(images.var()):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
