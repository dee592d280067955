"""Dense-prediction demo: a Swin or PVT backbone + FPN head trained on synthetic shapes, printing mIoU.

    python experiments/seg_demo.py                       # Swin backbone, 300 steps
    python experiments/seg_demo.py --backbone pvt_v2     # PVT v2 backbone
    python experiments/seg_demo.py --steps 30 --eval_batches 2    # quick check

Images are 32x32 RGB with a noisy random background and 1-3 filled shapes of random colour, size
and position, generated on the fly with numpy; the labels are per-pixel classes 0 background,
1 disc, 2 square, 3 triangle (later shapes paint over earlier ones). Shape colour says nothing about
the class, so the model has to use shape. The backbone's 3-level pyramid (16x16, 8x8, 4x4 for the
Swin) feeds ``vitjax.models.seg_head.FPNHead``; training is per-pixel softmax cross-entropy with
AdamW. Evaluation on freshly generated held-out images (a different seed) prints one JSON line with
the mean IoU over the 4 classes, the per-class IoU and the pixel accuracy.

Measured (``python experiments/seg_demo.py``, Swin backbone, 300 steps of 32 images, 256 held-out
images): mIoU 0.641 (background 0.978, disc 0.540, square 0.425, triangle 0.622), pixel accuracy
0.931; 330 s of training on 2 CPU cores shared with other jobs (~0.86 s/step, 69 s of it compiling).
The errors are mostly disc/square confusions of small shapes; longer training was not tried. The
PVT v2 backbone (8x8 finest map at 32px) was only run for 3 steps as a smoke test.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import vitjax
from vitjax.models.seg_head import SegmentationModel, mean_iou

NUM_CLASSES = 4
SIZE = 32


def make_batch(rng: np.random.Generator, batch: int, size: int = SIZE):
    """-> images float32 [B, S, S, 3] in [-1, 1], labels int32 [B, S, S]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = rng.uniform(-0.3, 0.3, (batch, 1, 1, 3)) + rng.normal(0, 0.15, (batch, size, size, 3))
    labels = np.zeros((batch, size, size), np.int32)
    for b in range(batch):
        for _ in range(rng.integers(1, 4)):
            cls = int(rng.integers(1, NUM_CLASSES))
            r = rng.uniform(4, 9)
            cy, cx = rng.uniform(r, size - r, 2)
            if cls == 1:
                m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            elif cls == 2:
                m = (np.abs(yy - cy) <= r * 0.8) & (np.abs(xx - cx) <= r * 0.8)
            else:                                   # upright isosceles triangle
                top, bottom = cy - r, cy + r
                half = (yy - top) / (2 * r) * r
                m = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
            images[b][m] = rng.uniform(-1, 1, 3)
            labels[b][m] = cls
    return np.clip(images, -1, 1).astype(np.float32), labels


def build_backbone(name: str):
    if name == "swin":
        return vitjax.create_model("swin", variant=None, num_classes=0, image_size=SIZE, patch_size=2,
                                   embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4,
                                   drop_path=0.0)
    if name == "pvt_v2":
        # 32px: overlapping stride-4 embedding -> 8x8, 4x4, 2x2 maps; reductions 4/2/1.
        return vitjax.create_model("pvt_v2", variant=None, num_classes=0, image_size=SIZE,
                                   embed_dims=(32, 64, 128), depths=(2, 2, 2), num_heads=(1, 2, 4),
                                   mlp_ratios=(4, 4, 4), sr_ratios=(4, 2, 1))
    raise ValueError(f"unknown backbone {name!r}; choose swin or pvt_v2")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="swin", choices=["swin", "pvt_v2"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval_batches", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = SegmentationModel(build_backbone(args.backbone), NUM_CLASSES, dim=64)
    rng = np.random.default_rng(args.seed)
    x0, _ = make_batch(rng, args.batch)
    params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(args.seed, impl="rbg"), jnp.asarray(x0)))["params"]
    sched = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(30, args.steps // 5 + 1), args.steps,
                                               args.lr * 0.01)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.05))
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, images, labels):
        def loss_fn(p):
            logits = model.apply({"params": p}, images, train=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    predict = jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x), -1))

    t0 = time.time()
    for i in range(args.steps):
        x, y = make_batch(rng, args.batch)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(x), jnp.asarray(y))
        if i % 50 == 0 or i == args.steps - 1:
            print(f"step {i:4d}  loss {float(loss):.4f}  ({time.time() - t0:.0f}s)", flush=True)
    train_s = time.time() - t0

    eval_rng = np.random.default_rng(10_000 + args.seed)
    preds, labels = [], []
    for _ in range(args.eval_batches):
        x, y = make_batch(eval_rng, args.batch)
        preds.append(np.asarray(predict(params, jnp.asarray(x))))
        labels.append(y)
    pred, lab = jnp.asarray(np.concatenate(preds)), jnp.asarray(np.concatenate(labels))
    miou, per_class = mean_iou(pred, lab, NUM_CLASSES)
    print(json.dumps(dict(
        backbone=args.backbone, steps=args.steps, batch=args.batch, train_seconds=round(train_s, 1),
        eval_images=int(lab.shape[0]), mIoU=round(float(miou), 4),
        iou_per_class=dict(zip(["background", "disc", "square", "triangle"],
                               [round(float(v), 4) for v in per_class])),
        pixel_accuracy=round(float(jnp.mean(pred == lab)), 4))), flush=True)


if __name__ == "__main__":
    main()
