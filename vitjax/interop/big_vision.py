"""ViT weights between vitjax and the JAX ``.npz`` checkpoints of google-research/vision_transformer
(the AugReg / ViT / DeiT-III-style releases) and google-research/big_vision (ViTs, SigLIP image towers).

Export (vitjax -> npz) and import (npz -> vitjax)::

    from vitjax.interop.big_vision import to_npz, npz_config, write_npz
    write_npz("out/npz", to_npz(params, model), npz_config(model))    # out/npz/model.npz + config.json
    params = import_weights("siglip_b16.npz", tower)                   # vitjax.interop.registry

The CLI is ``python -m vitjax.export --format npz``; ``vitjax.create_model(name, pretrained=...)`` and
``config.init.path`` read ``.npz`` files through ``import_weights`` too.

timm reads the same files with its own loader (``timm.models.vision_transformer._load_weights``), the
reference both directions are tested against. The arrays are flax's own: kernels ``(in, out)``, attention
kernels ``(D, H, hd)`` / ``(H, hd, D)``, the patch kernel HWIO ``(P, P, C, D)``; vitjax holds them the same
way, so the conversion is a renaming plus the position table:

    vitjax                            npz ("vit" layout; "big_vision" where it differs)
    patch_embed/{kernel,bias}         embedding/{kernel,bias}
    cls (1,1,D)                       cls
    pos_embedding (1,T,D)             Transformer/posembed_input/pos_embedding (1,T,D)
                                        big_vision: pos_embedding (1,N,D), patches only (no class row)
    encoder/block{i}/norm1            Transformer/encoderblock_{i}/LayerNorm_0
    encoder/block{i}/attn/{query,key,   .../MultiHeadDotProductAttention_1/...   (big_vision: _0)
      value,out}
    encoder/block{i}/norm2            .../LayerNorm_2                           (big_vision: LayerNorm_1)
    encoder/block{i}/mlp/fc1, fc2     .../MlpBlock_3/Dense_0, Dense_1           (big_vision: MlpBlock_0)
    encoder_norm                      Transformer/encoder_norm
    head/{kernel,bias} (D,K)          head/{kernel,bias}
    map_probe, map_attn, map_norm,    MAPHead_0/probe, MAPHead_0/MultiHeadDotProductAttention_0,
      map_mlp (SigLIP MAP pool)         MAPHead_0/LayerNorm_0, MAPHead_0/MlpBlock_0/Dense_{0,1}

Import also reads big_vision's prefixes (``params/``, ``params/img/``, ``img/``, ``opt/target/``: a whole
SigLIP checkpoint gives its image tower), scanned encoders (``Transformer/encoderblock/...`` with a
leading depth axis) and bf16 arrays, and resizes the position table to the model's grid. A big_vision
class token carries no position: it is imported with a zero position row, and exported to the
big_vision layout with its position folded into ``cls`` (the same function either way).

What the format cannot hold, and so raises ValueError: vitjax's ``pool="gap"`` (it normalises the
average, timm's ``fc_norm``; these repositories normalise the tokens, then average), DeiT's
distillation token, CLIP's ``ln_pre``, and an old checkpoint's ``pre_logits`` layer (import with
``drop_head=True`` to leave it out with the head). The file records no activation: both repositories
compute flax's ``nn.gelu``, the tanh approximation, which is vitjax's ``activation="gelu_tanh"`` (timm's
``vit_*`` models use the exact GELU with these weights, as vitjax's default ``"gelu"`` does).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Mapping

import ml_dtypes
import numpy as np

from vitjax.interop.registry import register_converter
from vitjax.interop.state_dict import f32, flat_params, fmt_shape, model_shapes, need
from vitjax.interop.vit_layout import ACTIVATIONS, dims, finish, posemb_value
from vitjax.models.posemb import resize_posemb
from vitjax.models.vit import ViT

__all__ = ["LAYOUTS", "PREFIXES", "npz_blockers", "npz_names", "to_npz", "npz_config", "write_npz", "write_export",
           "from_npz", "find_prefix", "timm_model_args"]

# (attention, second LayerNorm, MLP) module indices inside an encoder block: vision_transformer's
# checkpoints number a block's submodules in one sequence (LayerNorm_0, MultiHeadDotProductAttention_1,
# LayerNorm_2, MlpBlock_3), big_vision's per module type (LayerNorm_0/1, ..._0, MlpBlock_0).
LAYOUTS = {"vit": (1, 2, 3), "big_vision": (0, 1, 0)}
# Where a checkpoint's ViT may sit, in the order timm's loader tries them (then any other "x/" prefix).
PREFIXES = ("", "opt/target/", "params/", "params/img/", "img/")
_VIT_POS = "Transformer/posembed_input/pos_embedding"
_BV_POS = "pos_embedding"


def _rules(layout: str) -> list[tuple[re.Pattern, str]]:
    a, n2, m = LAYOUTS[layout]
    blk = r"Transformer/encoderblock_\1/"
    return [(re.compile(p), r) for p, r in (
        (r"^patch_embed/", "embedding/"),
        (r"^cls$", "cls"),
        (r"^encoder/block(\d+)/norm1/", blk + "LayerNorm_0/"),
        (r"^encoder/block(\d+)/attn/", blk + f"MultiHeadDotProductAttention_{a}/"),
        (r"^encoder/block(\d+)/norm2/", blk + f"LayerNorm_{n2}/"),
        (r"^encoder/block(\d+)/mlp/fc1/", blk + f"MlpBlock_{m}/Dense_0/"),
        (r"^encoder/block(\d+)/mlp/fc2/", blk + f"MlpBlock_{m}/Dense_1/"),
        (r"^encoder_norm/", "Transformer/encoder_norm/"),
        (r"^head/", "head/"),
        (r"^map_probe$", "MAPHead_0/probe"),
        (r"^map_attn/", "MAPHead_0/MultiHeadDotProductAttention_0/"),
        (r"^map_norm/", "MAPHead_0/LayerNorm_0/"),
        (r"^map_mlp/fc1/", "MAPHead_0/MlpBlock_0/Dense_0/"),
        (r"^map_mlp/fc2/", "MAPHead_0/MlpBlock_0/Dense_1/"),
    )]


def npz_blockers(model) -> list[str]:
    """Every setting of ``model`` the npz layout has no tensors for ([] when it converts)."""
    out = []
    if model.distilled:
        out.append("a distilled (DeiT) ViT has a distillation token and a second head, which the "
                   "big_vision / vision_transformer npz layout cannot hold; use --format timm or hf")
    if getattr(model, "pre_norm", False):
        out.append("the image tower's ln_pre (pre_norm=True) has no big_vision / vision_transformer npz "
                   "tensor; build the tower with vision_pre_norm=False")
    if model.pool == "gap" and not getattr(model, "attn_pool", False):
        out.append("vitjax's pool='gap' normalises the averaged tokens (timm's fc_norm), while big_vision and "
                   "vision_transformer normalise the tokens and then average, so such a model has no npz "
                   "equivalent; use pool='token' or a MAP-pooled tower (or export it with --format timm)")
    return out


def _check_convertible(model) -> None:
    """ValueError with every reason the npz layout cannot hold ``model``."""
    why = npz_blockers(model)
    if why:
        raise ValueError("; ".join(why))


def npz_names(model, layout: str = "vit") -> dict[str, str]:
    """{vitjax parameter: npz key (no prefix)} for every parameter of ``model`` except the position
    table (which the layouts store differently). ValueError for a model the layout cannot hold."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown npz layout {layout!r}; expected one of {list(LAYOUTS)}")
    _check_convertible(model)
    rules, out = _rules(layout), {}
    for k in model_shapes(model):
        if k == "pos_embedding":
            continue
        for pat, rep in rules:
            if pat.search(k):
                out[k] = pat.sub(rep, k)
                break
        else:
            raise ValueError(f"vitjax parameter '{k}' has no big_vision / vision_transformer npz equivalent")
    return out


