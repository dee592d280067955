"""iGPT image completion (Chen et al. 2020, Fig. 1): the top half of each held-out digit is given, the
bottom half is sampled, and a ViT classifier says whether the completion is still the same digit.

    python experiments/igpt_completion.py --workdir /tmp/igpt_digits --classifier_workdir /tmp/vit_digits

Prompts are the start token and the first 32 pixel tokens (rows 0-3) of the run's eval split;
``vitjax.generation.generate`` samples the other 32 with the KV cache (``--temperature``, ``--top_k``,
``--top_p``; temperature 0 is greedy). ``--samples_per_digit N`` draws N completions of each digit and
scores all N x 360: the same fraction with less sampling noise (with one completion per digit it moves
by about 0.02 from seed to seed). Each completion is picked from ``--best_of K`` plain samples (default
16) by ``--select``: ``consensus`` (default) keeps the one nearest the other K-1 in grey levels
(minimum-Bayes-risk decoding, ``vitjax.generation.pick_best``), ``likelihood`` the one the iGPT itself
finds likeliest; the classifier plays no part in either choice. The plain samples are scored too, so
one run prints both; ``--best_of 1`` scores plain samples alone.
A ``vit_digits`` run classifies the completed images (its own eval ops); without
``--classifier_workdir`` one is trained first with configs/vit_digits.py into
WORKDIR/completion_classifier (~2 minutes on 2 CPU cores). Prints the fraction of completions
classified as the true digit, beside the classifier's accuracy on the real digits and on the top
halves alone (bottom rows black), and writes a PNG grid: real | given top half | completion.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def classify(workdir: str, images: np.ndarray, batch: int = 120) -> np.ndarray:
    """Predicted labels [N] of uint8 images [N, H, W, C] by the classifier run in ``workdir``."""
    import jax
    import jax.numpy as jnp

    from vitjax.data.ops import apply_ops, build_ops
    from vitjax.training.workdir import load_workdir

    config, model, params = load_workdir(workdir)
    ops = build_ops(list(config.input.eval_ops))
    x = np.stack([apply_ops({"image": im}, ops, None)["image"] for im in images])
    fn = jax.jit(lambda p, b: jnp.argmax(model.apply({"params": p}, b, train=False), -1))
    return np.concatenate([np.asarray(fn(params, x[i:i + batch])) for i in range(0, len(x), batch)])


def grid_png(rows: list[np.ndarray], path: str, scale: int = 6, gap: int = 2) -> None:
    """Writes len(rows) rows of uint8 [N, H, W, 1] images as one grey PNG."""
    from PIL import Image

    n, h, w = rows[0].shape[:3]
    canvas = np.full((len(rows) * (h * scale + gap), n * (w * scale + gap)), 128, np.uint8)
    for r, imgs in enumerate(rows):
        for i, im in enumerate(imgs):
            y, x = r * (h * scale + gap), i * (w * scale + gap)
            canvas[y:y + h * scale, x:x + w * scale] = np.kron(im[..., 0], np.ones((scale, scale), np.uint8))
    Image.fromarray(canvas).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True, help="an iGPT run (configs/igpt_digits.py)")
    ap.add_argument("--classifier_workdir", default=None, help="a vit_digits run (default: train one)")
    ap.add_argument("--out", default=None, help="PNG path (default WORKDIR/completions.png)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top_k", type=int, default=0)
    ap.add_argument("--top_p", type=float, default=1.0)
    ap.add_argument("--samples_per_digit", type=int, default=1, help="completions drawn per held-out digit")
    ap.add_argument("--best_of", type=int, default=16,
                    help="sample N bottoms per completion and keep one of them (--select); 1: plain samples")
    ap.add_argument("--select", default="consensus", choices=("likelihood", "consensus"),
                    help="with --best_of: the likeliest under the iGPT, or the one nearest the others (MBR, "
                         "squared grey-level distance)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_shown", type=int, default=24, help="digits in the PNG grid")
    args = ap.parse_args(argv)
    if args.samples_per_digit < 1 or args.best_of < 1:
        ap.error(f"--samples_per_digit={args.samples_per_digit} and --best_of={args.best_of} must be >= 1")

    import jax

    from vitjax.data.pixel_tokens import tokens_to_image
    from vitjax.data.sources import get_eval_source
    from vitjax.generation import generate, pick_best
    from vitjax.training.workdir import load_workdir

    try:
        config, model, params = load_workdir(args.workdir)
    except (ValueError, FileNotFoundError) as e:    # not a workdir, a damaged or missing step
        print(f"error: {e}", file=sys.stderr)
        return 2
    palette = np.asarray(config.data.palette, np.uint8)
    h, w, _ = config.data.image_shape
    source = get_eval_source(config.input.data, config.input.get("eval_data"))
    images = np.stack([source[i]["image"] for i in range(len(source))])
    labels = np.asarray([source[i]["label"] for i in range(len(source))])
    from vitjax.data.ops import apply_ops, build_ops
    ops = build_ops(list(config.input.eval_ops))
    tokens = np.stack([apply_ops(dict(source[i]), ops, None)["tokens"] for i in range(len(source))])
    half = (h // 2) * w
    n, k = args.samples_per_digit, args.best_of
    # Digit i's completions are rows i*n..i*n+n-1; each is picked from k plain samples (rows of `out`).
    prompts = np.repeat(tokens[:, :1 + half], n * k, axis=0)
    out = generate(model, params, prompts, max_new_tokens=h * w - half, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, rng=jax.random.key(args.seed))
    samples = tokens_to_image(np.concatenate([prompts[:, 1:], np.asarray(out.tokens)], 1), palette, (h, w))
    picked = pick_best(out, k, args.select, palette) if k > 1 else out
    completed = tokens_to_image(np.concatenate([prompts[::k, 1:], np.asarray(picked.tokens)], 1), palette, (h, w))
    top_only = images.copy()
    top_only[:, h // 2:] = 0

    clf = args.classifier_workdir
    if clf is None:
        from vitjax.config import load_config_file
        from vitjax.training.trainer import Trainer
        clf = os.path.join(args.workdir, "completion_classifier")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        Trainer(load_config_file(os.path.join(root, "configs", "vit_digits.py")), clf).train()
    real_acc = float(np.mean(classify(clf, images) == labels))
    top_acc = float(np.mean(classify(clf, top_only) == labels))
    done_acc = float(np.mean(classify(clf, completed) == np.repeat(labels, n)))
    sample_acc = float(np.mean(classify(clf, samples) == np.repeat(labels, n * k))) if k > 1 else done_acc

    path = args.out or os.path.join(args.workdir, "completions.png")
    shown = args.num_shown
    grid_png([images[:shown], top_only[:shown], completed[::n][:shown]], path)
    print(f"{len(labels)} held-out digits, top {h // 2} rows given, bottom {h - h // 2} rows sampled "
          f"{n * k} time(s) each (temperature {args.temperature}, top_k {args.top_k}, top_p {args.top_p}, "
          f"seed {args.seed})")
    if k > 1:
        print(f"classified as the true digit: plain samples {sample_acc:.3f} (all {n * k} per digit)")
    how = f"best of {k} by {args.select}" if k > 1 else "plain samples"
    print(f"classified as the true digit: completions ({how}, {n} per digit) {done_acc:.3f} | real digits "
          f"{real_acc:.3f} | top halves alone {top_acc:.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
