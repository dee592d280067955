"""PNG of a detector's predicted boxes on held-out images (DETR or YOLOS workdir), ground truth beside.

    python experiments/detr_boxes.py --workdir workdirs/detr_shapes --out workdirs/detr_shapes/boxes.png

Images are the first ``--num_images`` of the workdir's eval split (eval ops). Predictions follow the
``detection`` evaluator's post-processing (best real class per query, softmax score); those scoring
at least ``--threshold`` are drawn with class name and score. Ground-truth boxes are drawn dashed.
Prints the number of predicted and true boxes per image.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", default=None, help="PNG path (default WORKDIR/boxes.png)")
    ap.add_argument("--num_images", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--pixel_mean", type=float, default=0.5)
    ap.add_argument("--pixel_std", type=float, default=0.5)
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches as mpatches
    import matplotlib.pyplot as plt

    from vitjax.data import eval_batches
    from vitjax.data.sources import get_eval_source
    from vitjax.evals.detection import postprocess
    from vitjax.training.workdir import class_names, load_workdir

    try:
        config, model, params = load_workdir(args.workdir, args.step)
    except (ValueError, FileNotFoundError) as e:    # not a workdir, a damaged or missing step
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not hasattr(model, "num_queries") and not hasattr(model, "num_detection_tokens"):
        print(f"error: {args.workdir} holds a {type(model).__name__}, not a DETR/YOLOS detector", file=sys.stderr)
        return 2
    source = get_eval_source(config.input.data, config.input.get("eval_data"))
    names = class_names(args.workdir, config, model.num_classes)     # the run's class_names.json
    batch = next(iter(eval_batches(source, config.input.eval_ops, args.num_images, num_threads=0)))
    images = batch["image"][:args.num_images].astype(np.float32)
    out = model.apply({"params": params}, images, train=False)
    scores, classes, boxes = (np.asarray(a) for a in postprocess(out["logits"], out["boxes"]))
    s = images.shape[1]

    def rect(b, colour, dashed):
        cx, cy, w, h = b * s
        return mpatches.Rectangle((cx - w / 2 - 0.5, cy - h / 2 - 0.5), w, h, fill=False, edgecolor=colour,
                                  linewidth=1.2, linestyle="--" if dashed else "-")

    cols = min(4, len(images))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        img = np.clip(images[i] * args.pixel_std + args.pixel_mean, 0, 1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", interpolation="nearest")
        for b, c in zip(batch["boxes"][i][batch["box_mask"][i]], batch["labels"][i][batch["box_mask"][i]]):
            ax.add_patch(rect(b, "white", True))
        keep = scores[i] >= args.threshold
        for b, c, sc in zip(boxes[i][keep], classes[i][keep], scores[i][keep]):
            ax.add_patch(rect(b, COLOURS[c % len(COLOURS)], False))
            cx, cy, w, h = b * s
            ax.text(cx - w / 2, cy - h / 2 - 1, f"{names[c]} {sc:.2f}", color=COLOURS[c % len(COLOURS)], fontsize=6)
        print(f"image {i}: {int(keep.sum())} predicted (score >= {args.threshold}), "
              f"{int(batch['box_mask'][i].sum())} true")
    fig.suptitle(f"{type(model).__name__} predictions (solid) and ground truth (dashed, white)")
    fig.tight_layout()
    path = args.out or os.path.join(args.workdir, "boxes.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
