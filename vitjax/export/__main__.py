"""``python -m vitjax.export --workdir DIR --format hf|timm|open_clip --out OUT [--step N] [--encoder_only|--student]``.

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

DINO exports the EMA teacher's backbone (the paper evaluates and releases the teacher); ``--student``
exports the student's. The projection head is not exported (neither timm nor HF has one). For
every model the input normalisation written to timm's config (``pretrained_cfg`` mean/std) is the
run's: its eval ops' ``normalize`` (0.5/0.5 when it has none).

The exact loading call is printed at the end.
"""
from __future__ import annotations

import argparse
import os
import sys


def _normalisation(config) -> dict:
    """mean/std of the run's ``normalize`` eval op (vitjax's default 0.5/0.5 without one)."""
    ops = (config.input.get("eval_ops") or []) if config is not None else []
    for op in ops:
        if op.get("op") == "normalize":
            return dict(mean=op.get("mean", 0.5), std=op.get("std", 0.5))
    return dict(mean=0.5, std=0.5)


def dino_backbone(model, params):
    """(ViT, its params) of a DINO model's backbone: ``params["backbone"]`` is exactly that ViT's tree.
    ``dynamic_img_size`` is dropped: it only lets vitjax resample positions for other input sizes and
    changes neither the parameters nor the exported shapes (the table is for ``image_size``)."""
    from vitjax.models.vit import ViT
    vit = ViT(**{k: v for k, v in model.backbone_config().items() if k != "dynamic_img_size"})
    return vit, (params["backbone"] if params is not None else None)


def _dino_hf(params, model) -> dict:
    """The backbone as HF ``ViTModel`` names (``embeddings.*``, ``encoder.layer.{i}.*``, ``layernorm.*``;
    no ``vit.`` prefix, no pooler: load with ``add_pooling_layer=False``)."""
    from vitjax.export import vit as vx
    vit, p = dino_backbone(model, params)
    return {k[len("vit."):]: v for k, v in vx.to_hf(p, vit).items()}


def _dino_hf_config(model) -> dict:
    from vitjax.export import vit as vx
    cfg = vx.hf_config(dino_backbone(model, None)[0])
    for k in ("id2label", "label2id"):
        cfg.pop(k)
    return dict(cfg, architectures=["ViTModel"])


def _exporters(model, fmt: str, encoder_only: bool, config=None):
    """-> (state dict fn(params), config fn(), writer module, kind) for this model and format."""
    from vitjax.export import vit as vx
    from vitjax.models.dino import DINO
    from vitjax.models.mae import MAE
    from vitjax.models.vit import ViT
    norm = _normalisation(config)      # timm's pretrained_cfg records the run's input normalisation
    if isinstance(model, DINO):
        vit = dino_backbone(model, None)[0]
        if fmt == "timm":
            return ((lambda p: vx.to_timm(dino_backbone(model, p)[1], vit)),
                    (lambda: vx.timm_config(vit, **norm)), vx, "timm")
        if fmt == "hf":
            return (lambda p: _dino_hf(p, model)), (lambda: _dino_hf_config(model)), vx, "hf_vitmodel"
    elif isinstance(model, MAE):
        from vitjax.export import mae as mx
        enc = mx.encoder_model(model)
        if fmt == "timm" or (fmt == "hf" and encoder_only):
            to = vx.to_timm if fmt == "timm" else vx.to_hf
            cfg = (lambda: vx.timm_config(enc, **norm)) if fmt == "timm" else (lambda: vx.hf_config(enc))
            return (lambda p: to(mx.encoder_params(p), enc)), cfg, vx, fmt
        if fmt == "hf":
            return (lambda p: mx.to_hf(p, model)), (lambda: mx.hf_config(model)), vx, "hf_mae"
    elif isinstance(model, ViT):
        if fmt == "hf":
            return (lambda p: vx.to_hf(p, model)), (lambda: vx.hf_config(model)), vx, fmt
        if fmt == "timm":
            return (lambda p: vx.to_timm(p, model)), (lambda: vx.timm_config(model, **norm)), vx, fmt
    else:
        from vitjax.models.clip import CLIP
        from vitjax.models.perceiver import Perceiver
        if isinstance(model, CLIP):
            from vitjax.export import clip as cx
            if fmt == "open_clip":
                return (lambda p: cx.to_open_clip(p, model)), (lambda: cx.open_clip_config(model)), cx, "open_clip"
            if fmt == "hf":
                return (lambda p: cx.to_hf(p, model)), (lambda: cx.hf_config(model)), cx, "hf_clip"
        from vitjax.models.pvt import PVT
        from vitjax.models.swin import Swin
        if isinstance(model, Perceiver) and fmt == "hf":
            from vitjax.export import perceiver as px
            return (lambda p: px.to_hf(p, model)), (lambda: px.hf_config(model)), vx, "hf_perceiver"
        if isinstance(model, Swin):
            from vitjax.export import swin as sx
            if fmt == "hf":
                return (lambda p: sx.to_hf(p, model)), (lambda: sx.hf_config(model)), vx, "hf_swin"
            return (lambda p: sx.to_timm(p, model)), (lambda: sx.timm_config(model, **norm)), vx, "timm"
        if isinstance(model, PVT) and fmt == "timm":
            from vitjax.export import pvt as pv
            return (lambda p: pv.to_timm(p, model)), (lambda: pv.timm_config(model, **norm)), vx, "timm"
    raise ValueError(f"a {type(model).__name__} cannot be exported as --format {fmt}; see "
                     f"python -m vitjax.export --help for what each model supports")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitjax.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="a vitjax training workdir")
    p.add_argument("--format", required=True, choices=("hf", "timm", "open_clip"))
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--encoder_only", action="store_true", help="MAE: export only the encoder (a ViT backbone)")
    p.add_argument("--student", action="store_true",
                   help="DINO: export the student's backbone (default: the EMA teacher's, as the paper)")
    args = p.parse_args(argv)

    import jax
    import numpy as np

    import vitjax
    from vitjax.checkpoint import weights_for, workdir_model
    from vitjax.models.dino import DINO

    _, model = workdir_model(args.workdir)
    is_dino = isinstance(model, DINO)
    try:
        weights = weights_for(model, args.student, args.workdir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config, model, params = vitjax.load(args.workdir, args.step, weights=weights)
    params = jax.tree.map(np.asarray, params)
    try:
        to_fn, cfg_fn, writer, kind = _exporters(model, args.format, args.encoder_only, config)
        state, cfg = to_fn(params), cfg_fn()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    writer.write_export(args.out, state, cfg)
    n = sum(int(np.prod(v.shape)) for v in state.values())
    what = f" of the DINO {'student' if args.student else 'teacher'}'s backbone" if is_dino else ""
    print(f"wrote {os.path.join(args.out, 'model.safetensors')} ({len(state)} tensors, {n / 1e6:.2f}M "
          f"values{what}) and config.json")
    if kind == "open_clip":
        print(f"load with: net = open_clip.model.CLIP(**json.load(open({os.path.join(args.out, 'config.json')!r}))); "
              f"net.load_state_dict(safetensors.torch.load_file({os.path.join(args.out, 'model.safetensors')!r}))")
    elif kind == "timm":
        from vitjax.export import vit as vx
        print(f"load with: {vx.timm_load_snippet(args.out, cfg)}")
    elif kind == "hf_vitmodel":
        print(f"load with: transformers.ViTModel.from_pretrained({args.out!r}, add_pooling_layer=False)")
    else:
        arch = cfg.get("architectures", ["AutoModel"])[0]
        print(f"load with: transformers.{arch}.from_pretrained({args.out!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
