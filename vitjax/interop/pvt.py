"""PVT v2 weights between vitjax (Flax) and timm ``PyramidVisionTransformerV2`` (``pvt_v2_*``).

    from vitjax.interop.pvt import to_timm, timm_config, from_timm
    from vitjax.interop.state_dict import write_export
    write_export("out", to_timm(params, model), timm_config(model))
    timm.create_model("local-dir:out", pretrained=True)
    params = from_timm(timm_model.state_dict(), model)

Layouts (s stage, b block, C stage width, M MLP width):

    vitjax                                    timm
    patch_embed/proj (7,7,in,C) HWIO, /norm   patch_embed.proj.weight (C,in,7,7), patch_embed.norm
    stage{s}_downsample/proj, /norm           stages.{s}.downsample.proj, .norm            (s >= 1)
    stage{s}_block{b}/norm1, norm2            stages.{s}.blocks.{b}.norm1, norm2
    .../attn/query/kernel (C, H, hd)          ...attn.q.weight (C, C)
    .../attn/{key,value}/kernel (C, H, hd)    ...attn.kv.weight (2C, C), rows [k; v]
    .../attn/out/kernel (H, hd, C)            ...attn.proj.weight (C, C)
    .../attn/sr (conv), sr_norm               ...attn.sr, attn.norm
    .../mlp/fc1, fc2 (in, out)                ...mlp.fc1, fc2 (out, in)
    .../mlp/dwconv (3,3,1,M)                  ...mlp.dwconv.weight (M,1,3,3)
    stage{s}_norm                             stages.{s}.norm
    head (C4, K)                              head (K, C4)

PVT v1 has no timm counterpart (timm ships only v2), so only ``version=2`` models convert.
Registered as the ``(PVT, "timm")`` converter (``vitjax.interop.registry``), both ways.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vitjax.interop.registry import register_converter
from vitjax.interop.state_dict import (channel_values, f32, flat_params, fmt_shape, model_shapes, need,
                                       params_tree, unwrap_state_dict)
from vitjax.models.pvt import PVT

__all__ = ["to_timm", "from_timm", "timm_config"]

_TIMM_NAMES = {"b0", "b1", "b2", "b3", "b4", "b5"}


def _check_model(model):
    if model.version != 2:
        raise ValueError("only PVT v2 models convert to/from timm (timm has no PVT v1)")


def _pairs(model):
    """[(vitjax key, timm key, kind)]; kinds: conv, dense, same, q, k, v, out."""
    out = [("patch_embed/proj/kernel", "patch_embed.proj.weight", "conv"),
           ("patch_embed/proj/bias", "patch_embed.proj.bias", "same"),
           ("patch_embed/norm/scale", "patch_embed.norm.weight", "same"),
           ("patch_embed/norm/bias", "patch_embed.norm.bias", "same")]
    for s, depth in enumerate(model.depths):
        if s > 0:
            j, t = f"stage{s}_downsample/", f"stages.{s}.downsample."
            out += [(j + "proj/kernel", t + "proj.weight", "conv"), (j + "proj/bias", t + "proj.bias", "same"),
                    (j + "norm/scale", t + "norm.weight", "same"), (j + "norm/bias", t + "norm.bias", "same")]
        for b in range(depth):
            j, t = f"stage{s}_block{b}/", f"stages.{s}.blocks.{b}."
            for n in ("norm1", "norm2"):
                out += [(j + n + "/scale", t + n + ".weight", "same"), (j + n + "/bias", t + n + ".bias", "same")]
            out += [(j + "attn/query/kernel", t + "attn.q.weight", "q")]
            out += [(j + "attn/key/kernel", t + "attn.kv.weight", "k"),
                    (j + "attn/value/kernel", t + "attn.kv.weight", "v")]
            if model.qkv_bias:
                out += [(j + "attn/query/bias", t + "attn.q.bias", "q"), (j + "attn/key/bias", t + "attn.kv.bias", "k"),
                        (j + "attn/value/bias", t + "attn.kv.bias", "v")]
            out += [(j + "attn/out/kernel", t + "attn.proj.weight", "out"),
                    (j + "attn/out/bias", t + "attn.proj.bias", "same")]
            if model.linear or model.sr_ratios[s] > 1:
                out += [(j + "attn/sr/kernel", t + "attn.sr.weight", "conv"),
                        (j + "attn/sr/bias", t + "attn.sr.bias", "same"),
                        (j + "attn/sr_norm/scale", t + "attn.norm.weight", "same"),
                        (j + "attn/sr_norm/bias", t + "attn.norm.bias", "same")]
            out += [(j + "mlp/fc1/kernel", t + "mlp.fc1.weight", "dense"),
                    (j + "mlp/fc1/bias", t + "mlp.fc1.bias", "same"),
                    (j + "mlp/dwconv/kernel", t + "mlp.dwconv.weight", "conv"),
                    (j + "mlp/dwconv/bias", t + "mlp.dwconv.bias", "same"),
                    (j + "mlp/fc2/kernel", t + "mlp.fc2.weight", "dense"),
                    (j + "mlp/fc2/bias", t + "mlp.fc2.bias", "same")]
        out += [(f"stage{s}_norm/scale", f"stages.{s}.norm.weight", "same"),
                (f"stage{s}_norm/bias", f"stages.{s}.norm.bias", "same")]
    if model.num_classes > 0:
        out += [("head/kernel", "head.weight", "dense"), ("head/bias", "head.bias", "same")]
    return out


def _stage_of(key: str) -> int:
    return int(key.split("_")[0][len("stage"):]) if key.startswith("stage") else 0


def to_timm(params, model) -> dict[str, np.ndarray]:
    """vitjax PVT v2 params -> timm ``PyramidVisionTransformerV2`` state dict (float32 numpy)."""
    _check_model(model)
    f = flat_params(params)
    out: dict[str, np.ndarray] = {}
    kv: dict[str, dict[str, np.ndarray]] = {}
    for jk, tk, kind in _pairs(model):
        x = need(f, jk, "PVT")
        c = model.embed_dims[_stage_of(jk)]
        if kind == "conv":
            out[tk] = x.transpose(3, 2, 0, 1)
        elif kind == "dense":
            out[tk] = x.T
        elif kind in ("q", "k", "v"):
            y = x.reshape(c, -1).T if x.ndim == 3 else x.reshape(-1)
            if kind == "q":
                out[tk] = y
            else:
                kv.setdefault(tk, {})[kind] = y
        elif kind == "out":
            out[tk] = x.reshape(-1, c).T
        else:
            out[tk] = x
    for tk, parts in kv.items():
        out[tk] = np.concatenate([parts["k"], parts["v"]], 0)
    return {k: f32(v) for k, v in out.items()}


def from_timm(state_dict, model, drop_head: bool = False) -> dict:
    """timm ``pvt_v2_*`` state dict -> vitjax params for ``model`` (the inner ``params`` dict, numpy).
    Missing, unexpected or mis-shaped keys raise ValueError naming the timm key."""
    _check_model(model)
    sd = unwrap_state_dict(state_dict)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    pairs = [p for p in _pairs(model) if not (drop_head and p[1].startswith("head."))]
    want = model_shapes(model)
    f = {}
    for jk, tk, kind in pairs:
        if tk not in sd:
            raise ValueError(f"missing key '{tk}' in the timm checkpoint (the vitjax model has '{jk}' of shape "
                             f"{fmt_shape(want[jk])})")
        x = sd[tk]
        c = model.embed_dims[_stage_of(jk)]
        h = model.num_heads[_stage_of(jk)]
        if kind == "conv":
            x = x.transpose(2, 3, 1, 0)
        elif kind == "dense":
            x = x.T
        elif kind in ("q", "k", "v"):
            if kind != "q":
                if x.shape[0] != 2 * c:
                    raise ValueError(f"shape mismatch for '{tk}': expected first dim {2 * c}, got "
                                     f"{fmt_shape(x.shape)}")
                x = x[:c] if kind == "k" else x[c:]
            x = x.T.reshape(c, h, -1) if x.ndim == 2 else x.reshape(h, -1)
        elif kind == "out":
            x = x.T.reshape(h, -1, c)
        if tuple(x.shape) != tuple(want[jk]):
            hint = ""
            if tk == "head.weight":
                hint = (f"; the checkpoint has {sd[tk].shape[0]} classes: build the model with num_classes="
                        f"{sd[tk].shape[0]} or pass drop_head=True")
            raise ValueError(f"shape mismatch for '{tk}': the vitjax model expects {fmt_shape(want[jk])} for "
                             f"'{jk}', the checkpoint gives {fmt_shape(x.shape)} after conversion{hint}")
        f[jk] = x
    used = {tk for _, tk, _ in pairs}
    extra = [k for k in sd if k not in used]
    if extra:
        raise ValueError(f"unexpected key '{extra[0]}' (shape {fmt_shape(sd[extra[0]].shape)}) in the timm "
                         f"checkpoint: the vitjax PVT (depths={tuple(model.depths)}, linear={model.linear}, "
                         f"sr_ratios={tuple(model.sr_ratios)}) has no such parameter")
    return params_tree(f, model)


def timm_config(model, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> dict:
    """config.json for ``timm.create_model("local-dir:<dir>", pretrained=True)``."""
    _check_model(model)
    k, s, c = model.num_classes, model.image_size, model.in_channels
    model_args = dict(num_classes=k, in_chans=c, depths=list(model.depths), embed_dims=list(model.embed_dims),
                      num_heads=list(model.num_heads), sr_ratios=list(model.sr_ratios),
                      mlp_ratios=[float(r) for r in model.mlp_ratios], qkv_bias=bool(model.qkv_bias),
                      linear=bool(model.linear))
    pretrained_cfg = dict(tag="vitjax", custom_load=False, input_size=[c, s, s], fixed_input_size=False,
                          interpolation="bicubic", crop_pct=0.9, crop_mode="center",
                          mean=channel_values(mean, c), std=channel_values(std, c), num_classes=k, pool_size=None,
                          first_conv="patch_embed.proj", classifier="head")
    return dict(architecture="pvt_v2_b2_li" if model.linear else "pvt_v2_b0", num_classes=k,
                num_features=model.embed_dims[-1], global_pool="avg", model_args=model_args,
                pretrained_cfg=pretrained_cfg)


register_converter(PVT, "timm", export=to_timm, config=timm_config, load=from_timm, takes_normalisation=True)
