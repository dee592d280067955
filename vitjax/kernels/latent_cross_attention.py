"""Latent cross-attention (Perceiver): a few queries attend over a very long key/value axis.

    out = latent_cross_attention(q, k, v, mask)   # q [B, H, M, Dk], k [B, H, N, Dk], v [B, H, N, Dv]
                                                  # mask [B, N] bool (True = attend), out [B, H, M, Dv]

In a Perceiver, M (latents, e.g. 512) is small and N (input elements, 50,176 pixels of a 224x224
image) is long. Plain attention materialises the [B, H, M, N] score matrix: 6.6 GB in fp32 at
B=8, H=8, M=512, N=50,176 -- more than the inputs themselves (K and V are 0.8 GB). The kernel
never does: each program holds one block of queries and streams the N axis in blocks, keeping the
running max ``m``, normaliser ``l`` and un-normalised output (flash attention's online softmax,
Dao et al. 2022; Rabe & Staats 2021). The forward pass saves only the logsumexp [B, H, M]; the
backward pass recomputes scores block by block in two kernels, one gridded over key blocks
(dK, dV) and one over query blocks (dQ), so no program ever accumulates into another's output.

Contents, in the order of jax's own Pallas ops: ``BlockSizes``; the pure-jnp reference
``latent_cross_attention_reference``; the forward kernel; the two backward kernels; the
``jax.custom_vjp`` joining them; and the entry point ``latent_cross_attention``, whose
``implementation`` / ``interpret`` are resolved by ``vitjax.kernels.dispatch`` (the same rule for
every kernel): None/"auto" -> Pallas on TPU/GPU, the reference on CPU; "pallas"; "reference";
``interpret=True`` runs the Pallas kernels on any backend through the Pallas interpreter, and
"pallas" on CPU without it raises.

Masking and padding: N is padded up to a multiple of ``block_kv`` and M to a multiple of
``block_q`` (the padding is masked out and sliced off), so any N >= 1 works. Padded and
user-masked keys get probability exactly 0. A sample whose keys are *all* masked has no softmax; it
returns zeros (not NaN) and zero, finite gradients, in both the kernel and the reference.

Portability (what was and was not verified):
  * Verified: CPU, Pallas interpret mode (``interpret=True``), fp32 and bf16, values and
    gradients against the reference (tests/test_kernel_latent_xattn.py). jax 0.10.2.
  * Verified from the CPU host with ``jax.export`` (tests): forward and both backward kernels
    lower to Triton IR for CUDA and to Mosaic for TPU, fp32 and bf16 (``dispatch.compiler_params``
    picks Triton explicitly: this jax otherwise lowers to Mosaic GPU, where the whole-N K/V blocks
    exceed shared memory and async-copy limits).
  * NOT verified: compiling those on a TPU/GPU, running there, timings; no such device was
    available.
    The kernels use only the generic ``pl.pallas_call`` / ``pl.BlockSpec`` API (no TPU- or
    Triton-specific calls, no scratch buffers, no cross-program accumulation), keep every block's
    last two dims either a multiple of 8 x (128 or the full dim), keep all in-kernel values 2-D
    (Mosaic's preferred layout), and pad the head dim to a power of two >= 16 on GPU/interpret
    (Triton needs power-of-two tensor shapes and >= 16 for ``dot``). Known risks left open: on
    TPU the K/V block of a program spans all of N (streamed in ``block_kv`` slices from VMEM), so
    at N=50,176, D=64 bf16 the two double-buffered K/V blocks need ~25 MB of VMEM, above the default
    scoped limit on some TPU generations (raise ``vmem_limit_bytes`` or pre-chunk N); on Triton the
    full-N K/V refs are plain pointers and cost nothing.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from vitjax.kernels.dispatch import (IMPLEMENTATIONS, compiled_for, compiler_params, pad_trailing,
                                     pow2_at_least_16, resolve, round_up)
# ``_backend`` is the seam the tests monkeypatch to lower the GPU/TPU paths from a CPU host (every
# backend lookup in this module goes through it).
from vitjax.kernels.dispatch import backend as _backend

__all__ = ["BlockSizes", "latent_cross_attention", "latent_cross_attention_reference",
           "IMPLEMENTATIONS"]

_KERNEL = "latent cross-attention"   # the kernel's name in dispatch's error messages
_PARALLEL = ("parallel", "parallel", "parallel")   # every grid: (batch, head, block), independent

# A large finite negative score for masked keys: -inf would make exp(-inf - (-inf)) = NaN in the
# online-softmax rescaling while every key seen so far is masked.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)
_SUBLANE = 8        # TPU: second-to-last block dims must be multiples of 8 (or the full dim)


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes. ``None`` fields take the defaults from ``for_shape``.

    Attributes:
      block_q: latents (queries) per forward program; M is padded up to a multiple of it.
      block_kv: input elements per forward inner-loop step; N is padded up to a multiple of it.
      block_q_dkv, block_kv_dkv: the dK/dV kernel: one program per ``block_kv_dkv`` keys, looping
        over the queries ``block_q_dkv`` at a time.
      block_q_dq, block_kv_dq: the dQ kernel: one program per ``block_q_dq`` queries, looping over
        the keys ``block_kv_dq`` at a time.
    The backward blocks must divide the padded M / N set by ``block_q`` / ``block_kv``; every block
    must be a positive multiple of 8. Compiled for TPU, the kv blocks must also be multiples of 128
    (the mask tile's lane dim); on GPU, every block should be a power of two >= 16.
    """
    block_q: int | None = None
    block_kv: int | None = None
    block_q_dkv: int | None = None
    block_kv_dkv: int | None = None
    block_q_dq: int | None = None
    block_kv_dq: int | None = None

    @classmethod
    def for_shape(cls, m: int, n: int) -> "BlockSizes":
        """Defaults: 128 latents x 512 inputs per tile, shrunk for small problems to the next power
        of two (at least 16 latents, for Triton's ``dot``, and 128 inputs, one TPU lane width). Powers
        of two suit Triton; multiples of 8 x 128 suit Mosaic."""
        bq = min(128, max(16, pl.next_power_of_2(m)))
        bkv = min(512, max(128, pl.next_power_of_2(n)))
        return cls(bq, bkv, bq, bkv, bq, bkv)

    def resolve(self, m: int, n: int) -> "BlockSizes":
        """Fills ``None`` fields: forward blocks from ``for_shape``, backward ones from the forward."""
        d = BlockSizes.for_shape(m, n)
        bq = self.block_q or d.block_q
        bkv = self.block_kv or d.block_kv
        return BlockSizes(bq, bkv, self.block_q_dkv or bq, self.block_kv_dkv or bkv,
                          self.block_q_dq or bq, self.block_kv_dq or bkv)

    def validate(self, m: int, n: int) -> tuple[int, int]:
        """Checks the (resolved) blocks against M and N; returns the padded (M, N)."""
        for f in dataclasses.fields(self):
            b = getattr(self, f.name)
            if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b <= 0 or b % _SUBLANE:
                raise ValueError(f"latent_cross_attention: block size {f.name}={b!r} must be a positive "
                                 f"multiple of {_SUBLANE}")
        m_pad, n_pad = round_up(m, self.block_q), round_up(n, self.block_kv)
        bad = [f"{name}={getattr(self, name)}" for name in ("block_q_dkv", "block_q_dq")
               if m_pad % getattr(self, name)]
        bad += [f"{name}={getattr(self, name)}" for name in ("block_kv_dkv", "block_kv_dq")
                if n_pad % getattr(self, name)]
        if bad:
            raise ValueError(
                f"latent_cross_attention: block sizes {', '.join(bad)} do not tile the padded shapes "
                f"M={m_pad} (M={m} padded to a multiple of block_q={self.block_q}) and N={n_pad} "
                f"(N={n} padded to a multiple of block_kv={self.block_kv}); choose backward blocks "
                f"that divide them, or leave them None")
        return m_pad, n_pad