def _default_layout(model) -> str:
    # SigLIP towers come from big_vision; class-token classifiers as the AugReg releases (vision_transformer).
    return "big_vision" if getattr(model, "attn_pool", False) else "vit"


def to_npz(params, model, layout: str | None = None) -> dict[str, np.ndarray]:
    """vitjax ViT params -> {npz key: float32 array} in ``layout`` ("vit": vision_transformer's
    AugReg layout, the default for class-token models; "big_vision": the default for MAP-pooled
    SigLIP towers). Sin-cos models write their fixed table as the learned one."""
    layout = layout or _default_layout(model)
    f = flat_params(params)
    out = {npz: need(f, k) for k, npz in npz_names(model, layout).items()}
    pe = posemb_value(f, model)
    p = model.num_prefix_tokens
    if layout == "vit":
        out[_VIT_POS] = pe
    else:                                      # big_vision adds positions to patches only
        out[_BV_POS] = pe[:, p:]
        if p:
            out["cls"] = out["cls"] + pe[:, :p]
    return {k: f32(v) for k, v in out.items()}


def timm_model_args(model, layout: str | None = None) -> dict:
    """Keyword arguments of the timm ``VisionTransformer`` that ``_load_weights`` fills from this npz."""
    layout = layout or _default_layout(model)
    d = dims(model)
    token = model.pool == "token"
    return dict(img_size=model.image_size, patch_size=model.patch_size, in_chans=model.in_channels,
                num_classes=model.num_classes, embed_dim=d["D"], depth=model.depth, num_heads=d["H"],
                mlp_ratio=model.mlp_dim / model.width, qkv_bias=bool(model.qkv_bias), class_token=token,
                global_pool="token" if token else "map", no_embed_class=layout == "big_vision" and token,
                fc_norm=False, act_layer=ACTIVATIONS.get(model.activation, (model.activation,))[0])


