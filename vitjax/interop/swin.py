"""Swin weights between vitjax (Flax) and PyTorch: timm ``SwinTransformer`` / ``SwinTransformerV2`` and HF
``SwinForImageClassification``.

Export::

    from vitjax.interop.swin import to_timm, timm_config, to_hf, hf_config
    from vitjax.interop.state_dict import write_export
    write_export("out/timm", to_timm(params, model), timm_config(model))
    timm.create_model("local-dir:out/timm", pretrained=True)
    write_export("out/hf", to_hf(params, model), hf_config(model))
    transformers.SwinForImageClassification.from_pretrained("out/hf")

Import::

    params = import_pretrained("dir_or_file", model)      # timm, HF on-disk or HF v5 in-memory names

Layouts (s stage, b block, C_s stage width, H_s heads, hd = 32 usually, W window, K classes):

    vitjax                                 timm                                  HF (on disk, under swin.)
    patch_embed/kernel (P,P,in,C) HWIO     patch_embed.proj.weight (C,in,P,P)    embeddings.patch_embeddings.projection
    patch_norm                             patch_embed.norm                      embeddings.norm
    stage{s}_downsample/norm (4C_{s-1})    layers.{s}.downsample.norm            encoder.layers.{s-1}.downsample.norm
    stage{s}_downsample/reduction          layers.{s}.downsample.reduction       encoder.layers.{s-1}.downsample.
                                                                                   reduction
      kernel (in, out)                       weight (out, in)
    stage{s}_block{b}/norm1, norm2         layers.{s}.blocks.{b}.norm1, norm2    encoder.layers.{s}.blocks.{b}.
                                                                                   layernorm_before, layernorm_after
    .../attn/{query,key,value}/kernel      ...attn.qkv.weight (3C, C)            ...attention.self.{query,key,value}
      (C, H, hd), bias (H, hd)               rows [q; k; v]                        .weight (C, C)
    .../attn/relative_position_bias_table  ...attn.relative_position_bias_table  ...attention.self.
      ((2W-1)^2, H)                                                                relative_position_bias_table
    .../attn/out/kernel (H, hd, C)         ...attn.proj.weight (C, C)            ...attention.output.dense
    .../mlp/fc1, fc2                       ...mlp.fc1, fc2                       ...intermediate.dense, output.dense
    norm                                   norm                                  layernorm
    head (C_last, K)                       head.fc (K, C_last)                   classifier (top level)

Swin v2 (``version=2``, timm ``swinv2_*`` only): ``attn/logit_scale`` (H,) <-> ``attn.logit_scale`` (H,1,1);
``attn/cpb_fc1``, ``cpb_fc2`` <-> ``attn.cpb_mlp.0``, ``attn.cpb_mlp.2``; query/value biases <->
``attn.q_bias``, ``attn.v_bias`` (no key bias); no ``relative_position_bias_table``; the downsample
norm has the output width.

timm downsamples at the start of a stage, HF at the end of the previous one: the same module under
another index. The relative-position index and the shift masks are non-persistent buffers in both
libraries and constants here: nothing to export.

Registered converters (``vitjax.interop.registry``): ``(Swin, "timm")`` and ``(Swin, "hf")``, both
ways, told apart on import by ``detect_format``.
"""
from __future__ import annotations

import math
import os
import re
from typing import Sequence

import numpy as np

from vitjax.interop.registry import register_converter, register_detector
from vitjax.interop.state_dict import (channel_values, f32, flat_params, fmt_shape, inner_mapping, need,
                                       params_tree, read_state_dict, unwrap_state_dict)
from vitjax.models.swin import Swin

__all__ = ["to_timm", "timm_config", "from_timm", "to_hf", "hf_config", "from_hf", "detect_format",
           "import_pretrained"]

_TIMM_SIZES = {(96, (2, 2, 6, 2), (3, 6, 12, 24)): "tiny", (96, (2, 2, 18, 2), (3, 6, 12, 24)): "small",
               (128, (2, 2, 18, 2), (4, 8, 16, 32)): "base", (192, (2, 2, 18, 2), (6, 12, 24, 48)): "large"}


# ----------------------------------------------------------------------------------------------------
# canonical layout: timm names with q/k/v split into attn.q / attn.k / attn.v (torch layouts)


