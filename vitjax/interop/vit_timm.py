"""ViT / DeiT <-> timm ``VisionTransformer`` (``VisionTransformerDistilled`` for DeiT): the timm half
of ``vitjax.interop.vit`` (see its docstring for the layout table and the loading calls).

Holds timm's key names and shapes (``timm_shapes``), export (``to_timm``, ``timm_config``), import
(``from_timm``) and the reading of a timm ``config.json`` (``kwargs_from_timm``).
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import numpy as np

from vitjax.interop.state_dict import channel_values, f32, flat_params, need, unwrap_state_dict
from vitjax.interop.vit_layout import ACTIVATIONS, dims, finish, posemb_value, reconcile, square_size

__all__ = ["timm_shapes", "to_timm", "timm_config", "from_timm", "kwargs_from_timm"]

# timm 1.0.31 entry points whose default shape a vitjax model may match: (name size) -> (D, depth, H);
# all have mlp_ratio 4. Names not registered in timm (e.g. vit_tiny_patch32_224) fall back to
# vit_base_patch16_224 + model_args, which builds the same module.
_TIMM_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
               "large": (1024, 24, 16), "huge": (1280, 32, 16)}
_TIMM_NAMES = frozenset({
    "deit_base_distilled_patch16_224", "deit_base_distilled_patch16_384", "deit_small_distilled_patch16_224",
    "deit_tiny_distilled_patch16_224", "vit_base_patch8_224", "vit_base_patch16_224", "vit_base_patch16_384",
    "vit_base_patch32_224", "vit_base_patch32_384", "vit_huge_patch14_224", "vit_large_patch14_224",
    "vit_large_patch16_224", "vit_large_patch16_384", "vit_large_patch32_224", "vit_large_patch32_384",
    "vit_small_patch8_224", "vit_small_patch16_224", "vit_small_patch16_384", "vit_small_patch32_224",
    "vit_small_patch32_384", "vit_tiny_patch16_224", "vit_tiny_patch16_384",
})
_TIMM_NAME_RE = re.compile(r"(vit|deit)_(tiny|small|base|large|huge)_(distilled_)?patch(\d+)_(\d+)")
_TIMM_HEADS = ("head", "head_dist")


def timm_shapes(model, heads: bool = True) -> dict[str, tuple]:
    """{timm key: torch shape} of the timm VisionTransformer(Distilled) equal to ``model``."""
    d = dims(model)
    D, M, P, C, K = d["D"], d["M"], d["P"], d["C"], d["K"]
    out: dict[str, tuple] = {}
    if model.pool == "token":
        out["cls_token"] = (1, 1, D)
    if model.distilled:
        out["dist_token"] = (1, 1, D)
    out["pos_embed"] = (1, d["T"], D)
    out["patch_embed.proj.weight"] = (D, C, P, P)
    out["patch_embed.proj.bias"] = (D,)
    for i in range(model.depth):
        b = f"blocks.{i}."
        out[b + "norm1.weight"] = out[b + "norm1.bias"] = (D,)
        out[b + "attn.qkv.weight"] = (3 * D, D)
        if model.qkv_bias:
            out[b + "attn.qkv.bias"] = (3 * D,)
        out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = (D, D), (D,)
        out[b + "norm2.weight"] = out[b + "norm2.bias"] = (D,)
        out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = (M, D), (M,)
        out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = (D, M), (D,)
    norm = "fc_norm" if model.pool == "gap" else "norm"
    out[f"{norm}.weight"] = out[f"{norm}.bias"] = (D,)
    if heads and K > 0:
        for h in (("head", "head_dist") if model.distilled else ("head",)):
            out[f"{h}.weight"], out[f"{h}.bias"] = (K, D), (K,)
    return out


def to_timm(params, model) -> dict[str, np.ndarray]:
    """vitjax ViT/DeiT params -> timm ``VisionTransformer`` (or ``VisionTransformerDistilled``) state dict.

    ``params``: the model's parameter tree (``{"params": ...}`` or its content, boxed or unboxed).
    Returns {timm key: float32 numpy}, e.g. ``blocks.0.attn.qkv.weight`` (3D, D) with rows [q; k; v];
    ``pos_embed`` (1, prefix + N, D) is written for sin-cos models too (the fixed table's values). GAP
    models map ``encoder_norm`` to ``fc_norm.*``; DeiT adds ``dist_token`` and ``head_dist.*``.
    """
    f = flat_params(params)
    d = dims(model)
    D = d["D"]
    out: dict[str, np.ndarray] = {}
    if model.pool == "token":
        out["cls_token"] = need(f, "cls")
    if model.distilled:
        out["dist_token"] = need(f, "dist")
    out["pos_embed"] = posemb_value(f, model)
    out["patch_embed.proj.weight"] = need(f, "patch_embed/kernel").transpose(3, 2, 0, 1)   # HWIO -> OIHW
    out["patch_embed.proj.bias"] = need(f, "patch_embed/bias")
    for i in range(model.depth):
        j, b = f"encoder/block{i}/", f"blocks.{i}."
        out[b + "norm1.weight"], out[b + "norm1.bias"] = need(f, j + "norm1/scale"), f[j + "norm1/bias"]
        out[b + "attn.qkv.weight"] = np.concatenate(
            [need(f, j + f"attn/{n}/kernel").reshape(D, -1).T for n in ("query", "key", "value")], 0)
        if model.qkv_bias:
            out[b + "attn.qkv.bias"] = np.concatenate(
                [need(f, j + f"attn/{n}/bias").reshape(-1) for n in ("query", "key", "value")], 0)
        out[b + "attn.proj.weight"] = need(f, j + "attn/out/kernel").reshape(-1, D).T
        out[b + "attn.proj.bias"] = f[j + "attn/out/bias"]
        out[b + "norm2.weight"], out[b + "norm2.bias"] = need(f, j + "norm2/scale"), f[j + "norm2/bias"]
        for n in ("fc1", "fc2"):
            out[b + f"mlp.{n}.weight"] = need(f, j + f"mlp/{n}/kernel").T
            out[b + f"mlp.{n}.bias"] = f[j + f"mlp/{n}/bias"]
    norm = "fc_norm" if model.pool == "gap" else "norm"
    out[f"{norm}.weight"], out[f"{norm}.bias"] = need(f, "encoder_norm/scale"), f["encoder_norm/bias"]
    if model.num_classes > 0:
        for h in (("head", "head_dist") if model.distilled else ("head",)):
            out[f"{h}.weight"], out[f"{h}.bias"] = need(f, f"{h}/kernel").T, f[f"{h}/bias"]
    return {k: f32(v) for k, v in out.items()}


def _timm_architecture(model) -> str:
    """A registered timm name whose defaults match ``model``'s shape, else a generic one.

    The name only selects the entry point (and so the class: DeiT distilled -> VisionTransformerDistilled);
    ``model_args`` in the config override every shape argument anyway.
    """
    sizes = {v: k for k, v in _TIMM_SIZES.items()}
    size = sizes.get((model.width, model.depth, model.num_heads))
    if size and model.mlp_dim == 4 * model.width:
        fam = f"deit_{size}_distilled" if model.distilled else f"vit_{size}"
        name = f"{fam}_patch{model.patch_size}_{model.image_size}"
        if name in _TIMM_NAMES:
            return name
    return "deit_base_distilled_patch16_224" if model.distilled else "vit_base_patch16_224"


def timm_config(model, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                label_names: Sequence[str] | None = None) -> dict:
    """config.json for ``timm.create_model("local-dir:<dir>", pretrained=True)`` (timm's hub layout).

    ``mean``/``std``: the input normalisation the model was trained with (vitjax's default 0.5/0.5 maps
    pixels to [-1, 1]; ImageNet's is mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)); timm's
    ``resolve_data_config`` reads them from here. Raises ValueError for settings timm's ViT cannot
    express from a JSON config (a LayerNorm eps other than 1e-6, an mlp_dim timm's int(D * ratio) misses).
    """
    if not math.isclose(model.layernorm_eps, 1e-6, rel_tol=1e-9):
        hint = "; export with --format hf, whose config carries layer_norm_eps" if model.pool == "token" \
            else ""
        raise ValueError(f"timm's ViT LayerNorm eps is fixed at 1e-6 but the model uses "
                         f"layernorm_eps={model.layernorm_eps}{hint}")
    if model.activation not in ACTIVATIONS:
        raise ValueError(f"activation {model.activation!r} has no timm equivalent; choose one of "
                         f"{list(ACTIVATIONS)}")
    mlp_ratio = model.mlp_dim / model.width
    if int(model.width * mlp_ratio) != model.mlp_dim:   # timm builds the MLP with int(dim * mlp_ratio)
        raise ValueError(f"timm cannot express mlp_dim={model.mlp_dim} for width {model.width} as an "
                         f"mlp_ratio")
    k, s, c = model.num_classes, model.image_size, model.in_channels
    gap = model.pool == "gap"
    model_args = dict(
        num_classes=k, img_size=[s, s], patch_size=model.patch_size, in_chans=c,
        embed_dim=model.width, depth=model.depth, num_heads=model.num_heads, mlp_ratio=mlp_ratio,
        qkv_bias=bool(model.qkv_bias), class_token=not gap, global_pool="avg" if gap else "token",
        fc_norm=gap, no_embed_class=False, pos_embed="learn", reg_tokens=0, pre_norm=False,
        final_norm=True, act_layer=ACTIVATIONS[model.activation][0],
    )
    pretrained_cfg = dict(
        tag="vitjax", custom_load=False, input_size=[c, s, s], fixed_input_size=True,
        interpolation="bicubic", crop_pct=0.9, crop_mode="center",
        mean=channel_values(mean, c), std=channel_values(std, c), num_classes=k, pool_size=None,
        first_conv="patch_embed.proj", classifier=["head", "head_dist"] if model.distilled else "head",
    )
    cfg = dict(architecture=_timm_architecture(model), num_classes=k, num_features=model.width,
               global_pool=model_args["global_pool"])
    if label_names is not None:
        if len(label_names) != k:
            raise ValueError(f"{len(label_names)} label names for num_classes={k}")
        cfg["label_names"] = list(label_names)
    cfg["model_args"] = model_args
    cfg["pretrained_cfg"] = pretrained_cfg
    return cfg


def from_timm(state_dict, model, drop_head: bool = False) -> dict:
    """timm ViT/DeiT state dict -> vitjax params for ``model`` (the inner ``params`` dict, numpy).

    ``state_dict``: {name: torch tensor or array} (``model.state_dict()``, a safetensors dict, or a
    checkpoint wrapping it under ``model``/``state_dict``; a DDP ``module.`` prefix is stripped).
    A ``pos_embed`` for another square grid is resized bilinearly (``resize_posemb``). Heads: a class
    count different from ``model.num_classes`` raises unless ``drop_head=True``, which omits
    ``head``/``head_dist`` from the result whether or not the counts match (the caller keeps its own
    head). Any other missing, unexpected or mis-shaped key raises ValueError naming it with expected
    and actual shapes.
    """
    sd = unwrap_state_dict(state_dict)
    expected = timm_shapes(model, heads=not drop_head)
    sd = reconcile(sd, expected, model, drop_head=drop_head, head_names=_TIMM_HEADS,
                    posemb_key="pos_embed", show=lambda k: k, fmt="timm")
    d = dims(model)
    D, H = d["D"], d["H"]
    f: dict[str, np.ndarray] = {}
    if model.pool == "token":
        f["cls"] = sd["cls_token"]
    if model.distilled:
        f["dist"] = sd["dist_token"]
    if model.posemb == "learned":
        f["pos_embedding"] = sd["pos_embed"]
    f["patch_embed/kernel"] = sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)   # OIHW -> HWIO
    f["patch_embed/bias"] = sd["patch_embed.proj.bias"]
    for i in range(model.depth):
        j, b = f"encoder/block{i}/", f"blocks.{i}."
        f[j + "norm1/scale"], f[j + "norm1/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        qkv = sd[b + "attn.qkv.weight"]
        for n, w in zip(("query", "key", "value"), np.split(qkv, 3, axis=0)):
            f[j + f"attn/{n}/kernel"] = w.T.reshape(D, H, -1)
        if model.qkv_bias:
            for n, bb in zip(("query", "key", "value"), np.split(sd[b + "attn.qkv.bias"], 3)):
                f[j + f"attn/{n}/bias"] = bb.reshape(H, -1)
        f[j + "attn/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(H, -1, D)
        f[j + "attn/out/bias"] = sd[b + "attn.proj.bias"]
        f[j + "norm2/scale"], f[j + "norm2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        for n in ("fc1", "fc2"):
            f[j + f"mlp/{n}/kernel"] = sd[b + f"mlp.{n}.weight"].T
            f[j + f"mlp/{n}/bias"] = sd[b + f"mlp.{n}.bias"]
    norm = "fc_norm" if model.pool == "gap" else "norm"
    f["encoder_norm/scale"], f["encoder_norm/bias"] = sd[f"{norm}.weight"], sd[f"{norm}.bias"]
    if not drop_head and model.num_classes > 0:
        for h in (("head", "head_dist") if model.distilled else ("head",)):
            f[f"{h}/kernel"], f[f"{h}/bias"] = sd[f"{h}.weight"].T, sd[f"{h}.bias"]
    return finish(f, model)


_TIMM_MUST = dict(no_embed_class=(False,), reg_tokens=(0,), init_values=(None,), pre_norm=(False,),
                  final_norm=(True,), qk_norm=(False,), proj_bias=(True,), pos_embed=("learn",),
                  norm_layer=(None, "layernorm"), scale_attn_norm=(False,), scale_mlp_norm=(False,),
                  pool_include_prefix=(False,))


def kwargs_from_timm(c: dict) -> dict:
    """timm ``config.json`` (hub layout, or the older flat one) -> vitjax ``ViT`` keyword arguments;
    ValueError for settings vitjax's ViT cannot reproduce."""
    arch = str(c["architecture"]).split(".")[0]
    args = dict(c.get("model_args") or {})
    # hub configs written before timm split them keep the pretrained_cfg fields at the top level
    pcfg = c.get("pretrained_cfg") or {k: v for k, v in c.items() if k not in ("architecture", "model_args")}
    m = _TIMM_NAME_RE.fullmatch(arch)
    base: dict[str, Any] = {}
    if m:
        width, depth, heads = _TIMM_SIZES[m.group(2)]
        base = dict(embed_dim=width, depth=depth, num_heads=heads, patch_size=int(m.group(4)))
        if not pcfg.get("input_size"):              # timm builds fixed-size ViTs at input_size otherwise
            base["img_size"] = int(m.group(5))
    base.update(args)
    missing = [k for k in ("embed_dim", "depth", "num_heads") if k not in base]
    if missing:
        raise ValueError(f"timm architecture {arch!r} is not one whose shape vitjax knows and its model_args "
                         f"lack {missing}")
    for k, allowed in _TIMM_MUST.items():
        if k in base and base[k] not in allowed:
            raise ValueError(f"timm model_args {k}={base[k]!r} has no vitjax ViT equivalent")
    pool = base.get("global_pool", c.get("global_pool", "token"))
    class_token = base.get("class_token", True)
    fc_norm = base.get("fc_norm")
    if pool == "token":
        if fc_norm:
            raise ValueError("timm fc_norm=True with token pooling has no vitjax equivalent")
        vit_pool = "token"
    elif pool == "avg":
        if class_token or fc_norm is False:
            raise ValueError("vitjax's pool='gap' is timm global_pool='avg' with class_token=False and the "
                             f"norm after pooling (fc_norm); this config has class_token={class_token}, "
                             f"fc_norm={fc_norm}")
        vit_pool = "gap"
    else:
        raise ValueError(f"timm global_pool={pool!r} has no vitjax equivalent (token or avg)")
    act = base.get("act_layer") or "gelu"
    acts_in = {v[0]: k for k, v in ACTIVATIONS.items()}
    if act not in acts_in:
        raise ValueError(f"timm act_layer {act!r} has no vitjax equivalent ({sorted(acts_in)})")
    width = int(base["embed_dim"])
    if "img_size" in base:
        size = square_size(base["img_size"], "img_size")
    else:
        size = square_size(pcfg.get("input_size", (3, 224, 224)), "input_size")
    chans = base.get("in_chans") or (pcfg.get("input_size") or (3,))[0]
    num_classes = base.get("num_classes", c.get("num_classes", pcfg.get("num_classes", 1000)))
    return dict(
        width=width, depth=int(base["depth"]), num_heads=int(base["num_heads"]),
        mlp_dim=int(width * float(base.get("mlp_ratio", 4.0))),
        patch_size=square_size(base.get("patch_size", 16), "patch_size"), image_size=size,
        in_channels=int(chans), num_classes=int(num_classes), layernorm_eps=1e-6, pool=vit_pool,
        distilled="distilled" in arch, qkv_bias=bool(base.get("qkv_bias", True)), activation=acts_in[act],
    )
