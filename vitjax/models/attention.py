"""The one attention entry point every model family calls, and its implementations chosen by config.

    out = attend(q, k, v, mask=..., causal=..., impl=model.attention, options=model.attention_options)

q: [B, T, H, D]; k, v: [B, S, Hkv, D] with Hkv dividing H (grouped queries share a key/value head).
Returns [B, T, H, D]. Masks, the causal flag, query offsets, dropout and low-precision inputs mean the
same thing in every implementation: logits and softmax in float32, the probabilities cast back to the
input dtype for the value product, ``mask`` True = may attend, and a query row that may attend to
nothing returns zeros (with finite gradients) rather than an average of every value.

=================  ==============================================================================
``impl``           what runs
=================  ==============================================================================
``auto``           the fastest implementation the platform offers for this call (below); a faster
                   one that cannot take the call (dropout, a mask, a query offset, fp32 on cuDNN)
                   is skipped with the reason logged once.
``xla``            exact dense attention compiled by XLA, written as batched matmuls over
                   [B*H, T, D] (on CPU 2-3x faster than ``jax.nn.dot_product_attention`` on
                   [B, T, H, D]; experiments/bench_attention.py).
``cudnn``          ``jax.nn.dot_product_attention(implementation="cudnn")``: NVIDIA GPUs, bf16/fp16.
``pallas``         jax's flash-attention Pallas kernels: ``ops.gpu.attention.mha`` on GPU (Triton),
                   splash attention on TPU; self-attention (T == S) without a mask.
``band``           sliding window of ``window`` tokens each side (+ ``global_tokens``: Longformer).
``dilated``        the band with every ``dilation``-th key, reaching ``window * dilation``.
``block_local``    non-overlapping blocks of ``block_size`` tokens (+ global tokens).
``bigbird``        BigBird's ITC pattern (Zaheer et al. 2020): window of 3 blocks, first and last
                   block global, ``random_blocks`` random blocks per row (seeded).
``linear``         the elu+1 linear transformer (Katharopoulos et al. 2020).
``performer``      FAVOR+ positive orthogonal random features (Choromanski et al. 2021).
=================  ==============================================================================

The sparse patterns (``vitjax.models.attention_sparse``) are exact: each equals dense attention with
the same explicit mask (``pattern_mask``); they compute only the key blocks a query block can see,
so memory grows linearly with length. The linear forms live in ``vitjax.models.attention_linear``.

``auto``'s order (the GPU/TPU choices are not measured on this project's CPU-only machines):
CPU -> ``xla``; NVIDIA GPU -> ``cudnn`` for bf16/fp16, else ``xla``; TPU -> ``pallas`` (splash)
from 1,024 tokens, else ``xla``.
"""
from __future__ import annotations

import functools
import logging
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.kernels import dispatch
from vitjax.models import attention_linear, attention_sparse
from vitjax.models.attention_core import AttentionOptions, dense_attention, positions

__all__ = ["IMPLEMENTATIONS", "AttentionOptions", "attend", "available", "resolve", "pattern_mask",
           "dense_attention"]

log = logging.getLogger("vitjax")

DENSE = ("xla", "cudnn", "pallas")
SPARSE = attention_sparse.PATTERNS            # band, dilated, block_local, bigbird
LINEAR = attention_linear.KINDS               # linear, performer
IMPLEMENTATIONS = ("auto",) + DENSE + SPARSE + LINEAR
SPLASH_MIN_LEN = 1024                         # below it XLA's fused dense attention is as good on TPU
# jax's own flash kernels (they ship with jax, under jax.experimental, which moves between releases):
# imported when first needed, so a jax without one loses only `pallas` on that platform, with the reason.
FLASH = {"gpu": "jax.experimental.pallas.ops.gpu.attention",
         "tpu": "jax.experimental.pallas.ops.tpu.splash_attention"}
_logged: set[str] = set()


def _log_once(msg: str) -> None:
    if msg not in _logged:
        _logged.add(msg)
        log.info(msg)


def _nvidia() -> bool:
    try:
        return "cuda" in jax.devices()[0].client.platform_version.lower()
    except Exception:  # noqa: BLE001 -- a backend without platform_version is not CUDA
        return False


def available(platform: str | None = None) -> tuple[str, ...]:
    """The implementations that can run on ``platform`` (default: the current backend)."""
    platform = platform or dispatch.backend()
    out = ["xla"]
    if platform == "gpu" and _nvidia():
        out.append("cudnn")
    if platform in dispatch.COMPILED_BACKENDS and _flash_missing(platform) is None:
        out.append("pallas")
    return tuple(out) + SPARSE + LINEAR


