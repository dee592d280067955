"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus) sampling.

    check_sampling(temperature, top_k, top_p)          # ValueError on bad settings, before any compile
    tokens = next_token(logits, rng, temperature=0.8, top_k=40, top_p=0.95)    # [B, V] -> [B] int32

The filters run in Hugging Face's order (temperature, then top-k, then top-p), so the same settings
keep the same candidate tokens as ``transformers`` ``generate(do_sample=True)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError naming the setting when ``temperature`` < 0, ``top_k`` < 0 or ``top_p`` outside (0, 1]."""
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if top_k < 0 or int(top_k) != top_k:
        raise ValueError(f"top_k={top_k} must be a whole number >= 0 (0 = no top-k filter)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] (1 = no nucleus filter)")


def filter_logits(logits, top_k=0, top_p=1.0):
    """logits [B, V] with every token outside the top ``top_k`` and outside the smallest set whose
    probability reaches ``top_p`` set to -inf (the most likely token always stays). ``top_k`` (0 =
    off) and ``top_p`` (1 = off) may be traced values: one compiled loop serves every setting."""
    logits = logits.astype(jnp.float32)
    v = logits.shape[-1]
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    k = jnp.clip(jnp.where(top_k > 0, top_k, v), 1, v)
    kth = jax.lax.dynamic_slice_in_dim(sorted_logits, k - 1, 1, axis=1)
    probs = jax.nn.softmax(jnp.where(sorted_logits < kth, -jnp.inf, sorted_logits), axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs        # probability of the strictly more likely tokens
    keep = (before < top_p) & (sorted_logits >= kth)
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < threshold, -jnp.inf, logits)


def next_token(logits, rng, *, temperature=0.0, top_k=0, top_p=1.0, greedy: bool | None = None):
    """logits [B, V] -> tokens [B] int32: the argmax when ``greedy`` (default: ``temperature == 0``,
    which then must be a Python number), else a sample of softmax(logits / temperature) after the
    top-k / top-p filters (``temperature``, ``top_k``, ``top_p`` may then be traced)."""
    if greedy is None:
        greedy = temperature == 0.0
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