def npz_config(model, layout: str | None = None) -> dict:
    """config.json beside ``model.npz``: the layout, and the timm model the loader fills."""
    _check_convertible(model)
    layout = layout or _default_layout(model)
    return dict(format="npz", layout=layout, timm_model_args=timm_model_args(model, layout),
                layernorm_eps=model.layernorm_eps, activation=model.activation)


def write_npz(out_dir: str | os.PathLike, arrays: Mapping[str, np.ndarray], config: dict) -> Path:
    """Writes ``out_dir/model.npz`` (uncompressed, as both repositories save) and ``out_dir/config.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "model.npz", **{k: np.asarray(v) for k, v in arrays.items()})
    with open(out / "config.json", "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return out


write_export = write_npz       # the registry's writer interface: write_export(out_dir, state_dict, config)
WEIGHTS_FILE = "model.npz"     # the file write_export writes the weights to (the CLI prints it)


def find_prefix(w: Mapping[str, np.ndarray]) -> str:
    """The prefix under which a checkpoint holds its ViT (``embedding/kernel``); ValueError when none
    or more than one."""
    found = [p for p in PREFIXES if f"{p}embedding/kernel" in w]
    found += sorted({k[:-len("embedding/kernel")] for k in w if k.endswith("/embedding/kernel")} - set(found))
    if not found:
        raise ValueError(f"not a big_vision / vision_transformer ViT checkpoint: no 'embedding/kernel' key "
                         f"under any prefix; first keys: {sorted(w)[:5]}")
    if len(found) > 1 and found[0] not in PREFIXES:
        raise ValueError(f"the checkpoint holds several ViTs (prefixes {found}); import from one file each")
    return found[0]


def _float32(v) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype.kind == "V" and v.dtype.itemsize == 2:   # bf16 that numpy saved as raw 2-byte records
        v = v.view(ml_dtypes.bfloat16)
    return v.astype(np.float32)


def _unscan(w: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """big_vision's scanned encoder (``Transformer/encoderblock/...`` stacked on a depth axis) -> one
    ``encoderblock_{i}`` per layer."""
    scanned = "Transformer/encoderblock/"
    out = {}
    for k, v in w.items():
        if k.startswith(scanned):
            for i in range(v.shape[0]):
                out[f"Transformer/encoderblock_{i}/{k[len(scanned):]}"] = v[i]
        else:
            out[k] = v
    return out


def _layout_of(w: Mapping[str, np.ndarray]) -> str:
    for layout, (a, _, _) in LAYOUTS.items():
        if any(k.startswith(f"Transformer/encoderblock_0/MultiHeadDotProductAttention_{a}/") for k in w):
            return layout
    raise ValueError("no 'Transformer/encoderblock_0/MultiHeadDotProductAttention_*' tensors: not a ViT "
                     "encoder in the big_vision / vision_transformer layout")


def _position_table(w: dict[str, np.ndarray], model, show) -> np.ndarray:
    """The checkpoint's position table as vitjax's (1, prefix + N, D) on the model's grid."""
    p, d = model.num_prefix_tokens, dims(model)
    want = (1, d["T"], d["D"])
    key = _VIT_POS if _VIT_POS in w else _BV_POS
    if key not in w:
        raise ValueError(f"missing tensor '{show(_VIT_POS)}' (or big_vision's '{show(_BV_POS)}'): the vitjax "
                         f"model expects a position table of shape {fmt_shape(want)}")
    pe = np.asarray(w.pop(key), np.float32)
    pe = pe[None] if pe.ndim == 2 else pe
    has_prefix = key == _VIT_POS and "cls" in w    # vision_transformer embeds the class token's position
    n = pe.shape[1] - (1 if has_prefix else 0) if pe.ndim == 3 else -1
    g = math.isqrt(n) if n > 0 else 0
    if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != d["D"] or g * g != n:
        raise ValueError(f"shape mismatch for '{show(key)}': the checkpoint has {fmt_shape(pe.shape)}, the "
                         f"vitjax model expects {fmt_shape(want)} (width {d['D']}, a square grid of patches)")
    head_rows = pe[:, :1] if has_prefix else np.zeros((1, p, d["D"]), np.float32)
    patches = pe[:, 1:] if has_prefix else pe
    if (g, g) != model.grid:
        patches = np.asarray(resize_posemb(patches, 0, (g, g), model.grid))
    table = np.concatenate([head_rows[:, :p], patches], axis=1)
    if model.posemb != "learned":
        err = float(np.max(np.abs(table - posemb_value({}, model))))
        if err > 1e-4:
            raise ValueError(f"'{show(key)}' is not the fixed 2-D sin-cos table this model (posemb='sincos2d') "
                             f"adds (max abs difference {err:.3g}); build the model with posemb='learned'")
    return table.reshape(want)


