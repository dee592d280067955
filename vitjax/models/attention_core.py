"""What every attention implementation shares: the options, query positions, the masked float32
softmax, and exact dense attention (the ``xla`` implementation of ``vitjax.models.attention``).

Kept apart from ``attention.py`` so that the sparse and linear forms can use them while the entry
point imports those forms (no cycle).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["AttentionOptions", "positions", "masked_softmax", "dense_attention", "NEG"]

NEG = -1e30      # masked logits: finite, so a fully masked row has finite gradients


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
    """Options of the sparse and linear implementations (``model.attention_options``).

    Attributes:
      window: band/dilated: keys within ``window`` positions on each side (clamped to the length).
      global_tokens: the first ``global_tokens`` tokens attend to all and are seen by all
        (Longformer's global attention; 1 = a class token). band, dilated, block_local, bigbird.
      random_blocks: bigbird: random key blocks per query block (paper: 3).
      block_size: the query/key block of the block-sparse computation; bigbird's and block_local's
        block; the chunk of causal linear attention.
      dilation: dilated: every ``dilation``-th key (Longformer's dilated window).
      features: performer: random features m (paper: d log d; error falls as m grows).
      seed: bigbird's random blocks and performer's features (fixed, not trained).
    """
    window: int = 64
    global_tokens: int = 0
    random_blocks: int = 3
    block_size: int = 64
    dilation: int = 2
    features: int = 256
    seed: int = 0

    @classmethod
    def of(cls, value: "AttentionOptions | Mapping[str, Any] | None") -> "AttentionOptions":
        """Options from None, a mapping (a ConfigDict too) or options; unknown keys are a ValueError."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        items = dict(value.items())
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(items) - names)
        if unknown:
            raise ValueError(f"unknown model.attention_options {unknown}; valid: {sorted(names)}")
        out = cls(**{k: v for k, v in items.items() if v is not None})
        for f in ("window", "block_size", "dilation", "features"):
            if int(getattr(out, f)) < 1:
                raise ValueError(f"model.attention_options.{f}={getattr(out, f)} must be >= 1")
        if out.global_tokens < 0 or out.random_blocks < 0:
            raise ValueError("model.attention_options.global_tokens and random_blocks must be >= 0")
        return out


def positions(query_offset, batch: int, length: int):
    """[B|1, T] int32 absolute positions of the query rows for an offset int, [B] or [B, T]."""
    off = jnp.asarray(query_offset, jnp.int32)
    if off.ndim == 2:
        return off
    if off.ndim == 1:
        return off[:, None] + jnp.arange(length, dtype=jnp.int32)
    return (off + jnp.arange(length, dtype=jnp.int32))[None]


def masked_softmax(logits, valid=None, dropout=None, axis=-1):
    """float32 softmax of ``logits`` over ``axis`` where ``valid`` (bool, broadcastable) is True; rows
    with no valid entry give zeros. ``dropout``: None or (rate, rng) applied to the probabilities.
    A static (numpy) ``valid`` has its empty rows found here, in numpy: XLA would constant-fold the
    reduction over a large constant mask for seconds at every compile."""
    logits = logits.astype(jnp.float32)
    if valid is not None:
        logits = jnp.where(valid, logits, NEG)
    m = jax.lax.stop_gradient(logits.max(axis, keepdims=True))
    e = jnp.exp(logits - m)
    p = e / e.sum(axis, keepdims=True)
    if valid is not None:
        # All-masked rows are uniform over NEG logits here; zero them.
        rows = valid.any(axis=axis, keepdims=True) if isinstance(valid, np.ndarray) else \
            jnp.any(valid, axis=axis, keepdims=True)
        if not (isinstance(rows, np.ndarray) and rows.all()):
            p = p * rows
    if dropout is not None:
        rate, rng = dropout
        keep = jax.random.bernoulli(rng, 1.0 - rate, p.shape)
        p = jnp.where(keep, p / (1.0 - rate), 0.0)
    return p


def dense_attention(q, k, v, valid=None, *, dropout=None):
    """Exact attention [B, T, H, D] x [B, S, Hkv, D]^2 -> [B, T, H, D] as two batched matmuls with
    batch dims (B, H) taken in place (``lax.dot_general``; on CPU ~3x faster forward and ~2x
    forward+backward than ``jax.nn.dot_product_attention``, experiments/bench_attention.py). The
    batch and head dims stay separate dims (not merged into B*H), so a batch sharded over ``data``
    and heads over ``tensor`` need no communication.

    valid: None or bool broadcastable to [B, H, T, S].
    """
    h, hkv = q.shape[2], k.shape[2]
    if hkv != h:
        k, v = jnp.repeat(k, h // hkv, axis=2), jnp.repeat(v, h // hkv, axis=2)
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    logits = jax.lax.dot_general(q * scale, k, (((3,), (3,)), ((0, 2), (0, 2))),
                                 preferred_element_type=jnp.float32)           # [B, H, T, S]
    p = masked_softmax(logits, valid, dropout)
    out = jax.lax.dot_general(p.astype(v.dtype), v, (((3,), (1,)), ((0, 1), (0, 2))))   # [B, H, T, D]
    return out.transpose(0, 2, 1, 3)
