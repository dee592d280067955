"""DETR's transformer and heads <-> Hugging Face transformers ``DetrForObjectDetection``.

HF DETR's backbones are CNNs (its own ResNet port, or timm's); vitjax's DETR runs on ViT/PVT/Swin
backbones, which have no place in HF's model. So what converts is everything after the backbone, the
``detector`` subtree of ``DETR``'s parameters (``DetrTransformer``), and only through these two calls
(the export CLI names this reason and stops, rather than writing half a model):

    sd = detector_to_hf(params["detector"], model)      # -> HF state dict names, minus model.backbone.*
    hf_model.load_state_dict(sd, strict=False)           # HF model built with d_model, layers, queries...
    params["detector"] = detector_from_hf(hf_model.state_dict(), model)

The HF model must have the same ``d_model``, heads, layers, FFN width, ``num_queries``,
``num_labels`` = num_classes and a backbone whose last stage has as many channels as vitjax's
(``input_projection`` maps them to ``d_model``); ``hf_detr_config(model, backbone_channels)`` gives
such a config with a small random ResNet. Names are transformers v5's module names
(``model.encoder.layers.{i}.self_attn.q_proj``, ``mlp.fc1``...):

    vitjax detector/                          HF
    input_proj                                model.input_projection (1x1 conv)
    query_pos [Q, d]                          model.query_position_embeddings.weight
    encoder_layer{i}/self_attn/{query,key,value,out}   model.encoder.layers.{i}.self_attn.{q,k,v,o}_proj
    encoder_layer{i}/{self_attn_norm,mlp/fc1,mlp/fc2,final_norm}   ...self_attn_layer_norm, mlp.fc1/2, final_layer_norm
    decoder_layer{i}/cross_attn, cross_attn_norm       model.decoder.layers.{i}.encoder_attn(_layer_norm)
    decoder_norm                              model.decoder.layernorm
    class_head, box_head_layer{0,1,2}         class_labels_classifier, bbox_predictor.layers.{0,1,2}
"""
from __future__ import annotations

import numpy as np

from vitjax.interop.registry import register_converter
from vitjax import param_tree
from vitjax.interop.state_dict import f32, flat_params, need, unwrap_state_dict
from vitjax.models.detr import DETR

_ATTN = (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))
_NORMS = {"encoder": (("self_attn_norm", "self_attn_layer_norm"), ("final_norm", "final_layer_norm")),
          "decoder": (("self_attn_norm", "self_attn_layer_norm"), ("cross_attn_norm", "encoder_attn_layer_norm"),
                      ("final_norm", "final_layer_norm"))}
_ATTNS = {"encoder": (("self_attn", "self_attn"),),
          "decoder": (("self_attn", "self_attn"), ("cross_attn", "encoder_attn"))}


def _layers(model):
    for kind, n in (("encoder", model.enc_layers), ("decoder", model.dec_layers)):
        for i in range(n):
            yield kind, f"{kind}_layer{i}/", f"model.{kind}.layers.{i}."


def detector_to_hf(detector_params, model) -> dict[str, np.ndarray]:
    """``params["detector"]`` of a vitjax ``DETR`` -> HF ``DetrForObjectDetection`` state dict entries
    (everything but ``model.backbone.*``), float32 numpy."""
    if model.reference_points:
        raise ValueError("this DETR has reference_points=True (per-query anchor points), which HF "
                         "DetrForObjectDetection lacks; only a DETR built with reference_points=False converts")
    f = flat_params(detector_params)
    d = model.hidden_dim
    out = {"model.input_projection.weight": need(f, "input_proj/kernel").transpose(3, 2, 0, 1),
           "model.input_projection.bias": need(f, "input_proj/bias"),
           "model.query_position_embeddings.weight": need(f, "query_pos"),
           "model.decoder.layernorm.weight": need(f, "decoder_norm/scale"),
           "model.decoder.layernorm.bias": need(f, "decoder_norm/bias"),
           "class_labels_classifier.weight": need(f, "class_head/kernel").T,
           "class_labels_classifier.bias": need(f, "class_head/bias")}
    for i in range(3):
        out[f"bbox_predictor.layers.{i}.weight"] = need(f, f"box_head_layer{i}/kernel").T
        out[f"bbox_predictor.layers.{i}.bias"] = need(f, f"box_head_layer{i}/bias")
    for kind, j, b in _layers(model):
        for ours, theirs in _ATTNS[kind]:
            for q, t in _ATTN:
                out[f"{b}{theirs}.{t}.weight"] = need(f, f"{j}{ours}/{q}/kernel").reshape(d, d).T
                out[f"{b}{theirs}.{t}.bias"] = need(f, f"{j}{ours}/{q}/bias").reshape(d)
            out[f"{b}{theirs}.o_proj.weight"] = need(f, f"{j}{ours}/out/kernel").reshape(d, d).T
            out[f"{b}{theirs}.o_proj.bias"] = need(f, f"{j}{ours}/out/bias")
        for ours, theirs in _NORMS[kind]:
            out[f"{b}{theirs}.weight"] = need(f, f"{j}{ours}/scale")
            out[f"{b}{theirs}.bias"] = need(f, f"{j}{ours}/bias")
        for fc in ("fc1", "fc2"):
            out[f"{b}mlp.{fc}.weight"] = need(f, f"{j}mlp/{fc}/kernel").T
            out[f"{b}mlp.{fc}.bias"] = need(f, f"{j}mlp/{fc}/bias")
    return {k: f32(v) for k, v in out.items()}


