"""``python -m vitjax.predict --workdir W IMAGES_OR_FOLDERS...``: top-k classes of image files.

    python -m vitjax.predict --workdir workdirs/photos ~/new_photos cat.jpg      # top 5 per image
    python -m vitjax.predict --workdir W imgs/ --top_k 3 --step 500 --json predictions.json
    python -m vitjax.predict --workdir W imgs/ --features emb.npy [--tokens]     # embeddings too

    preds = vitjax.predict("workdirs/photos", ["cat.jpg", "dog.png"], top_k=3)
    # [[("cat", 0.91), ("dog", 0.06), ("fox", 0.03)], [...]]

Each file goes through the run's **eval** preprocessing (``config.input.eval_ops``, built by the
op builder training uses) and the model runs jitted, in fixed-size batches. The images are what the
run's data source gave its ops: encoded bytes for an RGB model (its ops decode them), grey pixels
for a 1-channel model (the digits). Folders are searched recursively for image files
(JPEG/PNG/WebP/...); a file that cannot be decoded is skipped with a one-line warning naming it.

Class names are the ones the run kept in ``W/class_names.json`` when training started: the training
dataset's ``source.class_names`` (the digits: "0".."9"; a TFDS dataset: ``features["label"].names``;
an image folder converted by ``python -m vitjax.data convert``: its class-folder names). Workdirs
older than that file read the dataset; when it is not readable (moved, deleted) or names no
classes, the classes print as ``class_<i>``, and a warning says so once.

``--features out.npy`` writes the pooled embeddings [N, D] of every decoded file (the objective's
``feature_fn``: the features probes score; a classifier's are ``model.apply(..., output="features")``,
before the head), ``--tokens`` the token embeddings [N, T, D] instead (ViT/DeiT workdirs:
``output="tokens"``), and ``out.npy.files.txt`` the files in row order. Workdirs without a
classifier head (MAE, DINO, CLIP) give embeddings only. DINO workdirs use the EMA teacher.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitjax import config as config_lib
from vitjax.data.bad_input import SkipExample
from vitjax.data.convert.inputs import IMAGE_EXTS
from vitjax.data.image_io import decode
from vitjax.data.ops import apply_ops, build_ops
from vitjax.models.vit import ViT
from vitjax.objectives import create_objective
from vitjax.training.workdir import class_names, load_evaluated

log = logging.getLogger("vitjax.predict")

CLASSIFIER_OBJECTIVES = ("classification", "distillation")


def image_files(paths: Iterable[str] | str) -> list[str]:
    """The files to predict: files as given, folders searched recursively (sorted) for image files.
    A path that does not exist, or nothing to read at all, is a FileNotFoundError."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out = []
    for p in map(str, paths):
        if os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out += [os.path.join(dirpath, f) for f in sorted(filenames)
                        if not f.startswith(".") and f.lower().endswith(IMAGE_EXTS)]
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image file or folder: {p}")
    if not out:
        raise FileNotFoundError(f"no image files ({'/'.join(e[1:] for e in IMAGE_EXTS[:5])}...) in "
                                f"{', '.join(map(str, paths)) or 'the arguments'}")
    return out


