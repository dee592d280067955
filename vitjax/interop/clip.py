"""CLIP weights between vitjax (``vitjax.models.clip.CLIP``) and PyTorch: open_clip ``CLIP`` and HF
``transformers.CLIPModel``.

Export (vitjax -> PyTorch)::

    from vitjax.interop import clip as ex
    sd, cfg = ex.to_open_clip(params, model), ex.open_clip_config(model)
    net = open_clip.model.CLIP(**cfg); net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})

    ex.write_export("out/hf", ex.to_hf(params, model), ex.hf_config(model))
    net = transformers.CLIPModel.from_pretrained("out/hf")

Import (PyTorch -> vitjax)::

    model = vitjax.create_model("clip", **ex.model_kwargs_from_open_clip(sd))    # or from_hf_config
    params = ex.from_open_clip(sd, model)         # or ex.from_hf(sd, model); ex.import_clip(path, model)

Layouts (D width of a tower, H heads, hd = D / H, E embed_dim; vision as open_clip ``visual.*`` / HF
``vision_model.*``, text at open_clip's top level / HF ``text_model.*``)::

    vitjax                          open_clip                              HF CLIPModel
    img/patch_embed/kernel (P,P,C,D) visual.conv1.weight (D,C,P,P), no bias vision_model.embeddings.patch_embedding
    img/patch_embed/bias (D)        folded into the patch rows of the position table (see below)
    img/cls (1,1,D)                 visual.class_embedding (D)             ...embeddings.class_embedding
    img/pos_embedding (1,1+N,D)     visual.positional_embedding (1+N,D)    ...embeddings.position_embedding.weight
    img/ln_pre                      visual.ln_pre                          vision_model.pre_layrnorm (sic)
    <tower>/encoder/block{i}/       <tower>transformer.resblocks.{i}.      <tower>encoder.layers.{i}.
      norm1, norm2                    ln_1, ln_2                             layer_norm1, layer_norm2
      attn/{query,key,value}          attn.in_proj_weight (3D,D) [q;k;v]     self_attn.{q,k,v}_proj
      attn/out (H,hd,D)               attn.out_proj                          self_attn.out_proj
      mlp/fc1, mlp/fc2                mlp.c_fc, mlp.c_proj                   mlp.fc1, mlp.fc2
    img/encoder_norm                visual.ln_post                         vision_model.post_layernorm
    img_proj/kernel (D,E)           visual.proj (D,E), used as x @ proj    visual_projection.weight (E,D)
    txt/token_embed/embedding       token_embedding.weight (V,D)           text_model.embeddings.token_embedding
    txt/pos_embedding (T,D)         positional_embedding (T,D)             ...embeddings.position_embedding.weight
    txt/encoder_norm                ln_final                               text_model.final_layer_norm
    txt_proj/kernel (D,E)           text_projection (D,E)                  text_projection.weight (E,D)
    logits/scale, logits/bias       logit_scale, logit_bias                logit_scale (no bias in HF CLIP)

The vitjax patch embedding has a bias; OpenAI's conv has none. Because every patch token gets the
same bias and then its own position row, adding the bias to the position rows of the patches
(not the class row) gives the same function exactly: that is what export does, and import sets the
bias to zero. Only the OpenAI layout is expressible in these libraries: a class-token image tower
(``vision_pool="token"``) with ``ln_pre`` for HF, a causal text tower pooled at the end token.

Registered converters (``vitjax.interop.registry``): ``(CLIP, "open_clip")`` and ``(CLIP, "hf")``,
both ways (no ``drop_head``: CLIP has no classifier), told apart on import by ``detect_format``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from vitjax.interop.registry import register_converter, register_detector
from vitjax.interop.state_dict import (export_shapes, f32, flat_params, params_tree, read_state_dict, to_numpy,
                                       unwrap_state_dict, write_export)
from vitjax.models.clip import CLIP
from vitjax.models.posemb import sincos_2d_with_prefix

__all__ = ["to_open_clip", "open_clip_config", "from_open_clip", "model_kwargs_from_open_clip",
           "to_hf", "hf_config", "from_hf", "export_blockers", "model_kwargs_from_hf_config", "detect_format", "import_clip",
           "write_export"]

_OC_ACTS = {"gelu": (False, None), "quick_gelu": (True, None), "gelu_tanh": (False, {"approximate": "tanh"})}
_HF_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_tanh": "gelu_pytorch_tanh"}
_HF_ACTS_IN = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_new": "gelu_tanh"}


# ----------------------------------------------------------------------------------------- checks


def export_blockers(model, fmt: str) -> list[str]:
    """Every setting of ``model`` that ``fmt`` ("open_clip" or "hf") cannot express, each with the
    config change that removes it (all at once: a user retrains once, not once per blocker)."""
    why = []
    if model.vision_pool != "token":
        why.append(f"model.vision_pool={model.vision_pool!r}: only class-token image towers exist there "
                   f"(set model.vision_pool='token')")
    if not model.text_causal:
        why.append("model.text_causal=False: CLIP text towers are causal (set model.text_causal=True)")
    if model.activation not in (_OC_ACTS if fmt == "open_clip" else _HF_ACTS):
        why.append(f"model.activation={model.activation!r} has no equivalent there (use one of "
                   f"{sorted(_OC_ACTS if fmt == 'open_clip' else _HF_ACTS)})")
    for tower, width, heads in (("vision", model.vision_width, model.vision_heads),
                                ("text", model.text_width, model.text_heads)):
        if width % heads:
            why.append(f"model.{tower}_width={width} is not divisible by model.{tower}_heads={heads}")
    if fmt == "open_clip" and model.in_channels != 3:
        why.append(f"model.in_channels={model.in_channels}: open_clip image towers take 3 channels (set "
                   f"model.in_channels=3 and add dict(op='to_rgb') to the input ops)")
    if fmt == "hf":
        if not model.vision_pre_norm:
            why.append("model.vision_pre_norm=False: HF CLIP always applies pre_layrnorm (set it True)")
        if model.text_pool == "last":
            why.append("model.text_pool='last': HF CLIP pools at the end token (use 'eos' or 'argmax')")
        if model.text_pool == "eos" and model.eos_id == 2:
            why.append("model.text_pool='eos' with eos_id=2: HF CLIP reads eos_token_id=2 as 'argmax of the "
                       "ids' (the bytes tokenizer ends with id 2; use objective.tokenizer='clip', whose "
                       "end token is its largest id, with model.text_pool='argmax' and model.text_vocab_size=49408)")
        if model.logit_bias_init is not None:
            why.append("a logit bias (SigLIP): HF CLIPModel has none (export with --format open_clip)")
    return why


def _check_exportable(model, fmt: str) -> None:
    why = export_blockers(model, fmt)
    if why:
        name = "open_clip" if fmt == "open_clip" else "HF CLIPModel"
        raise ValueError(f"this CLIP cannot be written as {name}: " + "; ".join(why))


def _heads(width: int, heads: int) -> int:
    if width % heads:
        raise ValueError(f"width {width} is not divisible by {heads} heads")
    return width // heads


# ------------------------------------------------------------------------------------ one block


def _block_out(flat, jp: str, tp: str, fmt: str) -> dict[str, np.ndarray]:
    """vitjax block ``jp`` (e.g. 'img/encoder/block0') -> torch keys under ``tp``."""
    g = lambda k: flat[f"{jp}/{k}"]  # noqa: E731
    d = g("attn/query/kernel").shape[0]
    out = {}
    ln1, ln2 = ("ln_1", "ln_2") if fmt == "open_clip" else ("layer_norm1", "layer_norm2")
    for jn, tn in (("norm1", ln1), ("norm2", ln2)):
        out[f"{tp}{tn}.weight"], out[f"{tp}{tn}.bias"] = g(f"{jn}/scale"), g(f"{jn}/bias")
    ws = {n: g(f"attn/{n}/kernel").reshape(d, d).T for n in ("query", "key", "value")}
    bs = {n: g(f"attn/{n}/bias").reshape(d) for n in ("query", "key", "value")}
    out_w = g("attn/out/kernel").reshape(d, d).T
    if fmt == "open_clip":
        out[f"{tp}attn.in_proj_weight"] = np.concatenate([ws["query"], ws["key"], ws["value"]], 0)
        out[f"{tp}attn.in_proj_bias"] = np.concatenate([bs["query"], bs["key"], bs["value"]], 0)
        out[f"{tp}attn.out_proj.weight"], out[f"{tp}attn.out_proj.bias"] = out_w, g("attn/out/bias")
        fc1, fc2 = "mlp.c_fc", "mlp.c_proj"
    else:
        for n, tn in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            out[f"{tp}self_attn.{tn}.weight"], out[f"{tp}self_attn.{tn}.bias"] = ws[n], bs[n]
        out[f"{tp}self_attn.out_proj.weight"], out[f"{tp}self_attn.out_proj.bias"] = out_w, g("attn/out/bias")
        fc1, fc2 = "mlp.fc1", "mlp.fc2"
    out[f"{tp}{fc1}.weight"], out[f"{tp}{fc1}.bias"] = g("mlp/fc1/kernel").T, g("mlp/fc1/bias")
    out[f"{tp}{fc2}.weight"], out[f"{tp}{fc2}.bias"] = g("mlp/fc2/kernel").T, g("mlp/fc2/bias")
    return out


def _block_in(sd, tp: str, jp: str, heads: int, fmt: str) -> dict[str, np.ndarray]:
    """torch keys under ``tp`` -> vitjax block ``jp``."""
    out = {}
    ln1, ln2 = ("ln_1", "ln_2") if fmt == "open_clip" else ("layer_norm1", "layer_norm2")
    for jn, tn in (("norm1", ln1), ("norm2", ln2)):
        out[f"{jp}/{jn}/scale"], out[f"{jp}/{jn}/bias"] = sd[f"{tp}{tn}.weight"], sd[f"{tp}{tn}.bias"]
    if fmt == "open_clip":
        w, b = sd[f"{tp}attn.in_proj_weight"], sd[f"{tp}attn.in_proj_bias"]
        d = w.shape[1]
        ws = dict(zip(("query", "key", "value"), np.split(w, 3, axis=0)))
        bs = dict(zip(("query", "key", "value"), np.split(b, 3, axis=0)))
        ow, ob = sd[f"{tp}attn.out_proj.weight"], sd[f"{tp}attn.out_proj.bias"]
        fc1, fc2 = "mlp.c_fc", "mlp.c_proj"
    else:
        ws = {n: sd[f"{tp}self_attn.{tn}.weight"] for n, tn in
              (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))}
        bs = {n: sd[f"{tp}self_attn.{tn}.bias"] for n, tn in
              (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))}
        d = ws["query"].shape[1]
        ow, ob = sd[f"{tp}self_attn.out_proj.weight"], sd[f"{tp}self_attn.out_proj.bias"]
        fc1, fc2 = "mlp.fc1", "mlp.fc2"
    hd = _heads(d, heads)
    for n in ("query", "key", "value"):
        out[f"{jp}/attn/{n}/kernel"] = ws[n].T.reshape(d, heads, hd)
        out[f"{jp}/attn/{n}/bias"] = bs[n].reshape(heads, hd)
    out[f"{jp}/attn/out/kernel"] = ow.T.reshape(heads, hd, d)
    out[f"{jp}/attn/out/bias"] = ob
    out[f"{jp}/mlp/fc1/kernel"], out[f"{jp}/mlp/fc1/bias"] = sd[f"{tp}{fc1}.weight"].T, sd[f"{tp}{fc1}.bias"]
    out[f"{jp}/mlp/fc2/kernel"], out[f"{jp}/mlp/fc2/bias"] = sd[f"{tp}{fc2}.weight"].T, sd[f"{tp}{fc2}.bias"]
    return out


# ------------------------------------------------------------------------------------ the towers


def _vision_pos(flat, model) -> np.ndarray:
    """[1+N, D]: the model's position table with the patch-embedding bias folded into the patch rows."""
    if model.vision_posemb == "learned":
        pos = np.array(flat["img/pos_embedding"][0], np.float32)
    else:
        pos = sincos_2d_with_prefix(model.vision_width, *model.grid, 1)
    pos[1:] += flat["img/patch_embed/bias"]
    return pos


