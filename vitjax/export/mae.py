"""MAE <-> Hugging Face ``ViTMAEForPreTraining``, and the MAE encoder as a plain ViT backbone.

    state = to_hf(params, model); write_export(out, state, hf_config(model))
    transformers.ViTMAEForPreTraining.from_pretrained(out)        # same loss and predictions for the same noise
    params = from_hf(hf_model.state_dict(), model)                # in-memory (v5) or on-disk names

The encoder is a vitjax ViT (class token, fixed sin-cos positions), so ``encoder_params(params)``
with ``encoder_model(model)`` goes through ``vitjax.export.vit`` to timm or HF ViT unchanged. The
decoder's blocks are ViT blocks too: HF stores them as ``decoder.decoder_encoder.layer.{i}.*`` on disk
(``decoder.decoder_layers.{i}.*`` in transformers v5 memory).
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from vitjax.export import vit as vx
from vitjax.models.mae import MAE
from vitjax.models.vit import ViT


def encoder_model(model: MAE, num_classes: int = 0) -> ViT:
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
    f = vx._flat_params(params)
    Dd = model.decoder_width
    out["decoder.mask_token"] = vx._need(f, "mask_token")
    out["decoder.decoder_pos_embed"] = model.decoder_pos_table()[None]
    out["decoder.decoder_embed.weight"] = vx._need(f, "decoder_embed/kernel").T
    out["decoder.decoder_embed.bias"] = f["decoder_embed/bias"]
    for i in range(model.decoder_depth):
        out.update(vx.hf_block_to(f, f"decoder/block{i}/", f"decoder.decoder_encoder.layer.{i}.", Dd,
                                  model.qkv_bias))
    out["decoder.decoder_norm.weight"] = vx._need(f, "decoder_norm/scale")
    out["decoder.decoder_norm.bias"] = f["decoder_norm/bias"]
    out["decoder.decoder_pred.weight"] = vx._need(f, "decoder_pred/kernel").T
    out["decoder.decoder_pred.bias"] = f["decoder_pred/bias"]
    return {k: vx._c(v) for k, v in out.items()}


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
    _, body = vx._hf_normalise({f"layers.{m.group(1)}.{m.group(2)}": None})
    (new,) = body
    return "decoder.decoder_" + new          # encoder.layer.{i}... -> decoder.decoder_encoder.layer.{i}...


def from_hf(state_dict, model: MAE) -> dict:
    """``ViTMAEForPreTraining`` state dict -> vitjax MAE params (numpy tree)."""
    sd = vx._unwrap_state_dict(state_dict)
    enc = {k: v for k, v in sd.items() if k.startswith("vit.")}
    dec = {_normalise_decoder(k): v for k, v in sd.items() if k.startswith("decoder.")}
    other = sorted(k for k in sd if not k.startswith(("vit.", "decoder.")))
    if not enc or not dec or other:
        raise ValueError(f"not a ViTMAEForPreTraining state dict: {len(enc)} 'vit.*' keys, {len(dec)} "
                         f"'decoder.*' keys, other keys {other[:5]}")
    params = {"encoder": vx.from_hf(enc, encoder_model(model))}
    Dd, Hd = model.decoder_width, model.decoder_heads
    expected = {k: v.shape for k, v in to_hf(_zeros_like_params(model), model).items() if k.startswith("decoder.")}
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
    dtype = np.dtype(model.param_dtype)
    params.update(vx._unflatten({k: np.ascontiguousarray(v, dtype=dtype) for k, v in f.items()}))
    return params


def _zeros_like_params(model: MAE) -> dict:
    import jax
    import jax.numpy as jnp
    from flax.linen import meta
    s = model.image_size
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "masking": jax.random.key(1)},
                                               jnp.zeros((1, s, s, model.in_channels))))
    return jax.tree.map(lambda a: np.zeros(a.shape, np.float32), meta.unbox(shapes)["params"])
