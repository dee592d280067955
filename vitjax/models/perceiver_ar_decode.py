"""Cached decoding for Perceiver AR (``vitjax.models.perceiver.PerceiverAR``): the ``init_cache`` /
``prefill`` / ``decode_step`` protocol of ``vitjax.generation``, exact to the uncached forward.

Perceiver AR's next-token logits for a prefix of length n come from its M latents, the positions
n-M..n-1: each latent cross-attends causally to the prefix, then a causal self-attention tower runs
over the M latents. Two things per position do not depend on where the latent window is, so they
are cached once per position:

  * the cross-attention keys/values of the position's input (``k``, ``v``: [B, S, H, hd]);
  * the position's state after the cross-attend and its MLP (``z``: [B, S, D]), since latent p's
    cross-attention reads only positions 0..p.

What does depend on the window, the latent tower, is rerun over the M cached states of the window
at every step: O(n) for the one new cross-attention row plus O(depth M^2) for the tower, instead
of O(n M + depth M^2) plus re-embedding the whole prefix. Prefixes shorter than M (which the
uncached model refuses) use the positions they have as the window.

These functions take the model (for its hyperparameters) and its params tree; ``PerceiverAR``'s
methods of the same names call them with its bound variables, so ``generate(model, params, ...)``
works on a Perceiver AR as on an ``lm``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from vitjax.models.scan import unscan_tree
from vitjax.models.transformer import ACT_HEADS, ACT_TOKENS, EncoderBlock, LayerNorm, MlpBlock

CACHE_AXES = {"k": ("act_batch", "act_len", "act_heads", "act_kv"),
              "v": ("act_batch", "act_len", "act_heads", "act_kv"),
              "z": ("act_batch", "act_len", "act_embed")}


def init_cache(model, batch_size: int, length: int) -> dict:
    """Zero cache {"k", "v": [B, length, heads, head_dim], "z": [B, length, width]} (compute dtype);
    ValueError when ``length`` exceeds the model's ``max_len``."""
    if length > model.max_len:
        raise ValueError(f"a Perceiver AR cache of length {length} is longer than the model's "
                         f"max_len={model.max_len} (prompt + new tokens must fit); shorten the prompt or "
                         f"max_new_tokens")
    hd = model.width // model.num_heads
    shapes = {"k": (batch_size, length, model.num_heads, hd), "v": (batch_size, length, model.num_heads, hd),
              "z": (batch_size, length, model.width)}
    return {name: nn.with_logical_constraint(jnp.zeros(s, model.dtype), CACHE_AXES[name])
            for name, s in shapes.items()}


def _proj(params, x, name):
    """x [B, T, D] -> [B, T, H, hd] with the cross-attention's ``name`` projection."""
    p = params["cross_attn"][name]
    y = jnp.einsum("btd,dhk->bthk", x, p["kernel"].astype(x.dtype)) + p["bias"].astype(x.dtype)
    return nn.with_logical_constraint(y, ACT_HEADS)


def _layer(module, params, *args):
    # The layers are built unbound (parent=None) because these functions also run inside
    # PerceiverAR's own methods, where a new module would otherwise become its submodule.
    return module.apply({"params": params}, *args)


def _inputs(model, params, tokens, positions):
    """tokens [B, T] at positions [B, T] -> (x [B, T, D], LN_kv(x) keys [B, T, H, hd], values)."""
    dt = model.dtype
    emb = jnp.take(params["embed"]["embedding"], tokens, axis=0).astype(dt)
    x = emb + jnp.take(params["pos_embedding"], positions, axis=0).astype(dt)
    x = nn.with_logical_constraint(x, ACT_TOKENS)
    norm = LayerNorm(model.layernorm_eps, dtype=dt, param_dtype=model.param_dtype, parent=None)
    xkv = _layer(norm, params["cross_norm_kv"], x)
    return x, _proj(params, xkv, "key"), _proj(params, xkv, "value")