def _export(params, model, fmt: str) -> dict[str, np.ndarray]:
    _check_exportable(model, fmt)
    flat = flat_params(params)
    oc = fmt == "open_clip"
    sd: dict[str, np.ndarray] = {}
    vp, tp = ("visual.", "") if oc else ("vision_model.", "text_model.")
    # image tower
    kernel = flat["img/patch_embed/kernel"].transpose(3, 2, 0, 1)       # HWIO -> OIHW
    cls = flat["img/cls"].reshape(-1)
    pos = _vision_pos(flat, model)
    if oc:
        sd.update({"visual.conv1.weight": kernel, "visual.class_embedding": cls,
                   "visual.positional_embedding": pos})
    else:
        sd.update({"vision_model.embeddings.patch_embedding.weight": kernel,
                   "vision_model.embeddings.class_embedding": cls,
                   "vision_model.embeddings.position_embedding.weight": pos})
    if model.vision_pre_norm:
        ln = "visual.ln_pre" if oc else "vision_model.pre_layrnorm"
        sd[f"{ln}.weight"], sd[f"{ln}.bias"] = flat["img/ln_pre/scale"], flat["img/ln_pre/bias"]
    for i in range(model.vision_depth):
        tpre = f"visual.transformer.resblocks.{i}." if oc else f"vision_model.encoder.layers.{i}."
        sd.update(_block_out(flat, f"img/encoder/block{i}", tpre, fmt))
    ln = "visual.ln_post" if oc else "vision_model.post_layernorm"
    sd[f"{ln}.weight"], sd[f"{ln}.bias"] = flat["img/encoder_norm/scale"], flat["img/encoder_norm/bias"]
    if oc:
        sd["visual.proj"] = flat["img_proj/kernel"]
    else:
        sd["visual_projection.weight"] = flat["img_proj/kernel"].T
    # text tower
    emb, tpos = flat["txt/token_embed/embedding"], flat["txt/pos_embedding"]
    if oc:
        sd["token_embedding.weight"], sd["positional_embedding"] = emb, tpos
    else:
        sd["text_model.embeddings.token_embedding.weight"] = emb
        sd["text_model.embeddings.position_embedding.weight"] = tpos
    for i in range(model.text_depth):
        tpre = f"transformer.resblocks.{i}." if oc else f"text_model.encoder.layers.{i}."
        sd.update(_block_out(flat, f"txt/encoder/block{i}", tpre, fmt))
    ln = "ln_final" if oc else "text_model.final_layer_norm"
    sd[f"{ln}.weight"], sd[f"{ln}.bias"] = flat["txt/encoder_norm/scale"], flat["txt/encoder_norm/bias"]
    if oc:
        sd["text_projection"] = flat["txt_proj/kernel"]
    else:
        sd["text_projection.weight"] = flat["txt_proj/kernel"].T
    sd["logit_scale"] = np.asarray(flat["logits/scale"]).reshape(())
    if model.logit_bias_init is not None:
        sd["logit_bias"] = np.asarray(flat["logits/bias"]).reshape(())
    del vp, tp
    return {k: f32(v) for k, v in sd.items()}        # logit_scale stays 0-d, as both libraries hold it