# ----------------------------------------------------------------------------------------------------
# Reference


def latent_cross_attention_reference(q, k, v, mask=None, *, scale: float | None = None):
    """Plain softmax(q k^T * scale) v in fp32, materialising [B, H, M, N]. Same contract as the
    kernel: masked keys get probability 0, an all-masked sample gives zeros."""
    _check_shapes(q, k, v, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = jnp.einsum("bhmd,bhnd->bhmn", q.astype(jnp.float32), k.astype(jnp.float32),
                   preferred_element_type=jnp.float32) * scale
    keep = None if mask is None else mask.astype(bool)[:, None, None, :]
    if keep is not None:
        s = jnp.where(keep, s, MASK_VALUE)
    s_max = lax.stop_gradient(s.max(-1, keepdims=True))
    p = jnp.exp(s - s_max)
    if keep is not None:
        p = jnp.where(keep, p, 0.0)
    denom = p.sum(-1, keepdims=True)
    safe = jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bhmn,bhnd->bhmd", p / safe, v.astype(jnp.float32),
                     preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def _check_shapes(q, k, v, mask):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"latent_cross_attention expects q [B, H, M, D], k [B, H, N, D], v [B, H, N, Dv]; "
                         f"got q{q.shape}, k{k.shape}, v{v.shape}")
    b, h, m, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:3] != k.shape[:3] or k.shape[3] != d:
        raise ValueError(f"latent_cross_attention: shapes do not agree: q{q.shape} [B, H, M, D], "
                         f"k{k.shape} [B, H, N, D], v{v.shape} [B, H, N, Dv]")
    if k.shape[2] == 0:
        raise ValueError("latent_cross_attention: the input length N is 0; there is nothing to attend "
                         "to (pass at least one input element, masked or not)")
    if m == 0:
        raise ValueError("latent_cross_attention: the number of queries M is 0")
    if mask is not None and tuple(mask.shape) != (b, k.shape[2]):
        raise ValueError(f"latent_cross_attention: mask shape {tuple(mask.shape)} must be [B, N] = "
                         f"{(b, k.shape[2])}")


