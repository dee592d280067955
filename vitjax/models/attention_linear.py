"""Linearized attention: out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j).

Two feature maps phi:
  ``linear``     elu(x) + 1 (Katharopoulos et al. 2020, "Transformers are RNNs", eq. 7).
  ``performer``  FAVOR+ positive orthogonal random features (Choromanski et al. 2021, "Rethinking
                 Attention with Performers", sec. 2.3-2.4): phi(x) = exp(w^T x - |x|^2 / 2) / sqrt(m)
                 with x = q / d^(1/4), an unbiased estimate of the softmax kernel exp(q.k / sqrt d);
                 the error falls as the feature count m grows (experiments/bench_attention.py prints it).

Bidirectional: two matmuls through the [D, Dv] summary, O(T). Causal: the prefix-sum form, chunked:
inside a chunk of ``block_size`` queries the masked quadratic form, across chunks an exclusive
cumulative sum of the per-chunk summaries; memory O(T D Dv / block_size + T block_size).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.models.attention_core import AttentionOptions

__all__ = ["KINDS", "linear_attention", "feature_map", "performer_projection", "quadratic_form"]

KINDS = ("linear", "performer")


@functools.lru_cache(maxsize=16)
def performer_projection(features: int, dim: int, seed: int) -> np.ndarray:
    """[m, d] orthogonal Gaussian rows (blocks of d orthonormal rows, each row rescaled to the norm of
    a d-dim Gaussian vector, FAVOR+'s "regularized" orthogonal features), fixed by ``seed``."""
    rng = np.random.RandomState(seed)
    blocks = []
    for _ in range(-(-features // dim)):
        qmat, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        blocks.append(qmat.T)
    w = np.concatenate(blocks, 0)[:features]
    norms = np.linalg.norm(rng.standard_normal((features, dim)), axis=1)
    return (w * norms[:, None]).astype(np.float32)


def feature_map(x, kind: str, options: AttentionOptions, *, is_query: bool):
    """[B, L, H, D] -> float32 features [B, L, H, F] (positive)."""
    x = x.astype(jnp.float32)
    if kind == "linear":
        return jax.nn.elu(x) + 1.0
    d = x.shape[-1]
    w = jnp.asarray(performer_projection(options.features, d, options.seed))
    x = x * d ** -0.25
    proj = jnp.einsum("blhd,md->blhm", x, w)
    sq = 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    # A stabiliser cancels in the ratio: per row for queries, one for all keys (over the batch element).
    axes = (-1,) if is_query else (1, 2, 3)
    stab = jax.lax.stop_gradient(jnp.max(proj - sq, axis=axes, keepdims=True))
    return jnp.exp(proj - sq - stab) * options.features ** -0.5 + 1e-6


def _key_mask(mask, b: int, s: int, kind: str):
    """A mask usable by linear attention: keys only ([B|1, H|1, 1, S]) -> [B|1, S, H|1, 1] float."""
    if mask is None:
        return None
    if mask.shape[2] != 1:
        raise ValueError(f"{kind} attention takes only key-padding masks of shape [B, 1|H, 1, S] (and causal=True), "
                         f"got a mask of shape {mask.shape}; use model.attention='xla' for arbitrary masks")
    return jnp.broadcast_to(mask, mask.shape[:3] + (s,))[:, :, 0].transpose(0, 2, 1)[..., None].astype(jnp.float32)


def _safe_div(num, den):
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def linear_attention(q, k, v, *, kind: str, options: AttentionOptions, mask=None, causal=False, query_offset=0):
    """[B, T, H, D] x [B, S, Hkv, D]^2 -> [B, T, H, D] with the ``kind`` feature map."""
    b, t, h, d = q.shape
    s = k.shape[1]
    if k.shape[2] != h:
        k, v = jnp.repeat(k, h // k.shape[2], axis=2), jnp.repeat(v, h // k.shape[2], axis=2)
    fq = feature_map(q, kind, options, is_query=True)
    fk = feature_map(k, kind, options, is_query=False)
    km = _key_mask(mask, b, s, kind)
    if km is not None:
        fk = fk * km
    vf = v.astype(jnp.float32)
    if not causal:
        kv = jnp.einsum("bshf,bshe->bhfe", fk, vf)
        num = jnp.einsum("bthf,bhfe->bthe", fq, kv)
        den = jnp.einsum("bthf,bhf->bth", fq, fk.sum(1))[..., None]
        return _safe_div(num, den).astype(v.dtype)
    if t != s or not (isinstance(query_offset, int) and query_offset == 0):
        raise ValueError(f"causal {kind} attention needs as many queries as keys (got {t} and {s}) and no "
                         f"query offset; use model.attention='xla' for cached decoding")
    c = max(1, min(options.block_size, t))
    n = -(-t // c)
    pad = [(0, 0), (0, n * c - t), (0, 0), (0, 0)]
    chunk = lambda x: jnp.pad(x, pad).reshape(b, n, c, h, -1)              # noqa: E731
    fqc, fkc, vc = chunk(fq), chunk(fk), chunk(vf)                         # [B, N, C, H, .]
    state = jnp.einsum("bnchf,bnche->bnhfe", fkc, vc)
    zsum = fkc.sum(2)                                                       # [B, N, H, F]
    prev_state = jnp.cumsum(state, axis=1) - state                         # exclusive prefix sums
    prev_z = jnp.cumsum(zsum, axis=1) - zsum
    tril = jnp.tril(jnp.ones((c, c), jnp.float32))
    a = jnp.einsum("bnqhf,bnkhf->bnhqk", fqc, fkc) * tril
    num = jnp.einsum("bnhqk,bnkhe->bnqhe", a, vc) + jnp.einsum("bnqhf,bnhfe->bnqhe", fqc, prev_state)
    den = a.sum(-1).transpose(0, 1, 3, 2)[..., None] + jnp.einsum("bnqhf,bnhf->bnqh", fqc, prev_z)[..., None]
    out = _safe_div(num, den).reshape(b, n * c, h, -1)[:, :t]
    return out.astype(v.dtype)


def quadratic_form(q, k, v, *, kind: str, options: AttentionOptions | None = None, causal: bool = False):
    """The same attention written out as a T x S matrix (the reference the tests compare against)."""
    options = AttentionOptions.of(options)
    fq = feature_map(q, kind, options, is_query=True)
    fk = feature_map(k, kind, options, is_query=False)
    a = jnp.einsum("bthf,bshf->bhts", fq, fk)
    if causal:
        a = a * jnp.tril(jnp.ones((q.shape[1], k.shape[1]), jnp.float32))
    out = jnp.einsum("bhts,bshe->bthe", a, v.astype(jnp.float32)) / a.sum(-1).transpose(0, 2, 1)[..., None]
    return out.astype(v.dtype)
