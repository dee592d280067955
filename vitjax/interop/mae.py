"""MAE <-> Hugging Face ``ViTMAEForPreTraining``, and the MAE encoder as a plain ViT backbone.

    state = to_hf(params, model); write_export(out, state, hf_config(model))
    transformers.ViTMAEForPreTraining.from_pretrained(out)        # same loss and predictions for the same noise
    params = from_hf(hf_model.state_dict(), model)                # in-memory (v5) or on-disk names

The encoder is a vitjax ViT (class token, fixed sin-cos positions), so ``encoder_params(params)``
with ``encoder_model(model)`` goes through ``vitjax.interop.vit`` to timm or HF ViT unchanged
(``encoder_to_timm`` / ``encoder_to_hf``). The decoder's blocks are ViT blocks too: HF stores them as
``decoder.decoder_encoder.layer.{i}.*`` on disk (``decoder.decoder_layers.{i}.*`` in transformers v5
memory).

Registered converters (``vitjax.interop.registry``): ``(MAE, "hf")`` the whole model, both ways;
``(MAE, "timm")`` and ``(MAE, "hf_encoder")`` (``--encoder_only``) the encoder as a ViT, export only.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from vitjax.interop import vit as vx
from vitjax.interop.registry import register_converter
from vitjax.interop.state_dict import export_shapes, f32, flat_params, need, params_tree, unwrap_state_dict
from vitjax.models.mae import MAE
from vitjax.models.vit import ViT


def encoder_model(model: MAE, num_classes: int = 0) -> ViT:
    """The MAE's encoder as a ViT (class token, fixed sin-cos positions; no head by default)."""
    return ViT(**dict(model.encoder_config(), num_classes=num_classes))


def encoder_params(params) -> dict:
    """The encoder's parameters (a ViT's tree) out of an MAE's."""
    p = params.get("params", params) if isinstance(params, Mapping) and "encoder" not in params else params
    if "encoder" not in p or "decoder_pred" not in p:
        raise ValueError("these are not MAE parameters (no 'encoder' and 'decoder_pred'); "
                         f"top-level names: {sorted(p)[:8]}")
    return p["encoder"]


def to_hf(params, model: MAE) -> dict[str, np.ndarray]:
    """vitjax MAE params -> ``ViTMAEForPreTraining`` state dict with on-disk names."""
    out = vx.to_hf(encoder_params(params), encoder_model(model))          # vit.* (no head)
    f = flat_params(params)
    Dd = model.decoder_width
    out["decoder.mask_token"] = need(f, "mask_token")
    out["decoder.decoder_pos_embed"] = model.decoder_pos_table()[None]
    out["decoder.decoder_embed.weight"] = need(f, "decoder_embed/kernel").T
    out["decoder.decoder_embed.bias"] = f["decoder_embed/bias"]
    for i in range(model.decoder_depth):
        out.update(vx.hf_block_to(f, f"decoder/block{i}/", f"decoder.decoder_encoder.layer.{i}.", Dd,
                                  model.qkv_bias))
    out["decoder.decoder_norm.weight"] = need(f, "decoder_norm/scale")
    out["decoder.decoder_norm.bias"] = f["decoder_norm/bias"]
    out["decoder.decoder_pred.weight"] = need(f, "decoder_pred/kernel").T
    out["decoder.decoder_pred.bias"] = f["decoder_pred/bias"]
    return {k: f32(v) for k, v in out.items()}


def hf_config(model: MAE) -> dict:
    """config.json for ``ViTMAEForPreTraining`` matching ``to_hf``'s weights (the model's LayerNorm eps,
    not HF's 1e-12 default; ``norm_pix_loss`` and ``mask_ratio`` carried over)."""
    base = vx.hf_config(encoder_model(model))
    for k in ("id2label", "label2id", "pooler_output_size", "pooler_act", "encoder_stride"):
        base.pop(k, None)
    base.update(architectures=["ViTMAEForPreTraining"], model_type="vit_mae",
                decoder_hidden_size=model.decoder_width, decoder_num_hidden_layers=model.decoder_depth,
                decoder_num_attention_heads=model.decoder_heads, decoder_intermediate_size=model.decoder_mlp_dim,
                mask_ratio=float(model.mask_ratio), norm_pix_loss=bool(model.norm_pix_loss))
    return base


_DEC_LAYER = re.compile(r"^decoder\.decoder_layers\.(\d+)\.(.*)$")


def _normalise_decoder(key: str) -> str:
    """transformers v5 in-memory decoder names -> on-disk names (identity for on-disk names)."""
    m = _DEC_LAYER.match(key)
    if not m:
        return key
    _, body = vx.hf_normalise({f"layers.{m.group(1)}.{m.group(2)}": None})
    (new,) = body
    return "decoder.decoder_" + new          # encoder.layer.{i}... -> decoder.decoder_encoder.layer.{i}...