def from_npz(state_dict: Mapping[str, np.ndarray], model, drop_head: bool = False) -> dict:
    """A big_vision / vision_transformer npz ({key: array}) -> vitjax params for ``model`` (the inner
    ``params`` dict, numpy, ``model.param_dtype``).

    The first missing, mis-shaped or unexpected tensor is a one-line ValueError naming it with the
    checkpoint's and the model's shapes. ``drop_head``: leave the classifier head (and an old
    checkpoint's ``pre_logits``) out of the result, whatever its class count.
    """
    w = {str(k): _float32(v) for k, v in state_dict.items()}
    prefix = find_prefix(w)
    show = lambda k: prefix + k  # noqa: E731
    w = _unscan({k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)})
    layout = _layout_of(w)
    names = npz_names(model, layout)
    pos = _position_table(w, model, show)
    if "pre_logits/kernel" in w and not drop_head:
        raise ValueError(f"the checkpoint has a '{show('pre_logits/kernel')}' layer (a tanh representation "
                         f"layer before the head) that vitjax's ViT lacks; import with drop_head=True to "
                         f"leave it out with the head")
    if drop_head:
        for k in [k for k in w if k.startswith(("head/", "pre_logits/"))]:
            del w[k]
        names = {k: v for k, v in names.items() if not k.startswith("head/")}
    elif model.num_classes == 0 and "head/kernel" in w:
        k = w["head/kernel"].shape[-1]
        raise ValueError(f"the checkpoint has a classifier head '{show('head/kernel')}' of shape "
                         f"{fmt_shape(w['head/kernel'].shape)} but the model has num_classes=0; pass "
                         f"drop_head=True to discard it, or build the model with num_classes={k}")
    want = model_shapes(model)
    f: dict[str, np.ndarray] = {}
    for k, npz in names.items():
        if npz not in w:
            hint = ""
            if npz == "cls":
                hint = " (the checkpoint has no class token: it pools by average or MAP, not pool='token')"
            elif npz.startswith("MAPHead_0/"):
                hint = " (the checkpoint has no MAP head: build the tower with attn_pool=False)"
            elif npz.startswith("head/"):
                hint = " (the checkpoint has no classifier head: pass drop_head=True or num_classes=0)"
            raise ValueError(f"missing tensor '{show(npz)}' in the npz checkpoint (vitjax '{k}', expected "
                             f"shape {fmt_shape(want[k])}){hint}")
        v = w.pop(npz)
        if tuple(v.shape) != tuple(want[k]):
            extra = ""
            if npz.startswith("head/"):
                extra = (f" (num_classes={model.num_classes}; pass drop_head=True to keep the model's own "
                         f"head, or build the model with num_classes={v.shape[-1]})")
            raise ValueError(f"shape mismatch for '{show(npz)}': the checkpoint has {fmt_shape(v.shape)}, the "
                             f"vitjax model expects {fmt_shape(want[k])}{extra} (vitjax '{k}')")
        f[k] = v
    if w:
        k = sorted(w)[0]
        raise ValueError(f"unexpected tensor '{show(k)}' (shape {fmt_shape(w[k].shape)}) in the npz checkpoint: "
                         f"the vitjax model (pool={model.pool!r}, attn_pool={getattr(model, 'attn_pool', False)}, "
                         f"qkv_bias={model.qkv_bias}, depth={model.depth}) has no such parameter")
    if model.posemb == "learned":
        f["pos_embedding"] = pos
    return finish(f, model)


# The module itself is the export writer (its write_export writes model.npz + config.json).
register_converter(ViT, "npz", export=to_npz, config=npz_config, load=from_npz, writer=sys.modules[__name__],
                   blockers=npz_blockers)