def to_open_clip(params, model) -> dict[str, np.ndarray]:
    """vitjax CLIP params -> an open_clip ``CLIP`` state dict (numpy float32)."""
    return _export(params, model, "open_clip")


def to_hf(params, model) -> dict[str, np.ndarray]:
    """vitjax CLIP params -> an HF ``CLIPModel`` state dict (numpy float32; on-disk = in-memory names)."""
    return _export(params, model, "hf")


def _norm_kwargs(model):
    return None if abs(model.layernorm_eps - 1e-5) < 1e-12 else {"eps": float(model.layernorm_eps)}


def open_clip_config(model) -> dict[str, Any]:
    """Keyword arguments of ``open_clip.model.CLIP(**cfg)`` building the exported architecture
    (JSON-able; the ``model_cfg`` format of open_clip's model config files)."""
    _check_exportable(model, "open_clip")
    quick, act_kwargs = _OC_ACTS[model.activation]
    vision = dict(layers=model.vision_depth, width=model.vision_width,
                  head_width=_heads(model.vision_width, model.vision_heads),
                  mlp_ratio=model.vision_mlp_dim / model.vision_width, patch_size=model.patch_size,
                  image_size=model.image_size, no_ln_pre=not model.vision_pre_norm, pool_type="tok")
    text = dict(context_length=model.text_context_length, vocab_size=model.text_vocab_size,
                width=model.text_width, heads=model.text_heads, layers=model.text_depth,
                mlp_ratio=model.text_mlp_dim / model.text_width, pool_type=model.text_pool,
                eos_id=int(model.eos_id))
    for cfg in (vision, text):
        if act_kwargs:
            cfg["act_kwargs"] = act_kwargs
        if _norm_kwargs(model):
            cfg["norm_kwargs"] = _norm_kwargs(model)
    out = dict(embed_dim=model.embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=quick,
               init_logit_scale=float(model.logit_scale_init))
    if model.logit_bias_init is not None:
        out["init_logit_bias"] = float(model.logit_bias_init)
    return out