class Predictor:
    """A workdir's model, weights and eval preprocessing, loaded once for many ``run`` calls.

    Attributes:
      config, model, params, step: the run's config, model and the checkpoint's weights and step.
      is_classifier: the model has a class head (classification or distillation workdirs).
      class_names: one name per model output (classifiers only).
    """

    def __init__(self, workdir: str, step: int | None = None, batch_size: int = 32):
        # DINO: the EMA teacher; step: the one read (a damaged latest falls back to an older one)
        self.config, self.model, self.params, self.step = load_evaluated(workdir, step, with_step=True)
        self.workdir, self.batch_size = workdir, max(1, int(batch_size))
        self.ops = build_ops(self.config.input.eval_ops)
        self.in_channels = int(getattr(self.model, "in_channels", 3))
        self.is_classifier = (self.config.objective.get("name") in CLASSIFIER_OBJECTIVES
                              and int(getattr(self.model, "num_classes", 0) or 0) > 0)
        self.class_names = (class_names(workdir, self.config, self.model.num_classes) if self.is_classifier
                            else None)
        model = self.model
        self._probs = jax.jit(lambda p, x: jax.nn.softmax(
            model.apply({"params": p}, x, train=False).astype(jnp.float32), axis=-1))
        if self.is_classifier:
            feature_fn = lambda p, x: model.apply({"params": p}, x, output="features")  # noqa: E731
        else:
            feature_fn = create_objective(self.config.objective).feature_fn(model)
        self._features = jax.jit(feature_fn)
        self._tokens = jax.jit(lambda p, x: model.apply({"params": p}, x, output="tokens"))

    def preprocess(self, path: str) -> np.ndarray | None:
        """One file through the eval ops: float32 [H, W, C], or None (and a warning) if unreadable."""
        try:
            with open(path, "rb") as fh:
                image = fh.read()
            if self.in_channels == 1:       # a grey model's source gave grey pixels, not RGB bytes
                image = decode(image, channels=1)
            out = apply_ops({"image": image, "file_name": path}, self.ops, None)["image"]
        except (SkipExample, OSError) as e:
            log.warning("warning: skipped %s: %s", path, getattr(e, "reason", None) or e)
            return None
        return np.asarray(out, np.float32)

    def run(self, files: Sequence[str], *, probs: bool = True, features: bool = False,
            tokens: bool = False) -> dict:
        """Runs the model over ``files`` (paths, in order). Returns ``{"files": the files decoded,
        "skipped": those that were not, "probs": [N, K] softmax (classifiers, when ``probs``),
        "features": [N, D] or with ``tokens`` [N, T, D] (when ``features``)}``."""
        if probs and not self.is_classifier:
            raise ValueError(f"{self.workdir} holds a {type(self.model).__name__} trained with objective "
                             f"{self.config.objective.get('name')!r}, which has no class head; ask for "
                             f"embeddings instead (--features out.npy, or Predictor.run(files, probs=False, "
                             f"features=True))")
        if tokens and not isinstance(self.model, ViT):
            raise ValueError(f"--tokens needs a ViT or DeiT workdir; {self.workdir} holds a "
                             f"{type(self.model).__name__}")
        kept, skipped, outs = [], [], {"probs": [], "features": []}
        batch: list[np.ndarray] = []
        size = max(1, min(self.batch_size, len(files)))      # one batch shape per run: compiled once

        def flush():
            x = np.stack(batch)
            n = len(x)
            if n < size:
                x = np.concatenate([x, np.zeros((size - n,) + x.shape[1:], x.dtype)])
            if probs:
                outs["probs"].append(np.asarray(self._probs(self.params, x))[:n])
            if features:
                fn = self._tokens if tokens else self._features
                outs["features"].append(np.asarray(fn(self.params, x), np.float32)[:n])
            batch.clear()

        for path in files:
            img = self.preprocess(path)
            if img is None:
                skipped.append(path)
                continue
            if batch and img.shape != batch[0].shape:
                raise ValueError(f"the eval ops ({[s['op'] for s in self.config.input.eval_ops]}) give {path} "
                                 f"the shape {img.shape} but {kept[0]} {batch[0].shape}; they must resize "
                                 f"every image to one size")
            kept.append(path)
            batch.append(img)
            if len(batch) == size:
                flush()
        if batch:
            flush()
        result = {"files": kept, "skipped": skipped}
        if probs:
            k = self.model.num_classes
            result["probs"] = np.concatenate(outs["probs"]) if outs["probs"] else np.zeros((0, k), np.float32)
        if features:
            result["features"] = np.concatenate(outs["features"]) if outs["features"] else np.zeros((0,), np.float32)
        return result

    def top_k(self, probs: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Per row of ``probs``: the ``k`` most likely (class name, probability), most likely first."""
        k = max(1, min(int(k), probs.shape[-1]))
        order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        return [[(self.class_names[i], float(row[i])) for i in idx] for row, idx in zip(probs, order)]


def predict(workdir: str, images: Iterable[str] | str, top_k: int = 5, step: int | None = None,
            batch_size: int = 32) -> list[list[tuple[str, float]]]:
    """Top-``top_k`` ``(class_name, probability)`` per image, most likely first: one list per image
    file, in the order ``image_files(images)`` gives (files as given, folders' images sorted); a file
    that cannot be decoded gets ``[]`` and a warning. ``step``: the checkpoint (default: latest).
    For many calls, build one ``Predictor`` (the checkpoint is loaded and the model compiled once)."""
    files = image_files(images)
    pred = Predictor(workdir, step, batch_size)
    out = pred.run(files)
    rows = dict(zip(out["files"], pred.top_k(out["probs"], top_k)))
    return [rows.get(f, []) for f in files]


class _CallableModule(types.ModuleType):
    """``vitjax.predict`` is both this module and, via ``vitjax``'s lazy exports, the function
    ``predict``; once the module is imported, the package attribute is the module, so the module
    itself calls ``predict``: ``vitjax.predict(W, files)`` works either way."""

    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def _format_row(path: str, row: list[tuple[str, float]]) -> str:
    return f"{path}: " + ", ".join(f"{name} ({p:.3f})" for name, p in row)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a vitjax training workdir")
    p.add_argument("images", nargs="+", metavar="IMAGES_OR_FOLDERS", help="image files and/or folders")
    p.add_argument("--top_k", type=int, default=5, help="classes printed per image (default 5)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--batch_size", type=int, default=32, help="images per jitted model call")
    p.add_argument("--json", default=None, metavar="OUT.json", help="also write the predictions as JSON")
    p.add_argument("--features", default=None, metavar="OUT.npy",
                   help="write pooled embeddings [N, D] (and OUT.npy.files.txt, the files in row order)")
    p.add_argument("--tokens", action="store_true", help="with --features: token embeddings [N, T, D]")
    args = p.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)       # warnings as one plain line each
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    if args.tokens and not args.features:
        print("error: --tokens says what --features writes; add --features OUT.npy", file=sys.stderr)
        return 2
    try:
        files = image_files(args.images)
        pred = Predictor(args.workdir, args.step, args.batch_size)
        want_probs = pred.is_classifier or not args.features
        out = pred.run(files, probs=want_probs, features=bool(args.features), tokens=args.tokens)
    except (config_lib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not out["files"]:
        print(f"error: none of the {len(files)} file(s) could be decoded", file=sys.stderr)
        return 1
    rows = pred.top_k(out["probs"], args.top_k) if want_probs else None
    if rows is not None:
        for path, row in zip(out["files"], rows):
            print(_format_row(path, row))
    if args.features:
        feats = out["features"]
        np.save(args.features, feats)
        with open(args.features + ".files.txt", "w") as fh:
            fh.write("".join(f + "\n" for f in out["files"]))
        print(f"wrote {'token' if args.tokens else 'pooled'} embeddings {list(feats.shape)} to {args.features} "
              f"(files in row order: {args.features}.files.txt)", file=sys.stderr)
    if args.json:
        doc = {"workdir": args.workdir, "step": pred.step, "skipped": out["skipped"],
               "predictions": [{"file": f, "top_k": [{"class": n, "prob": round(pr, 6)} for n, pr in row]}
                               for f, row in zip(out["files"], rows or [[] for _ in out["files"]])]}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    print(f"vitjax.predict: {len(out['files'])} image(s), {len(out['skipped'])} skipped, {args.workdir} "
          f"step {pred.step}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