def detector_from_hf(state_dict, model) -> dict:
    """HF ``DetrForObjectDetection`` state dict -> the ``params["detector"]`` tree of a vitjax ``DETR``
    (numpy; the backbone's entries are ignored). Raises ValueError naming the first shape mismatch."""
    sd = unwrap_state_dict(state_dict)
    d, h = model.hidden_dim, model.num_heads
    want = {"model.query_position_embeddings.weight": (model.num_queries, d),
            "class_labels_classifier.weight": (model.num_classes + 1, d)}
    for k, shape in want.items():
        if k not in sd or tuple(sd[k].shape) != shape:
            got = tuple(sd[k].shape) if k in sd else "missing"
            raise ValueError(f"HF DETR entry {k} is {got}, this DETR needs {shape} (num_queries="
                             f"{model.num_queries}, num_classes={model.num_classes}, hidden_dim={d}); build "
                             f"the vitjax model with the checkpoint's sizes")
    f = {"input_proj/kernel": sd["model.input_projection.weight"].transpose(2, 3, 1, 0),
         "input_proj/bias": sd["model.input_projection.bias"],
         "query_pos": sd["model.query_position_embeddings.weight"],
         "decoder_norm/scale": sd["model.decoder.layernorm.weight"],
         "decoder_norm/bias": sd["model.decoder.layernorm.bias"],
         "class_head/kernel": sd["class_labels_classifier.weight"].T,
         "class_head/bias": sd["class_labels_classifier.bias"]}
    for i in range(3):
        f[f"box_head_layer{i}/kernel"] = sd[f"bbox_predictor.layers.{i}.weight"].T
        f[f"box_head_layer{i}/bias"] = sd[f"bbox_predictor.layers.{i}.bias"]
    for kind, j, b in _layers(model):
        for ours, theirs in _ATTNS[kind]:
            for q, t in _ATTN:
                f[f"{j}{ours}/{q}/kernel"] = sd[f"{b}{theirs}.{t}.weight"].T.reshape(d, h, d // h)
                f[f"{j}{ours}/{q}/bias"] = sd[f"{b}{theirs}.{t}.bias"].reshape(h, d // h)
            f[f"{j}{ours}/out/kernel"] = sd[f"{b}{theirs}.o_proj.weight"].T.reshape(h, d // h, d)
            f[f"{j}{ours}/out/bias"] = sd[f"{b}{theirs}.o_proj.bias"]
        for ours, theirs in _NORMS[kind]:
            f[f"{j}{ours}/scale"] = sd[f"{b}{theirs}.weight"]
            f[f"{j}{ours}/bias"] = sd[f"{b}{theirs}.bias"]
        for fc in ("fc1", "fc2"):
            f[f"{j}mlp/{fc}/kernel"] = sd[f"{b}mlp.{fc}.weight"].T
            f[f"{j}mlp/{fc}/bias"] = sd[f"{b}mlp.{fc}.bias"]
    dtype = np.dtype(model.param_dtype)
    return param_tree.unflatten({k: np.ascontiguousarray(v, dtype=dtype) for k, v in f.items()})


def hf_detr_config(model, backbone_channels: int) -> dict:
    """A ``DetrConfig`` dict matching ``model``'s transformer, with a small random ResNet backbone whose
    last stage has ``backbone_channels`` channels (no download, no pretrained weights).

    ``auxiliary_loss=False``: with it on, HF's decoder (transformers 5.23) feeds each layer the
    *normalised* output of the one before and normalises the last output twice, unlike the reference
    DETR (facebookresearch/detr ``TransformerDecoder`` keeps the running output un-normalised and
    normalises only the copies it returns), which vitjax follows; with it off the two agree."""
    return dict(d_model=model.hidden_dim, encoder_layers=model.enc_layers, decoder_layers=model.dec_layers,
                encoder_attention_heads=model.num_heads, decoder_attention_heads=model.num_heads,
                encoder_ffn_dim=model.ffn_dim, decoder_ffn_dim=model.ffn_dim, num_queries=model.num_queries,
                num_labels=model.num_classes, activation_function="relu", dropout=0.0, auxiliary_loss=False,
                use_timm_backbone=False, use_pretrained_backbone=False,
                backbone_config=dict(model_type="resnet", embedding_size=8, hidden_sizes=[8, backbone_channels],
                                     depths=[1, 1], layer_type="basic", out_features=["stage2"]))


def _blockers(model) -> list[str]:
    return [f"DETR's backbone ({type(model.backbone).__name__}) has no counterpart in HF DetrForObjectDetection "
            f"(ResNet/timm CNN backbones): only the transformer and heads convert, with "
            f"vitjax.interop.detr.detector_to_hf / detector_from_hf"]


register_converter(DETR, "hf", kind="hf_detr", export=lambda params, model: detector_to_hf(params["detector"], model),
                   load=None, blockers=_blockers)