def hf_config(model) -> dict[str, Any]:
    """``config.json`` for ``transformers.CLIPModel.from_pretrained``."""
    _check_exportable(model, "hf")
    act = _HF_ACTS[model.activation]
    # HF pools at the first eos_token_id (or, for the legacy id 2, at the argmax of the ids); for
    # "argmax" pooling the end token is the largest id, vocab - 1.
    eos = model.text_vocab_size - 1 if model.text_pool == "argmax" else int(model.eos_id)
    text = dict(vocab_size=model.text_vocab_size, hidden_size=model.text_width,
                intermediate_size=model.text_mlp_dim, num_hidden_layers=model.text_depth,
                num_attention_heads=model.text_heads, max_position_embeddings=model.text_context_length,
                hidden_act=act, layer_norm_eps=float(model.layernorm_eps), projection_dim=model.embed_dim,
                eos_token_id=eos, bos_token_id=eos - 1 if eos > 0 else 0, pad_token_id=0)
    vision = dict(hidden_size=model.vision_width, intermediate_size=model.vision_mlp_dim,
                  num_hidden_layers=model.vision_depth, num_attention_heads=model.vision_heads,
                  image_size=model.image_size, patch_size=model.patch_size, num_channels=model.in_channels,
                  hidden_act=act, layer_norm_eps=float(model.layernorm_eps), projection_dim=model.embed_dim)
    return {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": model.embed_dim,
            "logit_scale_init_value": float(model.logit_scale_init), "text_config": text,
            "vision_config": vision, "torch_dtype": "float32"}