def _flash_missing(platform: str) -> str | None:
    """Why jax's flash kernel for ``platform`` cannot be used here (it or its lowering does not
    import on this jax), or None."""
    return dispatch.optional_module(FLASH[platform])[1] or dispatch.optional_module(dispatch.LOWERING[platform])[1]


def _unsupported(impl: str, q, k, mask, causal, query_offset, dropout: bool) -> str | None:
    """Why ``impl`` (a dense kernel) cannot take this call, or None when it can."""
    t, s = q.shape[1], k.shape[1]
    if dropout:
        return "attention dropout is on (only xla and the sparse patterns apply it)"
    offset = not (isinstance(query_offset, int) and query_offset == 0)
    if impl == "cudnn":
        if q.dtype not in (jnp.bfloat16, jnp.float16):
            return f"cuDNN attention needs bfloat16/float16 inputs, got {q.dtype}"
        if q.shape[-1] > 128 or q.shape[-1] % 8:
            return f"cuDNN attention needs a head dim <= 128 and a multiple of 8, got {q.shape[-1]}"
        if offset or (causal and t != s):
            return "cuDNN's causal mask is aligned at position 0 (no query offset)"
    if impl == "pallas":
        if t != s or offset:
            return "the Pallas flash kernels here take self-attention only (T == S, no query offset)"
        if mask is not None:
            return "the Pallas flash kernels here take no explicit mask (causal and padding only)"
        if q.shape[2] != k.shape[2]:
            return "the Pallas flash kernels here need as many key/value heads as query heads"
    return None


def resolve(impl: str | None, q, k, *, mask=None, causal=False, query_offset=0, dropout=False,
            platform: str | None = None) -> str:
    """The implementation that will run: ``impl`` itself when it is available and can take the call,
    ``auto``'s choice (fallbacks logged once), or a ValueError naming the platform and what it has."""
    platform = platform or dispatch.backend()
    impl = "auto" if impl is None else impl
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {impl!r}; choose one of {list(IMPLEMENTATIONS)} "
                         f"(config: model.attention)")
    avail = available(platform)
    if impl != "auto":
        if impl not in avail:
            why = (f" ({_flash_missing(platform)})" if impl == "pallas" and platform in dispatch.COMPILED_BACKENDS
                   else "")
            raise ValueError(f"attention implementation {impl!r} is not available on platform {platform!r}{why}; "
                             f"available here: {list(avail)} (or 'auto')")
        if impl in ("cudnn", "pallas"):
            why = _unsupported(impl, q, k, mask, causal, query_offset, dropout)
            if why:
                raise ValueError(f"attention implementation {impl!r} cannot take this call: {why}; "
                                 f"use model.attention='auto' or 'xla'")
        return impl
    if platform == "gpu" and "cudnn" in avail:
        candidates = ["cudnn"]
    elif platform == "tpu" and q.shape[1] >= SPLASH_MIN_LEN:
        candidates = ["pallas"]
        if "pallas" not in avail:
            _log_once(f"attention auto: not using splash on tpu: {_flash_missing('tpu')}; using xla")
            candidates = []
    else:
        candidates = []
    for cand in candidates:
        why = _unsupported(cand, q, k, mask, causal, query_offset, dropout)
        if why is None:
            return cand
        _log_once(f"attention auto: not using {cand} on {platform}: {why}; using xla")
    return "xla"