def from_hf(state_dict, model: MAE) -> dict:
    """``ViTMAEForPreTraining`` state dict -> vitjax MAE params (numpy tree)."""
    sd = unwrap_state_dict(state_dict)
    enc = {k: v for k, v in sd.items() if k.startswith("vit.")}
    dec = {_normalise_decoder(k): v for k, v in sd.items() if k.startswith("decoder.")}
    other = sorted(k for k in sd if not k.startswith(("vit.", "decoder.")))
    if not enc or not dec or other:
        raise ValueError(f"not a ViTMAEForPreTraining state dict: {len(enc)} 'vit.*' keys, {len(dec)} "
                         f"'decoder.*' keys, other keys {other[:5]}")
    params = {"encoder": vx.from_hf(enc, encoder_model(model))}
    Dd, Hd = model.decoder_width, model.decoder_heads
    expected = {k: v for k, v in export_shapes(to_hf, model).items() if k.startswith("decoder.")}
    for k, shape in expected.items():
        if k not in dec:
            raise ValueError(f"the checkpoint lacks '{k}' (shape {tuple(shape)}) that this MAE "
                             f"(decoder_depth={model.decoder_depth}, decoder_width={Dd}) needs")
        if tuple(dec[k].shape) != tuple(shape):
            raise ValueError(f"'{k}' has shape {tuple(dec[k].shape)} in the checkpoint but {tuple(shape)} "
                             f"in this MAE (decoder_width={Dd}, decoder_depth={model.decoder_depth})")
    diff = float(np.abs(np.asarray(dec["decoder.decoder_pos_embed"], np.float32) - model.decoder_pos_table()[None]).max())
    if diff > 1e-4:
        raise ValueError(f"'decoder.decoder_pos_embed' is not MAE's fixed 2-D sin-cos table (max abs difference "
                         f"{diff:.3g}); vitjax's MAE decoder adds that table and has no learned one. (A freshly "
                         f"constructed transformers v5 ViTMAE leaves it at zero; pretrained checkpoints hold the table.)")
    extra = sorted(set(dec) - set(expected))
    if extra:
        raise ValueError(f"unexpected decoder key(s) {extra[:3]}: this MAE has decoder_depth={model.decoder_depth}")
    f = {"mask_token": dec["decoder.mask_token"],
         "decoder_embed/kernel": dec["decoder.decoder_embed.weight"].T,
         "decoder_embed/bias": dec["decoder.decoder_embed.bias"],
         "decoder_norm/scale": dec["decoder.decoder_norm.weight"],
         "decoder_norm/bias": dec["decoder.decoder_norm.bias"],
         "decoder_pred/kernel": dec["decoder.decoder_pred.weight"].T,
         "decoder_pred/bias": dec["decoder.decoder_pred.bias"]}
    for i in range(model.decoder_depth):
        f.update(vx.hf_block_from(dec, f"decoder.decoder_encoder.layer.{i}.", f"decoder/block{i}/", Dd, Hd,
                                  model.qkv_bias))
    params.update(params_tree(f, model))
    return params


def encoder_to_timm(params, model: MAE) -> dict[str, np.ndarray]:
    """The encoder of MAE ``params`` as a timm ``VisionTransformer`` state dict (num_classes=0)."""
    return vx.to_timm(encoder_params(params), encoder_model(model))


def encoder_timm_config(model: MAE, *, mean: float | Sequence[float] = 0.5,
                        std: float | Sequence[float] = 0.5) -> dict:
    """timm config.json of ``encoder_to_timm``'s weights (``mean``/``std``: the run's normalisation)."""
    return vx.timm_config(encoder_model(model), mean=mean, std=std)


def encoder_to_hf(params, model: MAE) -> dict[str, np.ndarray]:
    """The encoder of MAE ``params`` as a label-less HF ``ViTForImageClassification`` state dict (its
    Identity classifier's logits are the normalised class token)."""
    return vx.to_hf(encoder_params(params), encoder_model(model))


def encoder_hf_config(model: MAE) -> dict:
    """HF config.json of ``encoder_to_hf``'s weights."""
    return vx.hf_config(encoder_model(model))


register_converter(MAE, "hf", kind="hf_mae", export=to_hf, config=hf_config, load=from_hf, drop_head=False)
register_converter(MAE, "hf_encoder", kind="hf", export=encoder_to_hf, config=encoder_hf_config)
register_converter(MAE, "timm", export=encoder_to_timm, config=encoder_timm_config, takes_normalisation=True)
