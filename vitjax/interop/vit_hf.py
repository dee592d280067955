"""ViT / DeiT <-> Hugging Face transformers ``ViTForImageClassification`` /
``DeiTForImageClassificationWithTeacher``: the HF half of ``vitjax.interop.vit`` (see its docstring
for the layout table and the loading calls).

Holds HF's key names and shapes, one ``ViTLayer`` each way (``hf_block_to`` / ``hf_block_from``,
which MAE's decoder reuses), the mapping of transformers v5 in-memory names to on-disk names
(``hf_normalise``), export (``to_hf``, ``hf_config``), import (``from_hf``) and the reading of an HF
``config.json`` (``kwargs_from_hf``).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from vitjax.interop.state_dict import f32, flat_params, need, unwrap_state_dict
from vitjax.interop.vit_layout import ACTIVATIONS, dims, finish, posemb_value, reconcile, square_size

__all__ = ["hf_block_to", "hf_block_from", "to_hf", "hf_config", "hf_normalise", "from_hf", "kwargs_from_hf"]

# HF hidden_act -> vitjax activation (gelu_new is the tanh approximation).
_HF_ACTS_IN = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "quick_gelu": "quick_gelu"}


_HF_HEADS = ("classifier", "cls_classifier", "distillation_classifier")


def _hf_check(model):
    if model.pool == "gap":
        raise ValueError("a GAP-pooled ViT (pool='gap') has no Hugging Face transformers equivalent "
                         "(HF ViT/DeiT classify from the class token); use --format timm (timm "
                         "VisionTransformer with global_pool='avg') instead")


def _hf_prefix(model) -> str:
    return "deit." if model.distilled else "vit."


def _hf_heads(model) -> tuple[str, ...]:
    return ("cls_classifier", "distillation_classifier") if model.distilled else ("classifier",)


def _hf_shapes(model, heads: bool = True) -> dict[str, tuple]:
    """{HF on-disk key without the vit./deit. prefix (heads top-level): torch shape}."""
    d = dims(model)
    D, M, P, C, K = d["D"], d["M"], d["P"], d["C"], d["K"]
    out: dict[str, tuple] = {"embeddings.cls_token": (1, 1, D)}
    if model.distilled:
        out["embeddings.distillation_token"] = (1, 1, D)
    out["embeddings.position_embeddings"] = (1, d["T"], D)
    out["embeddings.patch_embeddings.projection.weight"] = (D, C, P, P)
    out["embeddings.patch_embeddings.projection.bias"] = (D,)
    for i in range(model.depth):
        b = f"encoder.layer.{i}."
        out[b + "layernorm_before.weight"] = out[b + "layernorm_before.bias"] = (D,)
        for n in ("query", "key", "value"):
            out[b + f"attention.attention.{n}.weight"] = (D, D)
            if model.qkv_bias:
                out[b + f"attention.attention.{n}.bias"] = (D,)
        out[b + "attention.output.dense.weight"], out[b + "attention.output.dense.bias"] = (D, D), (D,)
        out[b + "layernorm_after.weight"] = out[b + "layernorm_after.bias"] = (D,)
        out[b + "intermediate.dense.weight"], out[b + "intermediate.dense.bias"] = (M, D), (M,)
        out[b + "output.dense.weight"], out[b + "output.dense.bias"] = (D, M), (D,)
    out["layernorm.weight"] = out["layernorm.bias"] = (D,)
    if heads and K > 0:
        for h in _hf_heads(model):
            out[f"{h}.weight"], out[f"{h}.bias"] = (K, D), (K,)
    return out


def hf_block_to(f: Mapping[str, np.ndarray], j: str, b: str, D: int, qkv_bias: bool) -> dict[str, np.ndarray]:
    """One vitjax EncoderBlock (flat names under ``j``) -> HF ViTLayer on-disk names under ``b``."""
    out = {b + "layernorm_before.weight": need(f, j + "norm1/scale"), b + "layernorm_before.bias": f[j + "norm1/bias"]}
    for n in ("query", "key", "value"):
        out[b + f"attention.attention.{n}.weight"] = need(f, j + f"attn/{n}/kernel").reshape(D, -1).T
        if qkv_bias:
            out[b + f"attention.attention.{n}.bias"] = need(f, j + f"attn/{n}/bias").reshape(-1)
    out[b + "attention.output.dense.weight"] = need(f, j + "attn/out/kernel").reshape(-1, D).T
    out[b + "attention.output.dense.bias"] = f[j + "attn/out/bias"]
    out[b + "layernorm_after.weight"] = need(f, j + "norm2/scale")
    out[b + "layernorm_after.bias"] = f[j + "norm2/bias"]
    out[b + "intermediate.dense.weight"] = need(f, j + "mlp/fc1/kernel").T
    out[b + "intermediate.dense.bias"] = f[j + "mlp/fc1/bias"]
    out[b + "output.dense.weight"] = need(f, j + "mlp/fc2/kernel").T
    out[b + "output.dense.bias"] = f[j + "mlp/fc2/bias"]
    return out


def hf_block_from(sd: Mapping[str, np.ndarray], b: str, j: str, D: int, H: int,
                  qkv_bias: bool) -> dict[str, np.ndarray]:
    """HF ViTLayer on-disk names under ``b`` -> one vitjax EncoderBlock (flat names under ``j``)."""
    f = {}
    for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
        f[j + f"{ours}/scale"] = sd[b + f"{theirs}.weight"]
        f[j + f"{ours}/bias"] = sd[b + f"{theirs}.bias"]
    for n in ("query", "key", "value"):
        f[j + f"attn/{n}/kernel"] = sd[b + f"attention.attention.{n}.weight"].T.reshape(D, H, -1)
        if qkv_bias:
            f[j + f"attn/{n}/bias"] = sd[b + f"attention.attention.{n}.bias"].reshape(H, -1)
    f[j + "attn/out/kernel"] = sd[b + "attention.output.dense.weight"].T.reshape(H, -1, D)
    f[j + "attn/out/bias"] = sd[b + "attention.output.dense.bias"]
    for ours, theirs in (("fc1", "intermediate.dense"), ("fc2", "output.dense")):
        f[j + f"mlp/{ours}/kernel"] = sd[b + f"{theirs}.weight"].T
        f[j + f"mlp/{ours}/bias"] = sd[b + f"{theirs}.bias"]
    return f


def to_hf(params, model) -> dict[str, np.ndarray]:
    """vitjax ViT/DeiT params -> HF state dict with the on-disk (hub, transformers v4) names.

    ``vit.embeddings.cls_token`` (1,1,D), ``vit.encoder.layer.{i}.attention.attention.query.weight`` (D,D),
    ..., ``classifier.weight`` (K,D); DeiT (distilled) uses the ``deit.`` prefix, adds
    ``deit.embeddings.distillation_token`` and the heads ``cls_classifier`` / ``distillation_classifier``.
    ``from_pretrained`` of transformers v4 and v5 accept these names. Raises ValueError for GAP models.
    """
    _hf_check(model)
    f = flat_params(params)
    d = dims(model)
    D = d["D"]
    p = _hf_prefix(model)
    out: dict[str, np.ndarray] = {p + "embeddings.cls_token": need(f, "cls")}
    if model.distilled:
        out[p + "embeddings.distillation_token"] = need(f, "dist")
    out[p + "embeddings.position_embeddings"] = posemb_value(f, model)
    out[p + "embeddings.patch_embeddings.projection.weight"] = \
        need(f, "patch_embed/kernel").transpose(3, 2, 0, 1)
    out[p + "embeddings.patch_embeddings.projection.bias"] = need(f, "patch_embed/bias")
    for i in range(model.depth):
        out.update(hf_block_to(f, f"encoder/block{i}/", f"{p}encoder.layer.{i}.", D, model.qkv_bias))
    out[p + "layernorm.weight"] = need(f, "encoder_norm/scale")
    out[p + "layernorm.bias"] = f["encoder_norm/bias"]
    if model.num_classes > 0:
        for hf_name, ours in zip(_hf_heads(model), ("head", "head_dist")):
            out[f"{hf_name}.weight"] = need(f, f"{ours}/kernel").T
            out[f"{hf_name}.bias"] = f[f"{ours}/bias"]
    return {k: f32(v) for k, v in out.items()}


def hf_config(model, *, label_names: Sequence[str] | None = None) -> dict:
    """config.json (ViTConfig, or DeiTConfig for distilled models) matching ``to_hf``'s weights.

    ``architectures`` is ``["ViTForImageClassification"]`` / ``["DeiTForImageClassificationWithTeacher"]``;
    ``layer_norm_eps`` is the model's (HF's own default 1e-12 would not match); ``num_classes=0`` gives an
    empty ``id2label``, for which HF builds an Identity classifier (logits = normalised class token).
    """
    _hf_check(model)
    if model.activation not in ACTIVATIONS:
        raise ValueError(f"activation {model.activation!r} has no HF equivalent; choose one of "
                         f"{list(ACTIVATIONS)}")
    k = model.num_classes
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} label names for num_classes={k}")
    arch = "DeiTForImageClassificationWithTeacher" if model.distilled else "ViTForImageClassification"
    return dict(
        architectures=[arch],
        model_type="deit" if model.distilled else "vit",
        hidden_size=model.width, num_hidden_layers=model.depth, num_attention_heads=model.num_heads,
        intermediate_size=model.mlp_dim, hidden_act=ACTIVATIONS[model.activation][1],
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02,
        layer_norm_eps=float(model.layernorm_eps), image_size=model.image_size, patch_size=model.patch_size,
        num_channels=model.in_channels, qkv_bias=bool(model.qkv_bias), encoder_stride=model.patch_size,
        pooler_output_size=model.width, pooler_act="tanh",
        id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
        dtype="float32",
    )


# transformers v5 in-memory names -> on-disk names (transformers/conversion_mapping.py "ViTModel",
# applied in reverse); only keys under layers.{i}. are renamed.
_HF_V5_RENAMES = (
    (re.compile(r"^layers\.(\d+)\.attention\.q_proj\."), r"encoder.layer.\1.attention.attention.query."),
    (re.compile(r"^layers\.(\d+)\.attention\.k_proj\."), r"encoder.layer.\1.attention.attention.key."),
    (re.compile(r"^layers\.(\d+)\.attention\.v_proj\."), r"encoder.layer.\1.attention.attention.value."),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"encoder.layer.\1.attention.output.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc1\."), r"encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc2\."), r"encoder.layer.\1.output.dense."),
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
)


def hf_normalise(sd: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """-> (prefix, {on-disk name without prefix (heads top-level): array}).

    Drops ViTModel's ``pooler.*`` and ``embeddings.mask_token`` (masked-image-modelling only): vitjax's
    ViT has neither and neither affects ViTModel's last_hidden_state or a classifier's logits.
    """
    prefix = ""
    for p in ("vit.", "deit."):
        if any(k.startswith(p) for k in sd):
            prefix = p
            break
    out = {}
    for k, v in sd.items():
        body = k[len(prefix):] if prefix and k.startswith(prefix) else k
        if body.startswith("pooler.") or body == "embeddings.mask_token":
            continue
        for pat, rep in _HF_V5_RENAMES:
            new, n = pat.subn(rep, body)
            if n:
                body = new
                break
        out[body] = v
    return prefix, out


def from_hf(state_dict, model, drop_head: bool = False) -> dict:
    """HF ViT/DeiT state dict -> vitjax params for ``model`` (the inner ``params`` dict, numpy).

    Accepts on-disk/legacy names (``vit.encoder.layer.{i}.attention.attention.query.weight``) and
    transformers v5 in-memory names (``vit.layers.{i}.attention.q_proj.weight``), with a ``vit.`` /
    ``deit.`` prefix or none (ViTModel dumps; their pooler is ignored). ViTForImageClassification maps
    to a token-pooled ViT, DeiTForImageClassificationWithTeacher to ``distilled=True``. Position-table
    resizing, ``drop_head`` and the errors are as in ``from_timm``.
    """
    _hf_check(model)
    prefix, sd = hf_normalise(unwrap_state_dict(state_dict))
    shown_prefix = prefix
    heads = set(_HF_HEADS)
    show = lambda k: k if k.split(".")[0] in heads else shown_prefix + k  # noqa: E731
    expected = _hf_shapes(model, heads=not drop_head)
    sd = reconcile(sd, expected, model, drop_head=drop_head, head_names=_HF_HEADS,
                    posemb_key="embeddings.position_embeddings", show=show, fmt="Hugging Face")
    d = dims(model)
    D, H = d["D"], d["H"]
    f: dict[str, np.ndarray] = {"cls": sd["embeddings.cls_token"]}
    if model.distilled:
        f["dist"] = sd["embeddings.distillation_token"]
    if model.posemb == "learned":
        f["pos_embedding"] = sd["embeddings.position_embeddings"]
    f["patch_embed/kernel"] = sd["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0)
    f["patch_embed/bias"] = sd["embeddings.patch_embeddings.projection.bias"]
    for i in range(model.depth):
        f.update(hf_block_from(sd, f"encoder.layer.{i}.", f"encoder/block{i}/", D, H, model.qkv_bias))
    f["encoder_norm/scale"], f["encoder_norm/bias"] = sd["layernorm.weight"], sd["layernorm.bias"]
    if not drop_head and model.num_classes > 0:
        for hf_name, ours in zip(_hf_heads(model), ("head", "head_dist")):
            f[f"{ours}/kernel"], f[f"{ours}/bias"] = sd[f"{hf_name}.weight"].T, sd[f"{hf_name}.bias"]
    return finish(f, model)


def kwargs_from_hf(c: dict) -> dict:
    """HF ViTConfig / DeiTConfig json -> vitjax ``ViT`` keyword arguments; ValueError for models vitjax's
    ViT cannot reproduce (DeiT classifying from the class token only, unknown activations)."""
    mtype = c.get("model_type", "vit")
    if mtype not in ("vit", "deit"):
        raise ValueError(f"model_type {mtype!r} is not a ViT/DeiT config")
    archs = c.get("architectures") or []
    distilled = mtype == "deit"
    teacher = ("DeiTForImageClassificationWithTeacher", "DeiTModel")
    if distilled and archs and not any(a in teacher for a in archs):
        raise ValueError(f"HF {archs} keeps the distillation token but classifies from the class token "
                         f"only, which vitjax's DeiT (mean of both heads) does not reproduce")
    if "id2label" in c:
        k = len(c["id2label"])
    else:
        k = int(c.get("num_labels", 2))
    if archs and not any("ForImageClassification" in a for a in archs):
        k = 0                                       # ViTModel / DeiTModel: features only
    act = c.get("hidden_act", "gelu")
    if act not in _HF_ACTS_IN:
        raise ValueError(f"hidden_act {act!r} has no vitjax equivalent ({sorted(_HF_ACTS_IN)})")
    return dict(
        width=int(c.get("hidden_size", 768)), depth=int(c.get("num_hidden_layers", 12)),
        num_heads=int(c.get("num_attention_heads", 12)), mlp_dim=int(c.get("intermediate_size", 3072)),
        patch_size=square_size(c.get("patch_size", 16), "patch_size"),
        image_size=square_size(c.get("image_size", 224), "image_size"),
        in_channels=int(c.get("num_channels", 3)), num_classes=k,
        layernorm_eps=float(c.get("layer_norm_eps", 1e-12)), pool="token", distilled=distilled,
        qkv_bias=bool(c.get("qkv_bias", True)), activation=_HF_ACTS_IN[act],
    )

