"""``python -m vitjax.generate --workdir W [--prompt TEXT] [--max_new_tokens N --temperature T --top_k K
--top_p P --best_of N --select likelihood|consensus --seed S --step N]``: samples from a trained
decoder (any model with the ``vitjax.generation`` protocol: the ``lm`` family, Perceiver AR).

Text models: the prompt is tokenized with the run's tokenizer (``config.data.tokenizer`` /
``tokenizer_path``, else the ``tokenize`` op of its input pipeline, or ``--tokenizer``), with the
tokenizer's start token in front; generation stops at its end token. The continuation is printed.

Image-token models (``config.data.tokens = "pixels"``, with ``config.data.palette`` [K, C] and
``config.data.image_shape`` [H, W, C]; start token K): ``--num_samples`` images are sampled from the
start token alone, or, with ``--prompt_rows R``, the top R rows of the first held-out images
(``config.input.eval_data``) are the prompt and the rest is sampled; the PNG grid ``--out`` shows
the samples (with ``--prompt_rows``: the originals above, the completions below).

    python -m vitjax.generate --workdir /tmp/igpt_digits --num_samples 16 --prompt_rows 4 --out completions.png
"""
from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
from PIL import Image

from vitjax.data.pixel_tokens import image_to_tokens, tokens_to_image
from vitjax.data.sources import get_eval_source
from vitjax.data.text import get_tokenizer
from vitjax.generation import SELECTS, check_vocab, generate
from vitjax.training.workdir import load_evaluated


def run_tokenizer(config, override: str | None = None):
    """The tokenizer a text run was trained with (``override``: a tokenizer name or tokenizer.json)."""
    if override:
        return get_tokenizer(override)
    data = config.get("data") or {}
    if data.get("tokenizer"):
        return get_tokenizer(data["tokenizer"], data.get("tokenizer_path"))
    for key in ("train_ops", "eval_ops"):
        for op in config.input.get(key) or []:
            if op.get("op") == "tokenize":
                return get_tokenizer(op.get("tokenizer", "bytes"), op.get("path"))
    raise ValueError("the run's config names no tokenizer (config.data.tokenizer, or a 'tokenize' input op); "
                     "pass --tokenizer bytes|clip|path/to/tokenizer.json")


def image_grid(rows: list[np.ndarray], scale: int) -> np.ndarray:
    """Rows of images [N, H, W, C] uint8 -> one uint8 grid [rows * (H+1) * scale, N * (W+1) * scale, C]
    (a 1-pixel gap between images, nearest-neighbour upscaled ``scale`` times)."""
    n, h, w, c = rows[0].shape
    grid = np.full((len(rows) * (h + 1) - 1, n * (w + 1) - 1, c), 128, np.uint8)
    for r, imgs in enumerate(rows):
        for i, img in enumerate(imgs):
            grid[r * (h + 1):r * (h + 1) + h, i * (w + 1):i * (w + 1) + w] = img
    return grid.repeat(scale, 0).repeat(scale, 1)


def write_png(path: str, grid: np.ndarray) -> None:
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)


def _images(args, config, model, params, sampling) -> int:
    data = config.data
    palette = np.asarray(data.palette)
    h, w = int(data.image_shape[0]), int(data.image_shape[1])
    start = int(data.get("start_token", len(palette)))
    if not 0 <= args.prompt_rows < h:
        raise ValueError(f"--prompt_rows={args.prompt_rows} must be in 0..{h - 1} (images have {h} rows)")
    n = args.num_samples
    prompts = np.full((n, 1 + args.prompt_rows * w), start, np.int32)
    originals = None
    if args.prompt_rows:
        source = get_eval_source(config.input.data, config.input.get("eval_data") or {})
        if len(source) < n:
            raise ValueError(f"--num_samples={n} but the held-out split has {len(source)} images")
        originals = np.stack([np.asarray(source[i]["image"]) for i in range(n)])
        tokens = np.stack([image_to_tokens(img, palette) for img in originals])
        prompts[:, 1:] = tokens[:, :args.prompt_rows * w]
        originals = tokens_to_image(tokens, palette, (h, w))          # as the model sees them (quantised)
    new = h * w - args.prompt_rows * w
    out = generate(model, params, prompts, max_new_tokens=new, token_values=palette, **sampling)
    seq = np.concatenate([prompts[:, 1:], np.asarray(out.tokens)], axis=1)
    samples = tokens_to_image(seq, palette, (h, w))
    rows = [samples] if originals is None else [originals, samples]
    write_png(args.out, image_grid(rows, max(1, 64 // max(h, w))))
    what = f"completions of the bottom {h - args.prompt_rows} rows" if args.prompt_rows else "samples"
    print(f"wrote {args.out}: {n} {what} ({h}x{w}, {new} tokens each)")
    return 0


def _text(args, config, model, params, sampling) -> int:
    tok = run_tokenizer(config, args.tokenizer)
    check_vocab(tok.vocab_size, model.vocab_size)
    ids = ([tok.sot_id] if tok.sot_id is not None else []) + tok.encode(args.prompt)
    if not ids:
        raise ValueError("the prompt is empty and the tokenizer adds no start token: give --prompt some text")
    stop = (tok.eot_id,) if tok.eot_id is not None else ()
    out = generate(model, params, np.asarray([ids], np.int32), max_new_tokens=args.max_new_tokens,
                   stop_tokens=stop, **sampling)
    new = [int(t) for t in np.asarray(out.tokens[0, :int(out.lengths[0])]) if t not in stop]
    decode = getattr(tok, "decode", None)
    print(args.prompt + decode(new) if decode else f"{args.prompt!r} -> token ids {new} "
          f"(the {type(tok).__name__} cannot turn ids back into text)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a vitjax training workdir of a decoder model")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--prompt", default="", help="text models: the text to continue")
    p.add_argument("--tokenizer", default=None, help="text models: override the run's tokenizer")
    p.add_argument("--max_new_tokens", type=int, default=64, help="text models: tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top_k", type=int, default=0, help="0 = off")
    p.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--best_of", type=int, default=1,
                   help="sample N continuations per prompt, keep one (--select)")
    p.add_argument("--select", default="likelihood", choices=SELECTS,
                   help="with --best_of: the likeliest per token, or the one nearest the others (MBR)")
    p.add_argument("--num_samples", type=int, default=16, help="image models: images to sample")
    p.add_argument("--prompt_rows", type=int, default=0,
                   help="image models: give the top R rows of held-out images as prompts")
    p.add_argument("--out", default="samples.png", help="image models: the PNG grid to write")
    args = p.parse_args(argv)

    try:
        config, model, params = load_evaluated(args.workdir, args.step)
        sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                        rng=jax.random.key(args.seed), best_of=args.best_of,
                        select=args.select)
        if not all(hasattr(model, m) for m in ("init_cache", "prefill", "decode_step")):
            raise ValueError(f"{args.workdir} holds a {type(model).__name__}, which cannot generate; "
                             f"python -m vitjax.generate needs a decoder (the lm family, Perceiver AR)")
        if (config.get("data") or {}).get("tokens") == "pixels":
            return _images(args, config, model, params, sampling)
        return _text(args, config, model, params, sampling)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
