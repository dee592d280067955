"""Class-token attention maps of a ViT's last block (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", Fig. 1 and 3: DINO's heads attend to object regions).

    maps = cls_attention_maps(model, params, images)       # [B, heads, gh, gw], rows sum to <= 1

For each head h of the last block: ``softmax(q k^T / sqrt(hd))`` over all tokens, the row of the
class-token query, at the patch-token columns (prefix tokens dropped), laid out on the patch grid.
This is what the official ``get_last_selfattention`` visualises and timm's last block computes as
``attn.softmax(-1)`` (with ``fused_attn=False``).

The model code is not touched: the last block's ``norm1`` output (the attention's input) is captured
with flax's ``capture_intermediates``, and q, k are recomputed from that block's ``attn/query`` and
``attn/key`` parameters ([embed, heads, head_dim] kernels, [heads, head_dim] biases), in float32.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vitjax.models import scan
from vitjax.models.dino import DINO
from vitjax.models.vit import ViT

_JITTED: dict = {}


def _as_vit(model, params):
    """(ViT, its params) for a vitjax ViT, or a DINO model through its backbone."""
    if isinstance(params, Mapping) and "params" in params and "encoder" not in params:
        params = params["params"]
    if isinstance(model, DINO):
        model, params = ViT(**model.backbone_config()), params["backbone"]
    if not isinstance(model, ViT):
        raise ValueError(f"cls_attention_maps takes a vitjax ViT (or a DINO model, through its backbone), "
                         f"got a {type(model).__name__}; for an MAE pass vitjax.interop.mae.encoder_model(model) "
                         f"and encoder_params(params)")
    if model.pool != "token":
        raise ValueError(f"cls_attention_maps needs a class token, but the model has pool={model.pool!r} "
                         f"(no class token); use a pool='token' ViT")
    # Block rematerialisation changes neither the parameter tree nor the values; without it
    # capture_intermediates sees the blocks' submodules directly.
    if model.remat not in (None, False, "none", ""):
        model = model.clone(remat="none")
    return scan.unscanned(model, params)      # the last block alone: scanned stacks split


def _maps_fn(vit):
    last = f"block{vit.depth - 1}"
    where = ("encoder", last, "norm1")
    p0 = vit.num_prefix_tokens

    def fn(params, images):
        _, state = vit.apply({"params": params}, images, output="features",
                             capture_intermediates=lambda mdl, method: method == "__call__"
                             and tuple(mdl.path) == where)
        y = state["intermediates"]["encoder"][last]["norm1"]["__call__"][0].astype(jnp.float32)
        attn = params["encoder"][last]["attn"]

        def proj(name):
            p = attn[name]
            out = jnp.einsum("btd,dhk->bthk", y, p["kernel"].astype(jnp.float32))
            return out + p["bias"].astype(jnp.float32) if vit.qkv_bias else out

        q, k = proj("query"), proj("key")
        logits = jnp.einsum("bthk,bshk->bhts", q[:, :1], k) / jnp.sqrt(jnp.float32(q.shape[-1]))
        probs = jax.nn.softmax(logits, axis=-1)[:, :, 0, p0:]               # [B, H, N]
        gh, gw = images.shape[1] // vit.patch_size, images.shape[2] // vit.patch_size
        return probs.reshape(probs.shape[0], probs.shape[1], gh, gw)
    return jax.jit(fn)


def cls_attention_maps(model, params: Any, images) -> jax.Array:
    """The last block's class-token attention over the patch tokens: [B, heads, gh, gw] (float32).

    ``model``: a vitjax ``ViT`` with a class token (``pool="token"``; DeiT too: both prefix tokens
    are dropped from the columns), or a ``DINO`` model, read through its backbone
    (``ViT(**model.backbone_config())`` on ``params["backbone"]``). ``params``: the model's parameter
    tree (or ``{"params": tree}``). ``images`` [B, H, W, C], normalised as in training; H, W are the
    model's image size (or any multiple of the patch size for ``dynamic_img_size`` models: DINO).
    Each map holds the softmax weights of the class token's query on the patches; with the weights on
    the prefix tokens left out, a map sums to at most 1.
    """
    vit, params = _as_vit(model, params)
    if vit not in _JITTED:                  # one compile per model configuration
        _JITTED[vit] = _maps_fn(vit)
    return _JITTED[vit](params, jnp.asarray(images))