def _canonical_shapes(model, heads: bool = True) -> dict[str, tuple]:
    dims = model.stage_dims
    p, cin = model.patch_size, model.in_channels
    out: dict[str, tuple] = {"patch_embed.proj.weight": (dims[0], cin, p, p), "patch_embed.proj.bias": (dims[0],),
                             "patch_embed.norm.weight": (dims[0],), "patch_embed.norm.bias": (dims[0],)}
    for s, (depth, h) in enumerate(zip(model.depths, model.num_heads)):
        c = dims[s]
        win = model.geometry[s][1]
        v2 = model.version == 2
        if s > 0:
            pre = f"layers.{s}.downsample."
            out[pre + "norm.weight"] = out[pre + "norm.bias"] = (c if v2 else 4 * dims[s - 1],)
            out[pre + "reduction.weight"] = (c, 4 * dims[s - 1])
        m = int(c * model.mlp_ratio)
        for b in range(depth):
            pre = f"layers.{s}.blocks.{b}."
            for n in ("norm1", "norm2"):
                out[pre + n + ".weight"] = out[pre + n + ".bias"] = (c,)
            if v2:
                out[pre + "attn.logit_scale"] = (h, 1, 1)
                out[pre + "attn.cpb_mlp.0.weight"], out[pre + "attn.cpb_mlp.0.bias"] = (512, 2), (512,)
                out[pre + "attn.cpb_mlp.2.weight"] = (h, 512)
            else:
                out[pre + "attn.relative_position_bias_table"] = ((2 * win - 1) ** 2, h)
            for n in ("q", "k", "v"):
                out[pre + f"attn.{n}.weight"] = (c, c)
                if model.qkv_bias and not (v2 and n == "k"):
                    out[pre + f"attn.{n}.bias"] = (c,)
            out[pre + "attn.proj.weight"], out[pre + "attn.proj.bias"] = (c, c), (c,)
            out[pre + "mlp.fc1.weight"], out[pre + "mlp.fc1.bias"] = (m, c), (m,)
            out[pre + "mlp.fc2.weight"], out[pre + "mlp.fc2.bias"] = (c, m), (c,)
    out["norm.weight"] = out["norm.bias"] = (dims[-1],)
    if heads and model.num_classes > 0:
        out["head.fc.weight"], out["head.fc.bias"] = (model.num_classes, dims[-1]), (model.num_classes,)
    return out


def _need(f, key):
    return need(f, key, "Swin")


def _to_canonical(params, model) -> dict[str, np.ndarray]:
    f = flat_params(params)
    out = {"patch_embed.proj.weight": _need(f, "patch_embed/kernel").transpose(3, 2, 0, 1),
           "patch_embed.proj.bias": _need(f, "patch_embed/bias"),
           "patch_embed.norm.weight": _need(f, "patch_norm/scale"),
           "patch_embed.norm.bias": _need(f, "patch_norm/bias")}
    for s, depth in enumerate(model.depths):
        c = model.stage_dims[s]
        if s > 0:
            j, pre = f"stage{s}_downsample/", f"layers.{s}.downsample."
            out[pre + "norm.weight"], out[pre + "norm.bias"] = _need(f, j + "norm/scale"), f[j + "norm/bias"]
            out[pre + "reduction.weight"] = _need(f, j + "reduction/kernel").T
        for b in range(depth):
            j, pre = f"stage{s}_block{b}/", f"layers.{s}.blocks.{b}."
            for n in ("norm1", "norm2"):
                out[pre + n + ".weight"], out[pre + n + ".bias"] = _need(f, j + n + "/scale"), f[j + n + "/bias"]
            if model.version == 2:
                out[pre + "attn.logit_scale"] = _need(f, j + "attn/logit_scale").reshape(-1, 1, 1)
                out[pre + "attn.cpb_mlp.0.weight"] = _need(f, j + "attn/cpb_fc1/kernel").T
                out[pre + "attn.cpb_mlp.0.bias"] = _need(f, j + "attn/cpb_fc1/bias")
                out[pre + "attn.cpb_mlp.2.weight"] = _need(f, j + "attn/cpb_fc2/kernel").T
            else:
                out[pre + "attn.relative_position_bias_table"] = _need(f, j + "attn/relative_position_bias_table")
            for n, t in (("query", "q"), ("key", "k"), ("value", "v")):
                out[pre + f"attn.{t}.weight"] = _need(f, j + f"attn/{n}/kernel").reshape(c, -1).T
                if model.qkv_bias and not (model.version == 2 and t == "k"):
                    out[pre + f"attn.{t}.bias"] = _need(f, j + f"attn/{n}/bias").reshape(-1)
            out[pre + "attn.proj.weight"] = _need(f, j + "attn/out/kernel").reshape(-1, c).T
            out[pre + "attn.proj.bias"] = f[j + "attn/out/bias"]
            for n in ("fc1", "fc2"):
                out[pre + f"mlp.{n}.weight"] = _need(f, j + f"mlp/{n}/kernel").T
                out[pre + f"mlp.{n}.bias"] = f[j + f"mlp/{n}/bias"]
    out["norm.weight"], out["norm.bias"] = _need(f, "norm/scale"), f["norm/bias"]
    if model.num_classes > 0:
        out["head.fc.weight"], out["head.fc.bias"] = _need(f, "head/kernel").T, f["head/bias"]
    return {k: f32(v) for k, v in out.items()}