# ------------------------------------------------------------------------------------------ import


def _expected(model, fmt: str) -> dict[str, tuple]:
    """The torch keys and shapes this model exports to (from abstract shapes; nothing is allocated)."""
    return export_shapes(lambda params, m: _export(params, m, fmt), model)


def _check_keys(sd: Mapping[str, np.ndarray], expected: dict[str, tuple], fmt: str) -> None:
    missing = [k for k in expected if k not in sd]
    if missing:
        raise ValueError(f"the {fmt} checkpoint lacks '{missing[0]}' (shape {expected[missing[0]]}) "
                         f"that this model needs ({len(missing)} missing in all); was it made for another "
                         f"architecture? Build the model with model_kwargs_from_{fmt}(...)")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise ValueError(f"{fmt} tensor '{k}' has shape {tuple(sd[k].shape)} but this model expects "
                             f"{shape}; build the model with model_kwargs_from_{fmt}(...)")
    ignorable = ("attn_mask", "position_ids", "num_batches_tracked")
    extra = [k for k in sd if k not in expected and not k.endswith(ignorable)]
    if extra:
        raise ValueError(f"the {fmt} checkpoint has '{extra[0]}' ({len(extra)} unexpected tensors in all) "
                         f"that this model has no place for (e.g. a different pooling head or a logit "
                         f"bias); build the model with model_kwargs_from_{fmt}(...)")