def _cross(model, params, x, k, v, mask):
    """Latent states after the cross-attend and its MLP: x [B, T, D] queries against k/v [B, S, H, hd]
    with mask [B, 1, T, S] -> [B, T, D] (the model's ``cross_*`` layers)."""
    dt, pdt = model.dtype, model.param_dtype
    xq = _layer(LayerNorm(model.layernorm_eps, dtype=dt, param_dtype=pdt, parent=None), params["cross_norm_q"], x)
    att = jax.nn.dot_product_attention(_proj(params, xq, "query"), k.astype(dt), v.astype(dt), mask=mask)
    p = params["cross_attn"]["out"]
    z = x + jnp.einsum("bthk,hkd->btd", att, p["kernel"].astype(dt)) + p["bias"].astype(dt)
    y = _layer(LayerNorm(model.layernorm_eps, dtype=dt, param_dtype=pdt, parent=None), params["cross_norm2"], z)
    mlp = MlpBlock(model.mlp_ratio * model.width, 0.0, dtype=dt, param_dtype=pdt, parent=None)
    return z + _layer(mlp, params["cross_mlp"], y)


def _window_logits(model, params, z_cache, last):
    """Logits [B, V] float32 predicting position ``last`` + 1 [B]: the latent tower over the cached
    states of positions last-M+1..last (those >= 0)."""
    m = model.num_latents
    idx = last[:, None] - m + 1 + jnp.arange(m)[None]                                  # [B, M]
    valid = idx >= 0
    z = jnp.take_along_axis(z_cache, jnp.maximum(idx, 0)[:, :, None], axis=1).astype(model.dtype)
    eye = jnp.eye(m, dtype=bool)
    mask = (jnp.tril(jnp.ones((m, m), bool))[None] & (valid[:, None, :] | eye[None]))[:, None]
    for i in range(model.depth):
        block = EncoderBlock(model.num_heads, model.mlp_ratio * model.width, 0.0, 0.0, 0.0, model.layernorm_eps,
                             dtype=model.dtype, param_dtype=model.param_dtype, parent=None)
        z = block.apply({"params": params[f"self_attend{i}"]}, z, False, mask)
    z = _layer(LayerNorm(model.layernorm_eps, dtype=model.dtype, param_dtype=model.param_dtype, parent=None),
               params["final_norm"], z[:, -1])
    head = nn.Dense(model.vocab_size, dtype=model.dtype, param_dtype=model.param_dtype, parent=None)
    return _layer(head, params["head"], z).astype(jnp.float32)


def _write(cache, new, start):
    """cache [B, S, ...] with new [B, T, ...] written at each row's ``start`` [B]."""
    zeros = (0,) * (cache.ndim - 2)
    return jax.vmap(lambda c, n, s: jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (s,) + zeros))(
        cache, new, start)


def prefill(model, params, inputs, lengths, cache):
    """Right-padded prompts ``inputs`` [B, P] (row b real up to ``lengths[b]``) -> (logits [B, V]
    float32 predicting position lengths[b], cache holding positions 0..P-1)."""
    params = unscan_tree(nn.meta.unbox(params))      # scanned layers: the tower runs block by block here
    b, p = inputs.shape
    positions = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    x, k, v = _inputs(model, params, inputs, positions)
    z = _cross(model, params, x, k, v, jnp.tril(jnp.ones((p, p), bool))[None, None])
    start = jnp.zeros((b,), jnp.int32)
    cache = {"k": _write(cache["k"], k, start), "v": _write(cache["v"], v, start), "z": _write(cache["z"], z, start)}
    return _window_logits(model, params, cache["z"], lengths.astype(jnp.int32) - 1), cache


def decode_step(model, params, tokens, positions, cache):
    """tokens [B] at ``positions`` [B] -> (logits [B, V] float32 predicting positions + 1, cache)."""
    params = unscan_tree(nn.meta.unbox(params))
    positions = positions.astype(jnp.int32)
    x, k, v = _inputs(model, params, tokens[:, None], positions[:, None])
    ck, cv = _write(cache["k"], k, positions), _write(cache["v"], v, positions)
    visible = (jnp.arange(ck.shape[1])[None, :] <= positions[:, None])[:, None, None, :]   # [B, 1, 1, S]
    z = _cross(model, params, x, ck, cv, visible)
    cache = {"k": ck, "v": cv, "z": _write(cache["z"], z, positions)}
    return _window_logits(model, params, cache["z"], positions), cache
