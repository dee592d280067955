"""``python -m vitjax.export --workdir DIR --format hf|timm|open_clip|npz|onnx --out OUT [--step N] [--encoder_only|--student]``.

Writes ``OUT/model.safetensors`` + ``OUT/config.json`` for the workdir's model:

| model | --format hf | --format timm | other |
|---|---|---|---|
| ViT / DeiT | ViTForImageClassification / DeiTForImageClassificationWithTeacher | VisionTransformer | |
| MAE | ViTMAEForPreTraining (whole model); with --encoder_only the encoder as a label-less ViTForImageClassification (Identity classifier: its logits are the normalised class token) | the encoder as a VisionTransformer (num_classes=0) | |
| DINO | the backbone as a ViTModel (its own key names: no ``vit.`` prefix, no pooler) | the backbone as a VisionTransformer (num_classes=0; timm's ``.dino`` layout) | |
| Perceiver IO | PerceiverForImageClassificationFourier | | |
| Swin (v1/v2) | SwinForImageClassification (v1) | SwinTransformer / SwinTransformerV2 | |
| PVT v2 | | PyramidVisionTransformerV2 | |
| CLIP | CLIPModel | | --format open_clip: open_clip state dict + model config |

``--format npz`` (ViT with a class token, SigLIP-style MAP towers) writes ``OUT/model.npz`` in the
big_vision / vision_transformer layout that timm's ``_load_weights`` reads (``vitjax.interop.big_vision``).
``--format onnx`` (models whose timm twin is the whole model: ViT, DeiT, Swin, PVT) writes
``OUT/model.onnx`` through that twin and checks it with onnxruntime against vitjax (``vitjax.interop.onnx``;
needs the ``onnx`` extra).

Class names travel: the run's ``class_names.json`` becomes timm's ``label_names`` and HF's
``id2label``/``label2id``. The run's eval preprocessing travels too (``vitjax.interop.preprocessing``):
timm's ``pretrained_cfg`` (input size, interpolation, crop_pct, crop mode, mean/std) and, for HF image
models, ``preprocessor_config.json``, so ``pipeline("image-classification", model=OUT)`` and timm's
``create_transform(**resolve_data_config({}, model=net))`` prepare images as the run's eval did.

DINO exports the EMA teacher's backbone (the paper evaluates and releases the teacher); ``--student``
exports the student's. The projection head is not exported (neither timm nor HF has one). For
every model the input normalisation written to timm's config (``pretrained_cfg`` mean/std) is the
run's: its eval ops' ``normalize`` (0.5/0.5 when it has none).

The exact loading call is printed at the end. Each (model, format) pair is a converter registered by
its family module (``vitjax.interop.registry``); this module only reads the workdir and writes.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

from vitjax.interop.onnx import export_onnx, onnx_load_snippet
from vitjax.interop.registry import export_folder
from vitjax.interop.state_dict import load_snippet
from vitjax.models.dino import DINO
from vitjax.training.workdir import class_names, load_evaluated


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a vitjax training workdir")
    p.add_argument("--format", required=True, choices=("hf", "timm", "open_clip", "npz", "onnx"))
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--encoder_only", action="store_true", help="MAE: export only the encoder (a ViT backbone)")
    p.add_argument("--student", action="store_true",
                   help="DINO: export the student's backbone (default: the EMA teacher's, as the paper)")
    args = p.parse_args(argv)

    try:
        config, model, params = load_evaluated(args.workdir, args.step, args.student)
    except (ValueError, FileNotFoundError) as e:      # not a workdir, --student on a non-DINO, a bad step
        print(f"error: {e}", file=sys.stderr)
        return 2
    is_dino = isinstance(model, DINO)
    params = jax.tree.map(np.asarray, params)
    try:
        n_classes = int(getattr(model, "num_classes", 0) or 0)
        names = class_names(args.workdir, config, n_classes) if n_classes > 0 else None
        if args.format == "onnx":       # not a converter: the timm export, traced and checked
            result = export_onnx(model, params, args.out, config=config, label_names=names)
            print(f"wrote {result.path} (onnxruntime vs vitjax on 3 random images: max abs difference "
                  f"{result.max_abs_diff:.2g}) and config.json")
            print(f"load with: {onnx_load_snippet(args.out, result.config)}")
            return 0
        export, state, cfg, written = export_folder(args.out, model, params, args.format, config=config,
                                                    encoder_only=args.encoder_only, label_names=names)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(int(np.prod(v.shape)) for v in state.values())
    what = f" of the DINO {'student' if args.student else 'teacher'}'s backbone" if is_dino else ""
    print(f"wrote {os.path.join(args.out, written[0])} ({len(state)} tensors, {n / 1e6:.2f}M "
          f"values{what}) and {', '.join(written[1:])}")
    print(f"load with: {load_snippet(export.kind, args.out, cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