def _check_canonical(sd, model, *, drop_head: bool, show, fmt: str):
    expected = _canonical_shapes(model, heads=not drop_head)
    sd = dict(sd)
    if drop_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    for k, shape in expected.items():
        if k not in sd:
            hint = ""
            if k.startswith("head.") and model.num_classes > 0:
                hint = "; pass drop_head=True to keep the model's own head, or build it with num_classes=0"
            raise ValueError(f"missing key '{show(k)}' in the {fmt} checkpoint (expected shape "
                             f"{fmt_shape(shape)}){hint}")
        if tuple(sd[k].shape) != tuple(shape):
            hint = ""
            if k.startswith("head."):
                hint = (f"; the checkpoint has {sd[k].shape[0]} classes: build the model with num_classes="
                        f"{sd[k].shape[0]} or pass drop_head=True")
            elif k.endswith("relative_position_bias_table"):
                hint = " (a different window size: build the model with the checkpoint's window_size)"
            raise ValueError(f"shape mismatch for '{show(k)}': expected {fmt_shape(shape)} (from the vitjax "
                             f"model's configuration), got {fmt_shape(sd[k].shape)}{hint}")
    for k, v in sd.items():
        if k not in expected:
            raise ValueError(f"unexpected key '{show(k)}' (shape {fmt_shape(v.shape)}) in the {fmt} checkpoint: "
                             f"the vitjax Swin (depths={tuple(model.depths)}, num_classes={model.num_classes}) "
                             f"has no such parameter")
    return sd


def _from_canonical(sd, model, drop_head: bool) -> dict:
    f = {"patch_embed/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "patch_embed/bias": sd["patch_embed.proj.bias"],
         "patch_norm/scale": sd["patch_embed.norm.weight"], "patch_norm/bias": sd["patch_embed.norm.bias"]}
    for s, (depth, h) in enumerate(zip(model.depths, model.num_heads)):
        c = model.stage_dims[s]
        if s > 0:
            j, pre = f"stage{s}_downsample/", f"layers.{s}.downsample."
            f[j + "norm/scale"], f[j + "norm/bias"] = sd[pre + "norm.weight"], sd[pre + "norm.bias"]
            f[j + "reduction/kernel"] = sd[pre + "reduction.weight"].T
        for b in range(depth):
            j, pre = f"stage{s}_block{b}/", f"layers.{s}.blocks.{b}."
            for n in ("norm1", "norm2"):
                f[j + n + "/scale"], f[j + n + "/bias"] = sd[pre + n + ".weight"], sd[pre + n + ".bias"]
            if model.version == 2:
                f[j + "attn/logit_scale"] = sd[pre + "attn.logit_scale"].reshape(-1)
                f[j + "attn/cpb_fc1/kernel"] = sd[pre + "attn.cpb_mlp.0.weight"].T
                f[j + "attn/cpb_fc1/bias"] = sd[pre + "attn.cpb_mlp.0.bias"]
                f[j + "attn/cpb_fc2/kernel"] = sd[pre + "attn.cpb_mlp.2.weight"].T
            else:
                f[j + "attn/relative_position_bias_table"] = sd[pre + "attn.relative_position_bias_table"]
            for n, t in (("query", "q"), ("key", "k"), ("value", "v")):
                f[j + f"attn/{n}/kernel"] = sd[pre + f"attn.{t}.weight"].T.reshape(c, h, -1)
                if model.qkv_bias and not (model.version == 2 and t == "k"):
                    f[j + f"attn/{n}/bias"] = sd[pre + f"attn.{t}.bias"].reshape(h, -1)
            f[j + "attn/out/kernel"] = sd[pre + "attn.proj.weight"].T.reshape(h, -1, c)
            f[j + "attn/out/bias"] = sd[pre + "attn.proj.bias"]
            for n in ("fc1", "fc2"):
                f[j + f"mlp/{n}/kernel"] = sd[pre + f"mlp.{n}.weight"].T
                f[j + f"mlp/{n}/bias"] = sd[pre + f"mlp.{n}.bias"]
    f["norm/scale"], f["norm/bias"] = sd["norm.weight"], sd["norm.bias"]
    if not drop_head and model.num_classes > 0:
        f["head/kernel"], f["head/bias"] = sd["head.fc.weight"].T, sd["head.fc.bias"]
    return params_tree(f, model)


