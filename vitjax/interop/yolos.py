"""YOLOS <-> Hugging Face transformers ``YolosForObjectDetection`` (both directions).

    python -m vitjax.export --workdir W --format hf --out DIR
    # load with: transformers.YolosForObjectDetection.from_pretrained(DIR)

Layout (D width, N patches, T detection tokens, K classes):

    vitjax                                  HF (state_dict names)
    cls [1, 1, D]                           vit.embeddings.cls_token
    det_tokens [1, T, D]                    vit.embeddings.detection_tokens
    pos_embedding [1, 1 + N, D]  ++         vit.embeddings.position_embeddings [1, 1 + N + T, D]
      det_pos_embedding [1, T, D]
    patch_embed, encoder/block{i}, encoder_norm   vit.embeddings.patch_embeddings.projection,
                                            vit.encoder.layer.{i}.* (HF ViTLayer, vit_hf's block
                                            mapping), vit.layernorm
    class_head_layer{0,1,2}                 class_labels_classifier.layers.{0,1,2}
    box_head_layer{0,1,2}                   bbox_predictor.layers.{0,1,2}

HF options this layout cannot express are refused with a message: ``use_mid_position_embeddings``
(YOLOS-S/B's extra per-layer positions), non-square images, and an HF image size other than the
model's (HF interpolates positions at every call; vitjax learns them for one size).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vitjax.interop.registry import register_converter, register_detector
from vitjax.interop.state_dict import f32, flat_params, need, params_tree, unwrap_state_dict
from vitjax.interop.vit_hf import hf_block_from, hf_block_to
from vitjax.interop.vit_layout import dims, posemb_value
from vitjax.models.yolos import YOLOS

_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new"}


def _check(model) -> None:
    if model.activation not in _ACT:
        raise ValueError(f"YOLOS activation {model.activation!r} has no HF YOLOS equivalent; use gelu")


def to_hf(params, model) -> dict[str, np.ndarray]:
    """vitjax YOLOS params -> ``YolosForObjectDetection`` state dict (float32 numpy)."""
    _check(model)
    f = flat_params(params)
    D = dims(model)["D"]
    out = {"vit.embeddings.cls_token": need(f, "cls"),
           "vit.embeddings.detection_tokens": need(f, "det_tokens"),
           "vit.embeddings.position_embeddings": np.concatenate(
               [posemb_value(f, model).reshape(1, -1, D), need(f, "det_pos_embedding")], axis=1),
           "vit.embeddings.patch_embeddings.projection.weight": need(f, "patch_embed/kernel").transpose(3, 2, 0, 1),
           "vit.embeddings.patch_embeddings.projection.bias": need(f, "patch_embed/bias"),
           "vit.layernorm.weight": need(f, "encoder_norm/scale"), "vit.layernorm.bias": f["encoder_norm/bias"]}
    for i in range(model.depth):
        out.update(hf_block_to(f, f"encoder/block{i}/", f"vit.encoder.layer.{i}.", D, model.qkv_bias))
    for ours, theirs in (("class_head", "class_labels_classifier"), ("box_head", "bbox_predictor")):
        for i in range(3):
            out[f"{theirs}.layers.{i}.weight"] = need(f, f"{ours}_layer{i}/kernel").T
            out[f"{theirs}.layers.{i}.bias"] = need(f, f"{ours}_layer{i}/bias")
    return {k: f32(v) for k, v in out.items()}


def hf_config(model, *, label_names: Sequence[str] | None = None) -> dict:
    """The ``YolosConfig`` (config.json dict) of ``model``."""
    _check(model)
    names = list(label_names) if label_names else [str(i) for i in range(model.num_classes)]
    return {"architectures": ["YolosForObjectDetection"], "model_type": "yolos",
            "hidden_size": model.width, "num_hidden_layers": model.depth, "num_attention_heads": model.num_heads,
            "intermediate_size": model.mlp_dim, "hidden_act": _ACT[model.activation],
            "layer_norm_eps": model.layernorm_eps, "image_size": [model.image_size, model.image_size],
            "patch_size": model.patch_size, "num_channels": model.in_channels, "qkv_bias": model.qkv_bias,
            "num_detection_tokens": model.num_detection_tokens, "use_mid_position_embeddings": False,
            "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def from_hf(state_dict, model, drop_head: bool = False) -> dict:
    """``YolosForObjectDetection`` state dict (or a path's contents) -> vitjax YOLOS params."""
    sd = {k: np.asarray(v, np.float32) for k, v in unwrap_state_dict(state_dict).items()}
    if any(k.startswith("vit.encoder.mid_position_embeddings") for k in sd):
        raise ValueError("this YOLOS checkpoint uses mid position embeddings (use_mid_position_embeddings=True, "
                         "YOLOS-S/B), which vitjax's YOLOS does not implement; convert a YOLOS-Ti-style model")
    if model.posemb != "learned":
        raise ValueError("HF YOLOS has learned position embeddings; build the vitjax model with posemb='learned'")
    d = dims(model)
    D, H, T = d["D"], d["H"], model.num_detection_tokens
    pos = sd["vit.embeddings.position_embeddings"]
    if pos.shape[1] != d["T"] + T:
        raise ValueError(f"the checkpoint's position table has {pos.shape[1]} positions but this YOLOS needs "
                         f"{d['T']} + {T} (image_size {model.image_size}, patch {model.patch_size}, "
                         f"{T} detection tokens); build the model with the checkpoint's image size and tokens")
    f = {"cls": sd["vit.embeddings.cls_token"], "det_tokens": sd["vit.embeddings.detection_tokens"],
         "pos_embedding": pos[:, :-T], "det_pos_embedding": pos[:, -T:],
         "patch_embed/kernel": sd["vit.embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0),
         "patch_embed/bias": sd["vit.embeddings.patch_embeddings.projection.bias"],
         "encoder_norm/scale": sd["vit.layernorm.weight"], "encoder_norm/bias": sd["vit.layernorm.bias"]}
    for i in range(model.depth):
        f.update(hf_block_from(sd, f"vit.encoder.layer.{i}.", f"encoder/block{i}/", D, H, model.qkv_bias))
    for ours, theirs in (("class_head", "class_labels_classifier"), ("box_head", "bbox_predictor")):
        for i in range(3):
            f[f"{ours}_layer{i}/kernel"] = sd[f"{theirs}.layers.{i}.weight"].T
            f[f"{ours}_layer{i}/bias"] = sd[f"{theirs}.layers.{i}.bias"]
    return params_tree(f, model)


register_converter(YOLOS, "hf", kind="hf_yolos", export=to_hf, config=hf_config, load=from_hf, drop_head=False)
register_detector(YOLOS, lambda sd: "hf")
# A YOLOS is a ViT subclass, so ViT's timm and npz converters would otherwise apply and fail on its
# detection heads; empty entries shadow them, and the export command lists hf as its one format.
for _fmt in ("timm", "npz"):
    register_converter(YOLOS, _fmt)