def _import(state_dict, model, fmt: str) -> dict:
    sd = unwrap_state_dict(state_dict) if not all(isinstance(v, np.ndarray) for v in state_dict.values()) \
        else dict(state_dict)
    sd = {k: np.asarray(to_numpy(v), np.float32) for k, v in sd.items()}
    for k in ("logit_scale", "logit_bias"):
        if k in sd:
            sd[k] = sd[k].reshape(())
    _check_keys(sd, _expected(model, fmt), fmt)
    oc = fmt == "open_clip"
    flat: dict[str, np.ndarray] = {}
    kernel = sd["visual.conv1.weight" if oc else "vision_model.embeddings.patch_embedding.weight"]
    flat["img/patch_embed/kernel"] = kernel.transpose(2, 3, 1, 0)     # OIHW -> HWIO
    flat["img/patch_embed/bias"] = np.zeros((model.vision_width,), np.float32)
    flat["img/cls"] = sd["visual.class_embedding" if oc else "vision_model.embeddings.class_embedding"
                         ].reshape(1, 1, -1)
    pos = sd["visual.positional_embedding" if oc else "vision_model.embeddings.position_embedding.weight"]
    if model.vision_posemb == "learned":
        flat["img/pos_embedding"] = pos[None]
    if model.vision_pre_norm:
        ln = "visual.ln_pre" if oc else "vision_model.pre_layrnorm"
        flat["img/ln_pre/scale"], flat["img/ln_pre/bias"] = sd[f"{ln}.weight"], sd[f"{ln}.bias"]
    for i in range(model.vision_depth):
        tpre = f"visual.transformer.resblocks.{i}." if oc else f"vision_model.encoder.layers.{i}."
        flat.update(_block_in(sd, tpre, f"img/encoder/block{i}", model.vision_heads, fmt))
    ln = "visual.ln_post" if oc else "vision_model.post_layernorm"
    flat["img/encoder_norm/scale"], flat["img/encoder_norm/bias"] = sd[f"{ln}.weight"], sd[f"{ln}.bias"]
    flat["img_proj/kernel"] = sd["visual.proj"] if oc else sd["visual_projection.weight"].T
    flat["txt/token_embed/embedding"] = sd["token_embedding.weight" if oc
                                           else "text_model.embeddings.token_embedding.weight"]
    flat["txt/pos_embedding"] = sd["positional_embedding" if oc
                                   else "text_model.embeddings.position_embedding.weight"]
    for i in range(model.text_depth):
        tpre = f"transformer.resblocks.{i}." if oc else f"text_model.encoder.layers.{i}."
        flat.update(_block_in(sd, tpre, f"txt/encoder/block{i}", model.text_heads, fmt))
    ln = "ln_final" if oc else "text_model.final_layer_norm"
    flat["txt/encoder_norm/scale"], flat["txt/encoder_norm/bias"] = sd[f"{ln}.weight"], sd[f"{ln}.bias"]
    flat["txt_proj/kernel"] = sd["text_projection"] if oc else sd["text_projection.weight"].T
    flat["logits/scale"] = sd["logit_scale"]
    if model.logit_bias_init is not None:
        flat["logits/bias"] = sd["logit_bias"]
    if model.vision_posemb != "learned":
        fixed = _vision_pos({"img/patch_embed/bias": flat["img/patch_embed/bias"]}, model)
        if np.max(np.abs(fixed - pos)) > 1e-4:
            raise ValueError("the checkpoint's image position table is not the fixed sin-cos table this "
                             "model (vision_posemb='sincos2d') uses; build it with vision_posemb='learned'")
    return params_tree(flat, model)


def from_open_clip(state_dict, model) -> dict:
    """open_clip ``CLIP`` state dict (torch tensors or numpy) -> vitjax params (nested dict of numpy)."""
    _check_exportable(model, "open_clip")
    return _import(state_dict, model, "open_clip")


def from_hf(state_dict, model) -> dict:
    """HF ``CLIPModel`` state dict -> vitjax params (nested dict of numpy)."""
    _check_exportable(model, "hf")
    return _import(state_dict, model, "hf")