# ----------------------------------------------------------------------------------------------------
# Kernels. All refs are 2-D blocks (batch and head dims squeezed by `None` in the BlockSpecs):
# q [bq, Dk], k [N_pad, Dk], v [N_pad, Dv], keep [1, N_pad] int32, lse/delta [bq, 1] fp32.

_NT = (((1,), (1,)), ((), ()))      # a @ b.T without materialising the transpose


def _fwd_kernel(q_ref, k_ref, v_ref, keep_ref, o_ref, lse_ref, *, scale, block_kv):
    q = q_ref[...]
    bq, dv = q.shape[0], v_ref.shape[-1]

    def body(j, carry):
        acc, m, l = carry
        sl = pl.ds(pl.multiple_of(j * block_kv, block_kv), block_kv)
        keep = keep_ref[:, sl] != 0                                              # [1, bkv]
        s = lax.dot_general(q, k_ref[sl, :], _NT, preferred_element_type=jnp.float32) * scale
        s = jnp.where(keep, s, MASK_VALUE)
        m_new = jnp.maximum(m, s.max(axis=-1, keepdims=True))
        p = jnp.where(keep, jnp.exp(s - m_new), 0.0)
        alpha = jnp.exp(m - m_new)
        v = v_ref[sl, :]
        acc = alpha * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return acc, m_new, alpha * l + p.sum(axis=-1, keepdims=True)

    init = (jnp.zeros((bq, dv), jnp.float32), jnp.full((bq, 1), MASK_VALUE, jnp.float32),
            jnp.zeros((bq, 1), jnp.float32))
    acc, m, l = lax.fori_loop(0, k_ref.shape[0] // block_kv, body, init)
    has_keys = l > 0.0                       # False only where every key of the sample is masked
    safe_l = jnp.where(has_keys, l, 1.0)
    o_ref[...] = jnp.where(has_keys, acc / safe_l, 0.0).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(has_keys, m + jnp.log(safe_l), 0.0)


def _probs(q, k, keep, lse, scale):
    s = lax.dot_general(q, k, _NT, preferred_element_type=jnp.float32) * scale
    return jnp.where(keep, jnp.exp(s - lse), 0.0)        # masked keys and all-masked rows: exactly 0


def _dkv_kernel(q_ref, k_ref, v_ref, keep_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                scale, block_q):
    k, v = k_ref[...], v_ref[...]
    keep = keep_ref[...] != 0                                                    # [1, bkv]

    def body(i, carry):
        dk, dv = carry
        sl = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
        q, do = q_ref[sl, :], do_ref[sl, :]
        p = _probs(q, k, keep, lse_ref[sl, :], scale)                            # [bq, bkv]
        dv = dv + jnp.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32)
        dp = lax.dot_general(do, v, _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - delta_ref[sl, :])
        dk = dk + jnp.dot(ds.T.astype(q.dtype), q, preferred_element_type=jnp.float32)
        return dk, dv

    init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    dk, dv = lax.fori_loop(0, q_ref.shape[0] // block_q, body, init)
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, keep_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale, block_kv):
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...], delta_ref[...]

    def body(j, dq):
        sl = pl.ds(pl.multiple_of(j * block_kv, block_kv), block_kv)
        k = k_ref[sl, :]
        p = _probs(q, k, keep_ref[:, sl] != 0, lse, scale)
        dp = lax.dot_general(do, v_ref[sl, :], _NT, preferred_element_type=jnp.float32)
        ds = p * (dp - delta)
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    dq = lax.fori_loop(0, k_ref.shape[0] // block_kv, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


# ----------------------------------------------------------------------------------------------------
# pallas_call wrappers on padded operands: q [B,H,Mp,Dk], k [B,H,Np,Dk], v [B,H,Np,Dv], keep [B,1,Np].


def _spec(rows, cols, index_map):
    return pl.BlockSpec((None, None, rows, cols), index_map)


def _forward(q, k, v, keep, scale, bs: BlockSizes, interpret):
    b, h, mp, dk = q.shape
    np_, dv = k.shape[2], v.shape[3]
    per_q = lambda bi, hi, i: (bi, hi, i, 0)          # noqa: E731
    whole = lambda bi, hi, i: (bi, hi, 0, 0)          # noqa: E731
    params = compiler_params(_backend(), interpret, _PARALLEL)
    return pl.pallas_call(
        functools.partial(_fwd_kernel, scale=scale, block_kv=bs.block_kv),
        grid=(b, h, mp // bs.block_q),
        in_specs=[_spec(bs.block_q, dk, per_q), _spec(np_, dk, whole), _spec(np_, dv, whole),
                  pl.BlockSpec((None, 1, np_), lambda bi, hi, i: (bi, 0, 0))],
        out_specs=[_spec(bs.block_q, dv, per_q), _spec(bs.block_q, 1, per_q)],
        out_shape=[jax.ShapeDtypeStruct((b, h, mp, dv), q.dtype),
                   jax.ShapeDtypeStruct((b, h, mp, 1), jnp.float32)],
        interpret=interpret, name="latent_xattn_fwd", compiler_params=params,
    )(q, k, v, keep)


def _backward(q, k, v, keep, out, lse, do, scale, bs: BlockSizes, interpret):
    b, h, mp, dk = q.shape
    np_, dv = k.shape[2], v.shape[3]
    # delta_i = sum_d dO_id O_id = sum_j P_ij dP_ij: an [M]-sized row sum, cheap outside the kernels.
    delta = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    whole = lambda bi, hi, i: (bi, hi, 0, 0)          # noqa: E731
    per = lambda bi, hi, i: (bi, hi, i, 0)            # noqa: E731
    params = compiler_params(_backend(), interpret, _PARALLEL)
    dk_, dv_ = pl.pallas_call(
        functools.partial(_dkv_kernel, scale=scale, block_q=bs.block_q_dkv),
        grid=(b, h, np_ // bs.block_kv_dkv),
        in_specs=[_spec(mp, dk, whole), _spec(bs.block_kv_dkv, dk, per), _spec(bs.block_kv_dkv, dv, per),
                  pl.BlockSpec((None, 1, bs.block_kv_dkv), lambda bi, hi, i: (bi, 0, i)),
                  _spec(mp, dv, whole), _spec(mp, 1, whole), _spec(mp, 1, whole)],
        out_specs=[_spec(bs.block_kv_dkv, dk, per), _spec(bs.block_kv_dkv, dv, per)],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        interpret=interpret, name="latent_xattn_bwd_dkv", compiler_params=params,
    )(q, k, v, keep, do, lse, delta)
    dq_ = pl.pallas_call(
        functools.partial(_dq_kernel, scale=scale, block_kv=bs.block_kv_dq),
        grid=(b, h, mp // bs.block_q_dq),
        in_specs=[_spec(bs.block_q_dq, dk, per), _spec(np_, dk, whole), _spec(np_, dv, whole),
                  pl.BlockSpec((None, 1, np_), lambda bi, hi, i: (bi, 0, 0)),
                  _spec(bs.block_q_dq, dv, per), _spec(bs.block_q_dq, 1, per), _spec(bs.block_q_dq, 1, per)],
        out_specs=_spec(bs.block_q_dq, dk, per),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        interpret=interpret, name="latent_xattn_bwd_dq", compiler_params=params,
    )(q, k, v, keep, do, lse, delta)
    return dq_, dk_, dv_


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _flash(q, k, v, keep, scale, bs, interpret):
    return _forward(q, k, v, keep, scale, bs, interpret)[0]


def _flash_fwd(q, k, v, keep, scale, bs, interpret):
    out, lse = _forward(q, k, v, keep, scale, bs, interpret)
    return out, (q, k, v, keep, out, lse)


def _flash_bwd(scale, bs, interpret, res, do):
    q, k, v, keep, out, lse = res
    dq, dk, dv = _backward(q, k, v, keep, out, lse, do, scale, bs, interpret)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ----------------------------------------------------------------------------------------------------
# Public entry point


def latent_cross_attention_pallas(q, k, v, mask=None, *, scale: float | None = None,
                                  block_sizes: BlockSizes | None = None, interpret: bool = False):
    """The Pallas path: pads M, N and the head dims, runs the flash kernels, slices the result."""
    _check_shapes(q, k, v, mask)
    b, h, m, dk = q.shape
    n, dv = k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(dk) if scale is None else float(scale)
    bs = (block_sizes or BlockSizes()).resolve(m, n)
    m_pad, n_pad = bs.validate(m, n)
    target = compiled_for(_backend(), interpret)
    if target == "tpu":
        off = [f"{f}={getattr(bs, f)}" for f in ("block_kv", "block_kv_dkv", "block_kv_dq")
               if getattr(bs, f) % 128]
        if off:
            raise ValueError(f"latent_cross_attention: on TPU the kv block sizes must be multiples of 128; got "
                             f"{', '.join(off)}")
    # Head dims: the full dim compiled for TPU; else (Triton, and the interpreter, which runs the
    # GPU form) a power of two >= 16, as Triton's tensors and ``dot`` need.
    dk_pad, dv_pad = (dk, dv) if target == "tpu" else (pow2_at_least_16(dk), pow2_at_least_16(dv))
    keep = jnp.ones((b, n), jnp.int32) if mask is None else mask.astype(jnp.int32)
    keep = pad_trailing(keep, n_pad)[:, None, :]                      # padded keys are masked
    qp = pad_trailing(q, m_pad, dk_pad)                               # zero dims add 0 to q.k
    kp = pad_trailing(k, n_pad, dk_pad)
    vp = pad_trailing(v, n_pad, dv_pad)
    out = _flash(qp, kp, vp, keep, scale, bs, bool(interpret))
    return out[:, :, :m, :dv]


def latent_cross_attention(q, k, v, mask=None, *, scale: float | None = None,
                           block_sizes: BlockSizes | None = None, implementation: str | None = None,
                           interpret: bool | None = None):
    """softmax(q k^T * scale) v over the long axis N, with an optional key padding mask.

    Args:
      q: [B, H, M, D] queries (the latents). k: [B, H, N, D]. v: [B, H, N, Dv].
      mask: [B, N] bool, True where the input element is real; None = all real.
      scale: score scale; default 1/sqrt(D).
      block_sizes: ``BlockSizes`` for the Pallas path (None fields get defaults).
      implementation: None/"auto" (Pallas on TPU/GPU, reference on CPU), "pallas" or "reference";
        see ``vitjax.kernels.dispatch`` ("pallas" on CPU needs ``interpret=True``).
      interpret: run the Pallas kernels in the Pallas interpreter (any backend); None: compiled
        for TPU/GPU.
    Returns:
      [B, H, M, Dv] in q's dtype. Samples with every key masked give zeros.
    """
    impl, interp = resolve(_KERNEL, implementation, interpret, _backend())
    if impl == "reference":
        return latent_cross_attention_reference(q, k, v, mask, scale=scale)
    return latent_cross_attention_pallas(q, k, v, mask, scale=scale, block_sizes=block_sizes,
                                         interpret=interp)