def _needs_padding(model) -> bool:
    return any(side % win for side, win, _ in model.geometry)


# ----------------------------------------------------------------------------------------------------
# timm


def to_timm(params, model) -> dict[str, np.ndarray]:
    """vitjax Swin params -> timm ``SwinTransformer`` state dict (float32 numpy, fused ``attn.qkv``)."""
    c = _to_canonical(params, model)
    out = {}
    for k, v in c.items():
        m = k.rsplit(".attn.", 1)
        if len(m) == 2 and model.version == 2 and m[1] in ("q.bias", "v.bias"):
            out[f"{m[0]}.attn.{m[1][0]}_bias"] = v            # v2: q_bias, v_bias (k_bias is a zero buffer)
        elif len(m) == 2 and m[1] in ("q.weight", "q.bias"):
            kind = m[1].split(".")[1]
            out[f"{m[0]}.attn.qkv.{kind}"] = np.concatenate(
                [c[f"{m[0]}.attn.{t}.{kind}"] for t in ("q", "k", "v")], 0)
        elif len(m) == 2 and m[1] in ("k.weight", "k.bias", "v.weight", "v.bias"):
            continue
        else:
            out[k] = v
    return out


def _timm_architecture(model) -> str:
    if model.version == 2:
        return "swinv2_tiny_window8_256"        # model_args override every shape argument
    size = _TIMM_SIZES.get((model.embed_dim, tuple(model.depths), tuple(model.num_heads)))
    if size and model.patch_size == 4 and (model.window_size, model.image_size) in ((7, 224), (12, 384)):
        name = f"swin_{size}_patch4_window{model.window_size}_{model.image_size}"
        if name not in ("swin_tiny_patch4_window12_384", "swin_small_patch4_window12_384"):
            return name
    return "swin_tiny_patch4_window7_224"      # model_args override every shape argument


