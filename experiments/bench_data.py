"""Decode + augment throughput per CPU core, for the eval and train pipelines and the converter.

    python experiments/bench_data.py [--images 256] [--seconds 4]

Inputs stand in for ImageNet: 500x375 JPEGs at quality 90 cut from real photos (scikit-image's
sample images, rescaled, randomly cropped and flipped, then re-encoded; scikit-learn's two sample
photos when scikit-image is missing). Each figure runs the ops in one thread of one process and
reports images per second of wall-clock time and per second of this process's CPU time; on a shared
machine the second is the fairer per-core figure, so the load average is printed too.
Targets (issue 3): eval >= 250 img/s/core, train >= 120 img/s/core.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import tempfile
import time

import numpy as np
from PIL import Image, features

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EVAL_OPS = [dict(op="decode_center_crop", size=224, crop_fraction=0.875),
            dict(op="normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))]
EVAL_OPS_UNFUSED = [dict(op="decode"), dict(op="resize_small", size=256), dict(op="center_crop", size=224),
                    dict(op="normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))]
TRAIN_OPS = [dict(op="decode_random_resized_crop", size=224), dict(op="flip_lr"),
             dict(op="randaugment", num_ops=2, magnitude=9),
             dict(op="normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))]


def photos() -> tuple[list[np.ndarray], str]:
    try:
        import skimage.data as sd
        names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "retina", "cat"]
        return [getattr(sd, n)() for n in names], "scikit-image: " + ", ".join(names)
    except ImportError:
        from sklearn.datasets import load_sample_images
        return list(load_sample_images().images), "scikit-learn: china, flower"


def imagenet_like_jpegs(n: int, seed: int = 0) -> tuple[list[bytes], str]:
    """``n`` 500x375 quality-90 JPEGs, each a random rescaled crop of a real photo."""
    base, origin = photos()
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        im = Image.fromarray(base[k % len(base)]).convert("RGB")
        s = max(500 / im.width, 375 / im.height) * rng.uniform(1.0, 1.8)
        im = im.resize((int(im.width * s) + 1, int(im.height * s) + 1), Image.BICUBIC)
        x, y = rng.integers(0, im.width - 500 + 1), rng.integers(0, im.height - 375 + 1)
        im = im.crop((x, y, x + 500, y + 375))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < 0.3:                      # some portrait-orientation photos too
            im = im.transpose(Image.ROTATE_90)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out, origin


def rate(fn, items, seconds: float) -> tuple[float, float, int]:
    """(images per wall second, images per CPU second of this process, images done)."""
    fn(items[0])                                    # warm up (imports, caches)
    n, w0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - w0 < seconds:
        for it in items:
            fn(it)
            n += 1
            if n % 32 == 0 and time.perf_counter() - w0 >= seconds:
                break
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return n / wall, n / max(cpu, 1e-9), n


def ops_fn(specs, seed=0):
    from vitjax.data.ops import apply_ops, build_ops
    built = build_ops(specs)
    rng = np.random.default_rng(seed)
    return lambda data: apply_ops({"image": data, "label": 0}, built, rng)


def line(name, r, target=None):
    wall, cpu, n = r
    t = f"   target {target}: {'met' if cpu >= target else 'MISSED'}" if target else ""
    print(f"  {name:<46} {wall:7.1f} img/s wall  {cpu:7.1f} img/s per CPU-second  ({n} images){t}")
    return cpu


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--seconds", type=float, default=4.0, help="per figure")
    p.add_argument("--convert-images", type=int, default=512)
    args = p.parse_args(argv)

    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python "
          f"{platform.python_version()}, Pillow {Image.__version__} (libjpeg-turbo "
          f"{features.version('jpg') if features.check('libjpeg_turbo') else 'no'})")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jpegs, origin = imagenet_like_jpegs(args.images)
    print(f"inputs: {len(jpegs)} JPEGs 500x375 (or 375x500) q90, mean {np.mean([len(j) for j in jpegs]) / 1024:.1f} "
          f"KiB, from {origin}")

    print("\nper-example ops, 1 thread (decode + augment):")
    dec = line("decode only (full size, RGB)", rate(ops_fn([dict(op="decode")]), jpegs, args.seconds))
    ev = line("eval: decode_center_crop 224 + normalize", rate(ops_fn(EVAL_OPS), jpegs, args.seconds), 250)
    line("eval unfused: decode, resize_small 256, crop 224", rate(ops_fn(EVAL_OPS_UNFUSED), jpegs, args.seconds))
    tr = line("train: decode_rrc 224, flip, randaug(2,9), norm", rate(ops_fn(TRAIN_OPS), jpegs, args.seconds), 120)
    line("train without randaugment", rate(ops_fn([TRAIN_OPS[0], TRAIN_OPS[1], TRAIN_OPS[3]]), jpegs, args.seconds))
    from vitjax.data.augment import dino_multi_crop
    line("DINO multi-crop 2x224 + 6x96, full view augs", rate(ops_fn([dino_multi_crop(6)]), jpegs, args.seconds))
    big, _ = imagenet_like_jpegs(16, seed=1)
    big = [_upscale(b, 4) for b in big]
    line("2000x1500 JPEGs: decode_random_resized_crop 224", rate(ops_fn(TRAIN_OPS[:1]), big, args.seconds))
    line("2000x1500 JPEGs: full decode, then the same crop",
         rate(ops_fn([dict(op="decode"), dict(op="random_resized_crop", size=224)]), big, args.seconds))
    print(f"  CPU time per image: full decode {1e3 / dec:.2f} ms, eval {1e3 / ev:.2f} ms, train "
          f"{1e3 / tr:.2f} ms; a full-size decode alone would be {ev / dec:.0%} of eval and "
          f"{tr / dec:.0%} of train")

    print("\nbatch op, per image (batch 128 of 224x224x3 float32):")
    from vitjax.data.batch_ops import build_batch_ops
    (mix,) = build_batch_ops([dict(op="mixup_cutmix", num_classes=1000)])
    batch = {"image": np.random.default_rng(0).normal(size=(128, 224, 224, 3)).astype(np.float32),
             "label": np.arange(128) % 1000}
    r = rate(lambda b: mix(b, np.random.default_rng(1)), [batch], args.seconds / 2)
    print(f"  mixup_cutmix: {r[0] * 128:8.0f} img/s wall")

    print("\ngrain train pipeline (train_iterator, in-memory source, local batch 64):")
    from vitjax.data import train_iterator
    src = [{"image": j, "label": np.int32(i % 1000)} for i, j in enumerate(jpegs)]
    for threads in (1, 2):
        it = train_iterator(src, TRAIN_OPS, 64, seed=0, num_threads=threads, prefetch=2)
        next(it)
        n, w0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - w0 < args.seconds:
            n += len(next(it)["label"])
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        print(f"  num_threads={threads}: {n / wall:7.1f} img/s wall, {n / cpu:7.1f} img/s per CPU-second")
        del it

    print("\nconverter (python -m vitjax.data convert --image-folder), workers=1:")
    from vitjax.data.convert import convert_image_folder
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "jpg")
        for i in range(args.convert_images):
            d = os.path.join(root, f"class{i % 10}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"{i}.jpg"), "wb") as fh:
                fh.write(jpegs[i % len(jpegs)])
        pngs = os.path.join(tmp, "png")
        for i in range(args.convert_images // 4):
            d = os.path.join(pngs, f"class{i % 10}")
            os.makedirs(d, exist_ok=True)
            Image.open(io.BytesIO(jpegs[i % len(jpegs)])).save(os.path.join(d, f"{i}.png"), compress_level=1)
        convert_image_folder(pngs, os.path.join(tmp, "warm"), "warm_up", workers=1, progress=False)
        for label, folder in (("RGB JPEGs (checked, stored as is)", root),
                              ("PNGs (decoded, re-encoded as JPEG q95)", pngs)):
            c0 = time.process_time()
            s = convert_image_folder(folder, os.path.join(tmp, "out"), "bench_" + os.path.basename(folder),
                                     workers=1, progress=False, holdout=0.1)
            cpu = time.process_time() - c0
            print(f"  {label:<46} {s['images'] / s['seconds']:7.1f} img/s wall  "
                  f"{s['images'] / cpu:7.1f} img/s per CPU-second  ({s['images']} images)")
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _upscale(data: bytes, f: int) -> bytes:
    im = Image.open(io.BytesIO(data))
    buf = io.BytesIO()
    im.resize((im.width * f, im.height * f), Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


if __name__ == "__main__":
    main()