def model_kwargs_from_open_clip(state_dict, *, vision_heads: int | None = None, text_heads: int | None = None,
                                activation: str = "gelu") -> dict[str, Any]:
    """``create_model("clip", variant=None, **kwargs)`` arguments that fit an open_clip state dict.

    Shapes fix everything except the head counts (default: width / 64, open_clip's head_width, for
    the image tower and width / 64 for the text tower as in OpenAI's models) and the activation,
    which a state dict does not record: OpenAI weights need ``activation="quick_gelu"``."""
    sd = {k: v for k, v in unwrap_state_dict(state_dict).items()}
    v = sd["visual.conv1.weight"]
    dv, c, p, _ = v.shape
    n_pos = sd["visual.positional_embedding"].shape[0]
    grid = int(round((n_pos - 1) ** 0.5))
    depth = lambda pre: len({k.split(".")[len(pre.split(".")) - 1] for k in sd if k.startswith(pre)})  # noqa: E731
    t_len, dt = sd["positional_embedding"].shape
    return dict(
        variant=None, embed_dim=int(sd["text_projection"].shape[1]), image_size=grid * p, patch_size=p,
        in_channels=c, vision_width=dv, vision_depth=depth("visual.transformer.resblocks."),
        vision_heads=vision_heads or dv // 64,
        vision_mlp_dim=int(sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        vision_pool="token", vision_pre_norm="visual.ln_pre.weight" in sd,
        text_vocab_size=int(sd["token_embedding.weight"].shape[0]), text_context_length=t_len,
        text_width=dt, text_depth=depth("transformer.resblocks."), text_heads=text_heads or dt // 64,
        text_mlp_dim=int(sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]), text_pool="argmax",
        activation=activation, layernorm_eps=1e-5,
        logit_bias_init=(float(np.asarray(sd["logit_bias"]).reshape(())) if "logit_bias" in sd else None))


def model_kwargs_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``create_model("clip", variant=None, **kwargs)`` arguments from an HF CLIP ``config.json``."""
    t, v = config["text_config"], config["vision_config"]
    acts = {t.get("hidden_act", "quick_gelu"), v.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or next(iter(acts)) not in _HF_ACTS_IN:
        raise ValueError(f"unsupported HF CLIP activations {sorted(acts)}; vitjax supports one of "
                         f"{sorted(_HF_ACTS_IN)} shared by both towers")
    eos = int(t.get("eos_token_id", 2))
    vocab = int(t.get("vocab_size", 49408))
    return dict(
        variant=None, embed_dim=int(config.get("projection_dim", t.get("projection_dim", 512))),
        image_size=int(v.get("image_size", 224)), patch_size=int(v.get("patch_size", 32)),
        in_channels=int(v.get("num_channels", 3)), vision_width=int(v.get("hidden_size", 768)),
        vision_depth=int(v.get("num_hidden_layers", 12)), vision_heads=int(v.get("num_attention_heads", 12)),
        vision_mlp_dim=int(v.get("intermediate_size", 3072)), vision_pool="token", vision_pre_norm=True,
        text_vocab_size=vocab, text_context_length=int(t.get("max_position_embeddings", 77)),
        text_width=int(t.get("hidden_size", 512)), text_depth=int(t.get("num_hidden_layers", 12)),
        text_heads=int(t.get("num_attention_heads", 8)), text_mlp_dim=int(t.get("intermediate_size", 2048)),
        text_pool="argmax" if eos == 2 else "eos", eos_id=eos,
        activation=_HF_ACTS_IN[next(iter(acts))], layernorm_eps=float(t.get("layer_norm_eps", 1e-5)))


def detect_format(state_dict, name: str = "this state dict") -> str:
    """``"hf"`` (``vision_model.*`` keys) or ``"open_clip"`` (``visual.*``); ValueError naming ``name``
    (the checkpoint's path, for ``import_clip``) if neither."""
    if any(k.startswith("vision_model.") for k in state_dict):
        return "hf"
    if any(k.startswith("visual.") for k in state_dict):
        return "open_clip"
    raise ValueError(f"{name} is neither an open_clip (visual.*) nor an HF CLIPModel (vision_model.*) checkpoint")


def import_clip(path: str | os.PathLike, model) -> dict:
    """A checkpoint file or folder (``read_state_dict``) of open_clip or HF CLIP -> vitjax params."""
    sd = read_state_dict(path)
    return (from_hf if detect_format(sd, str(path)) == "hf" else from_open_clip)(sd, model)


register_converter(CLIP, "open_clip", export=to_open_clip, config=open_clip_config, load=from_open_clip,
                   drop_head=False, blockers=lambda model: export_blockers(model, "open_clip"))
register_converter(CLIP, "hf", kind="hf_clip", export=to_hf, config=hf_config, load=from_hf, drop_head=False,
                   blockers=lambda model: export_blockers(model, "hf"))
register_detector(CLIP, detect_format)
