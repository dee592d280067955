"""The newcomer's flow, replayed end to end with the commands a new user types.

    python experiments/newcomer_flow.py --out /tmp/newcomer            # ~2-4 min on 2 CPU cores

1. An image folder of "own photos" (3 classes of generated scenes at assorted sizes and aspect
   ratios, JPEG and PNG, with a truncated JPEG, an empty file and a text file named .jpg among them).
2. ``python -m vitjax.data convert --image-folder ...`` (the bad files are skipped and counted).
3. ``python -m vitjax.train --config configs/vit_ti16_photos.py ...`` (the stock config, shrunk to
   32 px and a short schedule so the replay takes minutes; ``--model tiny`` also shrinks the ViT).
4. ``python -m vitjax.predict --workdir W HELDOUT/ --json ...`` on photos the run never saw.
5. ``python -m vitjax.export --format hf|timm|onnx``.
6. A fresh Python that imports no vitjax loads each export with its ecosystem's own preprocessing:
   HF ``pipeline("image-classification", model=DIR)``, ``timm.create_model("local-dir:DIR",
   pretrained=True)`` + ``create_transform(**resolve_data_config({}, model=net))``, and onnxruntime
   fed by timm's transform; each one's top-1 class names are compared with vitjax's predictions.

Passes (exit 0) when every export agrees with vitjax's top-1 on >= 95% of the held-out photos
(``--min_agreement``); prints one line per format with the agreement and the accuracy against the
true classes. ``tests/test_newcomer_flow.py`` runs it in CI.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("beach", "forest", "sunset")
TINY_MODEL = ["--config.model.variant=None", "--config.model.width=64",
              "--config.model.depth=2", "--config.model.num_heads=2", "--config.model.mlp_dim=128"]
# Each class: sky colour, ground colour (RGB) around which scenes vary.
PALETTE = {"beach": ((120, 180, 235), (225, 205, 150)), "forest": ((150, 190, 160), (40, 110, 45)),
           "sunset": ((245, 140, 60), (70, 40, 60))}


def scene(cls: str, rng: np.random.Generator) -> Image.Image:
    """A "photo" of class ``cls``: sky over ground at a random horizon, noise, a random blob; size
    and aspect ratio vary (40-120 px per side) so the eval crop geometry matters."""
    h, w = (int(v) for v in rng.integers(40, 121, size=2))
    sky, ground = (np.array(c, np.float32) + rng.normal(0, 18, 3) for c in PALETTE[cls])
    horizon = int(h * rng.uniform(0.3, 0.7))
    img = np.empty((h, w, 3), np.float32)
    img[:horizon], img[horizon:] = sky, ground
    cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(4, max(5, min(h, w) // 3))
    yy, xx = np.mgrid[:h, :w]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_photos(folder: str, per_class: int, seed: int, bad_files: bool) -> list[tuple[str, str]]:
    """Writes ``folder/<class>/<i>.jpg|png``; returns [(path, class)] of the good images."""
    rng = np.random.default_rng(seed)
    out = []
    for cls in CLASSES:
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        for i in range(per_class):
            ext = "png" if i % 5 == 0 else "jpg"
            path = os.path.join(folder, cls, f"{i:03d}.{ext}")
            scene(cls, rng).save(path, quality=90) if ext == "jpg" else scene(cls, rng).save(path)
            out.append((path, cls))
    if bad_files:
        good = open(out[0][0], "rb").read()
        with open(os.path.join(folder, CLASSES[0], "truncated.jpg"), "wb") as fh:
            fh.write(good[: len(good) // 3])
        open(os.path.join(folder, CLASSES[1], "empty.jpg"), "wb").close()
        with open(os.path.join(folder, CLASSES[2], "notes.jpg"), "w") as fh:
            fh.write("not an image\n")
    return out


def run(cmd: list[str], log: str) -> str:
    """Runs one user command (its output also goes to ``log``); a failure stops the replay."""
    shown = [a if "\n" not in a else "<script>" for a in cmd]
    print("$", " ".join(shown), flush=True)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(shown)}\n{p.stdout}{p.stderr}\n")
    if p.returncode != 0:
        raise SystemExit(f"newcomer flow: step failed (exit {p.returncode}): {' '.join(shown)}\n"
                         f"{p.stderr[-3000:]}")
    print(f"  ok in {time.time() - t0:.0f} s", flush=True)
    return p.stdout


# Runs in a fresh interpreter with no vitjax import: what a PyTorch user does with the exports.
PYTORCH_SIDE = textwrap.dedent('''
    import json, sys
    import numpy as np
    from PIL import Image
    files, exports = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
    out = {}
    if "hf" in exports:
        from transformers import pipeline
        clf = pipeline("image-classification", model=exports["hf"], device="cpu")
        out["hf"] = [clf(Image.open(f).convert("RGB"), top_k=1)[0]["label"] for f in files]
    if "timm" in exports or "onnx" in exports:
        import timm, timm.data, torch
        net = timm.create_model("local-dir:" + exports["timm"], pretrained=True).eval()
        tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=net))
        names = net.pretrained_cfg["label_names"]
        x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
        if "timm" in exports:
            with torch.no_grad():
                out["timm"] = [names[i] for i in net(x).argmax(-1).tolist()]
        if "onnx" in exports:
            import onnxruntime as ort
            sess = ort.InferenceSession(exports["onnx"], providers=["CPUExecutionProvider"])
            logits = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            out["onnx"] = [names[i] for i in np.argmax(logits, -1).tolist()]
    print(json.dumps(out))
''')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="a folder for the photos, dataset, workdir and exports")
    p.add_argument("--per_class", type=int, default=60, help="training photos per class")
    p.add_argument("--heldout_per_class", type=int, default=20)
    p.add_argument("--steps", type=int, default=60, help="training steps")
    p.add_argument("--formats", default="hf,timm,onnx")
    p.add_argument("--model", choices=("stock", "tiny"), default="stock",
                   help="stock: the config's ViT-Ti/16; tiny: a 2-block, 64-wide ViT (same recipe; CI)")
    p.add_argument("--min_agreement", type=float, default=0.95)
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "commands.log")
    py = sys.executable
    formats = [f for f in args.formats.split(",") if f]

    photos, data, wd = (os.path.join(out, d) for d in ("photos", "data", "workdir"))
    make_photos(photos, args.per_class, seed=0, bad_files=True)
    heldout = make_photos(os.path.join(out, "heldout"), args.heldout_per_class, seed=1, bad_files=False)

    stdout = run([py, "-m", "vitjax.data", "convert", "--image-folder", photos, "--out", data, "--name",
                  "photos", "--max-bad-fraction", "0.05", "--workers", "1", "--quiet", "--overwrite"], log)
    run([py, "-m", "vitjax.train", "--config", "configs/vit_ti16_photos.py", "--workdir", wd,
         "--config.input.data.name=photos", f"--config.input.data.data_dir={data}",
         "--config.model.num_classes=3", "--config.model.image_size=32",
         "--config.input.train_ops.0.size=32", "--config.input.eval_ops.0.size=32",
         "--config.input.batch_size=32", "--config.input.eval_batch_size=32",
         f"--config.train.total_steps={args.steps}", "--config.optim.warmup_steps=5",
         f"--config.train.log_every_steps={max(1, args.steps // 4)}", "--config.train.tensorboard=False",
         *(TINY_MODEL if args.model == "tiny" else [])], log)
    preds_json = os.path.join(out, "predictions.json")
    run([py, "-m", "vitjax.predict", "--workdir", wd, os.path.join(out, "heldout"), "--top_k", "1",
         "--json", preds_json], log)
    preds = {r["file"]: r["top_k"][0]["class"] for r in json.load(open(preds_json))["predictions"]}
    files = [f for f, _ in heldout]
    vitjax_top1 = [preds[f] for f in files]

    exports = {}
    for fmt in formats:
        folder = os.path.join(out, "export", fmt)
        run([py, "-m", "vitjax.export", "--workdir", wd, "--format", fmt, "--out", folder], log)
        exports[fmt] = os.path.join(folder, "model.onnx") if fmt == "onnx" else folder
    if "onnx" in exports and "timm" not in exports:   # the ONNX side takes timm's preprocessing
        run([py, "-m", "vitjax.export", "--workdir", wd, "--format", "timm", "--out",
             os.path.join(out, "export", "timm")], log)
        exports["timm_for_onnx"] = os.path.join(out, "export", "timm")
    files_json, exports_json = os.path.join(out, "heldout.json"), os.path.join(out, "exports.json")
    json.dump(files, open(files_json, "w"))
    json.dump({**exports, **({"timm": exports.pop("timm_for_onnx")} if "timm_for_onnx" in exports else {})},
              open(exports_json, "w"))
    torch_side = run([py, "-c", PYTORCH_SIDE, files_json, exports_json], log)
    theirs = json.loads(torch_side.strip().splitlines()[-1])

    truth = [c for _, c in heldout]
    acc = float(np.mean([a == b for a, b in zip(vitjax_top1, truth)]))
    print(f"vitjax: top-1 accuracy {acc:.3f} on {len(files)} held-out photos "
          f"(convert: {stdout.strip().splitlines()[-1] if stdout.strip() else 'ok'})")
    ok = True
    for fmt in formats:
        got = theirs[fmt]
        agree = float(np.mean([a == b for a, b in zip(got, vitjax_top1)]))
        acc_f = float(np.mean([a == b for a, b in zip(got, truth)]))
        ok &= agree >= args.min_agreement
        print(f"{fmt:>5}: same top-1 as vitjax on {agree:.3f} of held-out photos (accuracy {acc_f:.3f})"
              f"{'' if agree >= args.min_agreement else f'  < {args.min_agreement}: FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