def attend(q, k, v, *, mask=None, causal: bool = False, query_offset=0, dropout_rate: float = 0.0,
           dropout_rng=None, deterministic: bool = True, impl: str | None = "auto",
           options: AttentionOptions | Mapping[str, Any] | None = None):
    """Multi-head attention, [B, T, H, D] x [B, S, Hkv, D] x [B, S, Hkv, D] -> [B, T, H, D].

    mask: bool, broadcastable to [B, H, T, S]; True = the query may attend to the key.
    causal: query i may attend to key j only when j <= its position.
    query_offset: the position of query row 0 (key j sits at position j): an int, [B] (one offset per
      row of the batch) or [B, T] (each query's own position), for cached decoding where T < S.
    dropout_rate, dropout_rng, deterministic: dropout on the attention probabilities (training).
    impl: one of ``IMPLEMENTATIONS`` (``model.attention``); options: ``AttentionOptions`` or a mapping
      (``model.attention_options``).
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attend takes q, k, v as [batch, length, heads, head_dim], got {q.shape}, "
                         f"{k.shape}, {v.shape}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"{q.shape[2]} query heads cannot share {k.shape[2]} key/value heads evenly")
    options = AttentionOptions.of(options)
    dropout = dropout_rate > 0.0 and not deterministic
    if dropout and dropout_rng is None:
        raise ValueError("attention dropout needs dropout_rng (a PRNG key) when deterministic=False")
    impl = resolve(impl, q, k, mask=mask, causal=causal, query_offset=query_offset, dropout=dropout)
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.ndim != 4:
            raise ValueError(f"attention mask must broadcast to [B, H, T, S] (4 dims), got shape {mask.shape}")
    drop = (dropout_rate, dropout_rng) if dropout else None
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal, implementation="cudnn")
    if impl == "pallas":
        return _pallas(q, k, v, causal=causal)
    if impl in SPARSE:
        return attention_sparse.sparse_attention(q, k, v, pattern=impl, options=options, mask=mask,
                                                 causal=causal, query_offset=query_offset, dropout=drop)
    if impl in LINEAR:
        if drop:
            raise ValueError(f"{impl} attention has no probability matrix to apply dropout to; set the "
                             f"model's attn_dropout to 0 or use model.attention='xla'")
        return attention_linear.linear_attention(q, k, v, kind=impl, options=options, mask=mask,
                                                 causal=causal, query_offset=query_offset)
    valid = mask
    if causal:
        c = positions(query_offset, q.shape[0], q.shape[1])[:, None, :, None] >= jnp.arange(k.shape[1])
        valid = c if valid is None else valid & c
    return dense_attention(q, k, v, valid, dropout=drop)


def pattern_mask(impl: str, length: int, options=None, num_heads: int = 1, causal: bool = False) -> np.ndarray:
    """The explicit mask [1, H|1, T, T] (bool) a sparse pattern equals: dense attention under it gives
    the same values and gradients as ``attend(..., impl=impl)``."""
    return attention_sparse.pattern_mask(impl, length, AttentionOptions.of(options), num_heads, causal)


# ----------------------------------------------------------------------------------------------------
# Pallas flash kernels (GPU: Triton mha; TPU: splash). Neither runs on CPU without interpreting.


def _pallas(q, k, v, *, causal: bool):
    if dispatch.backend() == "tpu":
        return _splash(q, k, v, causal=causal)
    return _flash_gpu(q, k, v, causal=causal)


def _flash_module(platform: str):
    module, missing = dispatch.optional_module(FLASH[platform])
    if missing:
        raise ValueError(f"attention implementation 'pallas' cannot run: {missing}; use model.attention='xla'")
    return module


def _pad_len(t: int, block: int) -> int:
    return dispatch.round_up(t, block)


def _flash_gpu(q, k, v, *, causal: bool, interpret: bool = False, block: int = 128):
    """jax.experimental.pallas.ops.gpu.attention.mha on [B, T, H, D]; T padded to whole blocks, the
    padding kept apart by segment ids (padded queries see only padded keys, whose rows are dropped)."""
    gpu_flash = _flash_module("gpu")
    b, t, h, d = q.shape
    tp = _pad_len(t, block if t > block else 32)
    pad = [(0, 0), (0, tp - t), (0, 0), (0, 0)]
    seg = jnp.broadcast_to((jnp.arange(tp) < t).astype(jnp.int32), (b, tp))
    blocks = gpu_flash.BlockSizes(block_q=min(block, tp), block_k=min(block, tp), block_q_dkv=32,
                                      block_kv_dkv=32, block_q_dq=32, block_kv_dq=32)
    out = gpu_flash.mha(jnp.pad(q, pad), jnp.pad(k, pad), jnp.pad(v, pad), seg, sm_scale=d ** -0.5,
                            causal=causal, block_sizes=blocks, interpret=interpret)
    return out[:, :t]


@functools.lru_cache(maxsize=32)
def _splash_kernel(tp: int, heads: int, causal: bool, interpret: bool):
    splash = _flash_module("tpu")
    one = splash.CausalMask((tp, tp)) if causal else splash.FullMask((tp, tp))
    return splash.make_splash_mha(splash.MultiHeadMask([one] * heads), head_shards=1, q_seq_shards=1,
                                  interpret=interpret)


def _splash(q, k, v, *, causal: bool, interpret: bool = False):
    """Splash attention (TPU) per example on [H, T, D]; T padded to 128s, padding kept apart by
    segment ids."""
    b, t, h, d = q.shape
    tp = _pad_len(t, 128)
    kernel = _splash_kernel(tp, h, causal, interpret)
    pad = [(0, 0), (0, tp - t), (0, 0), (0, 0)]
    to_heads = lambda x: jnp.pad(x, pad).transpose(0, 2, 1, 3)             # noqa: E731
    seg = (jnp.arange(tp) < t).astype(jnp.int32)
    ids = _flash_module("tpu").SegmentIds(q=seg, kv=seg)
    qs = to_heads(q * jnp.asarray(1 / math.sqrt(d), q.dtype))
    out = jax.vmap(lambda a, b_, c: kernel(a, b_, c, segment_ids=ids))(qs, to_heads(k), to_heads(v))
    return out.transpose(0, 2, 1, 3)[:, :t]