def timm_config(model, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> dict:
    """config.json for ``timm.create_model("local-dir:<dir>", pretrained=True)``.

    Raises ValueError where timm's Swin cannot express the model: a LayerNorm eps other than 1e-5,
    or HF's pad-before-shift order on maps that need padding.
    """
    if not math.isclose(model.layernorm_eps, 1e-5, rel_tol=1e-9):
        raise ValueError(f"timm's Swin LayerNorm eps is fixed at 1e-5 but the model uses "
                         f"layernorm_eps={model.layernorm_eps}")
    if model.pad_before_shift and _needs_padding(model):
        raise ValueError("the model pads before the cyclic shift (pad_before_shift=True, HF's order) on maps "
                         "that are not a multiple of the window; timm shifts first, so its outputs would "
                         "differ: export with the HF format instead")
    k, s, c = model.num_classes, model.image_size, model.in_channels
    model_args = dict(num_classes=k, img_size=[s, s], patch_size=model.patch_size, in_chans=c,
                      embed_dim=model.embed_dim, depths=list(model.depths), num_heads=list(model.num_heads),
                      window_size=model.window_size, mlp_ratio=model.mlp_ratio, qkv_bias=bool(model.qkv_bias),
                      global_pool="avg")
    pretrained_cfg = dict(tag="vitjax", custom_load=False, input_size=[c, s, s], fixed_input_size=True,
                          interpolation="bicubic", crop_pct=0.9, crop_mode="center",
                          mean=channel_values(mean, c), std=channel_values(std, c), num_classes=k, pool_size=None,
                          first_conv="patch_embed.proj", classifier="head.fc")
    return dict(architecture=_timm_architecture(model), num_classes=k, num_features=model.num_features,
                global_pool="avg", model_args=model_args, pretrained_cfg=pretrained_cfg)


def from_timm(state_dict, model, drop_head: bool = False) -> dict:
    """timm Swin state dict -> vitjax params for ``model`` (the inner ``params`` dict, numpy).

    Accepts the original Microsoft layout too (downsample at the end of a stage, ``head.*``), as
    timm's own ``checkpoint_filter_fn`` does; buffers (``relative_position_index``, ``attn_mask``)
    are ignored. Any other missing, unexpected or mis-shaped key raises ValueError naming it.
    """
    sd = {k: v for k, v in unwrap_state_dict(state_dict).items()
          if not k.endswith(("relative_position_index", "attn_mask", "relative_coords_table", "attn.k_bias"))}
    if "layers.0.downsample.reduction.weight" in sd:      # original Swin: downsample at the end of stage s
        sd = {re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
              .replace("head.", "head.fc.") if not k.startswith("head.fc.") else k: v for k, v in sd.items()}
    canon = {}
    for k, v in sd.items():
        if k.endswith((".attn.qkv.weight", ".attn.qkv.bias")):
            kind = k.rsplit(".", 1)[1]
            pre = k[: -len(".qkv." + kind)]
            for t, part in zip(("q", "k", "v"), np.split(v, 3, axis=0)):
                canon[f"{pre}.{t}.{kind}"] = part
        elif k.endswith((".attn.q_bias", ".attn.v_bias")):          # Swin v2
            canon[f"{k[:-len('q_bias')]}{k[-6]}.bias"] = v
        else:
            canon[k] = v

    def show(k):
        m = re.match(r"(.*\.attn)\.([qkv])\.(weight|bias)$", k)
        return f"{m.group(1)}.qkv.{m.group(3)}" if m else k
    canon = _check_canonical(canon, model, drop_head=drop_head, show=show, fmt="timm")
    return _from_canonical(canon, model, drop_head)


# ----------------------------------------------------------------------------------------------------
# Hugging Face transformers

def _hf_name(k: str) -> str:
    """canonical (timm-like) name -> HF on-disk name."""
    if k.startswith("head.fc."):
        return "classifier." + k[len("head.fc."):]
    k = k.replace("patch_embed.proj.", "embeddings.patch_embeddings.projection.")
    k = k.replace("patch_embed.norm.", "embeddings.norm.")
    if k.startswith("norm."):
        return "swin.layernorm." + k[len("norm."):]
    m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
    if m:
        return f"swin.encoder.layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
    for a, b in ((".norm1.", ".layernorm_before."), (".norm2.", ".layernorm_after."),
                 (".attn.relative_position_bias_table", ".attention.self.relative_position_bias_table"),
                 (".attn.q.", ".attention.self.query."), (".attn.k.", ".attention.self.key."),
                 (".attn.v.", ".attention.self.value."), (".attn.proj.", ".attention.output.dense."),
                 (".mlp.fc1.", ".intermediate.dense."), (".mlp.fc2.", ".output.dense.")):
        k = k.replace(a, b)
    return "swin." + (k if k.startswith("embeddings.") else "encoder." + k)


# transformers v5 in-memory names -> on-disk names (only attention and MLP inside blocks differ).
_HF_V5 = ((".attention.q_proj.", ".attention.self.query."), (".attention.k_proj.", ".attention.self.key."),
          (".attention.v_proj.", ".attention.self.value."), (".attention.o_proj.", ".attention.output.dense."),
          (".attention.relative_position_bias.relative_position_bias_table",
           ".attention.self.relative_position_bias_table"),
          (".mlp.fc1.", ".intermediate.dense."), (".mlp.fc2.", ".output.dense."))


def to_hf(params, model) -> dict[str, np.ndarray]:
    """vitjax Swin params -> HF ``SwinForImageClassification`` state dict with the on-disk (hub) names,
    which ``from_pretrained`` of transformers v4 and v5 reads."""
    return {_hf_name(k): v for k, v in _to_canonical(params, model).items()}


def hf_config(model, *, label_names: Sequence[str] | None = None) -> dict:
    """config.json (SwinConfig) matching ``to_hf``'s weights. Raises ValueError where HF's Swin differs:
    timm's shift-then-pad order on maps that need padding (build with ``pad_before_shift=True``), and
    maps smaller than the window, which HF cannot run."""
    if model.version != 1:
        raise ValueError("only Swin v1 exports to Hugging Face here (SwinForImageClassification); export a Swin v2 "
                         "with the timm format")
    if not model.pad_before_shift and _needs_padding(model):
        raise ValueError("the model shifts before padding (pad_before_shift=False, timm's order) on maps that "
                         "are not a multiple of the window; HF pads first, so its outputs would differ: export "
                         "with the timm format, or build the model with pad_before_shift=True")
    small = [s + 1 for s, (_, win, _) in enumerate(model.geometry) if win < model.window_size]
    if small:
        raise ValueError(f"stage(s) {small} of the model have maps smaller than window_size={model.window_size} "
                         f"(the window shrinks to the map there); HF's Swin keeps the full-size bias table and "
                         f"fails on such maps: use the timm format, or a larger image_size")
    k = model.num_classes
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} label names for num_classes={k}")
    return dict(architectures=["SwinForImageClassification"], model_type="swin", image_size=model.image_size,
                patch_size=model.patch_size, num_channels=model.in_channels, embed_dim=model.embed_dim,
                depths=list(model.depths), num_heads=list(model.num_heads), window_size=model.window_size,
                mlp_ratio=float(model.mlp_ratio), qkv_bias=bool(model.qkv_bias), hidden_act="gelu",
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
                use_absolute_embeddings=False, layer_norm_eps=float(model.layernorm_eps),
                initializer_range=0.02, encoder_stride=32,
                id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
                dtype="float32")


def from_hf(state_dict, model, drop_head: bool = False) -> dict:
    """HF Swin (v1) state dict (on-disk names, or transformers v5 in-memory ones) -> vitjax params.

    ``SwinModel`` checkpoints (no ``swin.`` prefix) load too; the pooler has no parameters and
    ``embeddings.mask_token`` (masked image modelling only) is dropped.
    """
    sd = {}
    for k, v in unwrap_state_dict(state_dict).items():
        if k.endswith(("relative_position_index", "mask_token")):
            continue
        for a, b in _HF_V5:
            k = k.replace(a, b)
        if not k.startswith(("swin.", "classifier.")):
            k = "swin." + k
        sd[k] = v
    inverse = {_hf_name(k): k for k in _canonical_shapes(model, heads=True)}
    canon = {inverse.get(k, k): v for k, v in sd.items()}
    canon = _check_canonical(canon, model, drop_head=drop_head, show=_hf_name, fmt="Hugging Face")
    return _from_canonical(canon, model, drop_head)


def detect_format(state_dict) -> str:
    """``"timm"`` or ``"hf"`` from a Swin state dict's key names."""
    keys = [str(k) for k in inner_mapping(state_dict)]
    if any("embeddings.patch_embeddings.projection" in k for k in keys):
        return "hf"
    if any(k.startswith(("patch_embed.", "module.patch_embed.")) for k in keys):
        return "timm"
    raise ValueError(f"cannot tell whether this state dict is a timm or Hugging Face Swin: neither "
                     f"'patch_embed.proj.weight' nor '*embeddings.patch_embeddings.projection.weight' is among "
                     f"its keys; first keys: {keys[:5]}")


def import_pretrained(path: str | os.PathLike, model, drop_head: bool = False) -> dict:
    """``read_state_dict`` -> ``from_timm`` / ``from_hf`` by the key names."""
    sd = read_state_dict(path)
    return (from_timm if detect_format(sd) == "timm" else from_hf)(sd, model, drop_head=drop_head)


register_converter(Swin, "timm", export=to_timm, config=timm_config, load=from_timm, takes_normalisation=True)
register_converter(Swin, "hf", kind="hf_swin", export=to_hf, config=hf_config, load=from_hf)
register_detector(Swin, detect_format)
