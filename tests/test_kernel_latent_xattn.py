"""The Pallas latent cross-attention kernel (interpret mode on CPU) against its jnp reference.

Errors are relative to the largest reference magnitude: max|kernel - ref| / max|ref|. fp32 values
and gradients (dq, dk, dv) must agree to 1e-5; bf16 to 2e-2. Grids stay small: interpret mode costs
about 2 ms per grid step.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitjax.kernels.latent_cross_attention import (
    BlockSizes, latent_cross_attention, latent_cross_attention_reference)

FP32_TOL = 1e-5
BF16_TOL = 2e-2


# XLA's CPU optimisation passes dominate these tiny programs' compile time (conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compiles")


def _inputs(b, h, m, n, d, dv=None, dtype=jnp.float32, seed=0, mask_frac=None):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(b, h, m, d)), dtype)
    k = jnp.asarray(rng.normal(size=(b, h, n, d)), dtype)
    v = jnp.asarray(rng.normal(size=(b, h, n, dv or d)), dtype)
    mask = None if mask_frac is None else jnp.asarray(rng.random((b, n)) >= mask_frac)
    return q, k, v, mask


@functools.partial(jax.jit, static_argnames=("impl", "block_sizes"))
def _run(q, k, v, mask, w, impl, block_sizes):
    def f(q, k, v):
        return latent_cross_attention(q, k, v, mask, implementation=impl, interpret=True,
                                      block_sizes=block_sizes)
    out, vjp = jax.vjp(f, q, k, v)
    return out, vjp(w.astype(out.dtype))


def _value_and_grads(impl, q, k, v, mask, block_sizes=None):
    """Output and (dq, dk, dv) of sum(out * w) for a fixed random cotangent w. One jit for all
    tests, so tests that reuse a shape reuse its compilation (interpret-mode compiles dominate)."""
    w = jnp.asarray(np.random.default_rng(1).normal(size=q.shape[:3] + v.shape[-1:]), jnp.float32)
    return _run(q, k, v, mask, w, impl, block_sizes)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


CASES = [
    # (B, H, M, N, D, Dv, mask fraction, block sizes)                      what it covers
    # N a multiple of the block; 2 q blocks; backward blocks differ from the forward ones
    (1, 2, 16, 256, 64, None, None, BlockSizes(block_q=8, block_kv=128, block_q_dkv=16, block_kv_dkv=64,
                                               block_q_dq=8, block_kv_dq=256)),
    (2, 1, 20, 300, 32, None, 0.3, BlockSizes(block_kv=128)),              # N, M not multiples; mask
    (1, 2, 8, 77, 20, 24, 0.5, None),                                      # D not a power of 2, Dv != D
]
CASE_MASKED = CASES[1]   # the shapes the masking tests reuse (same compiled program)


@pytest.mark.parametrize("b,h,m,n,d,dv,mask_frac,bs", CASES)
def test_values_and_grads_match_reference_fp32(b, h, m, n, d, dv, mask_frac, bs):
    q, k, v, mask = _inputs(b, h, m, n, d, dv, mask_frac=mask_frac)
    out, grads = _value_and_grads("pallas", q, k, v, mask, bs)
    ref_out, ref_grads = _value_and_grads("reference", q, k, v, mask)
    assert out.shape == (b, h, m, dv or d) and out.dtype == jnp.float32
    assert _rel(out, ref_out) <= FP32_TOL
    for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads):
        assert g.shape == r.shape
        assert _rel(g, r) <= FP32_TOL, name


def test_all_masked_sample_gives_zeros_and_finite_zero_grads():
    b, h, m, n, d, _, frac, bs = CASE_MASKED
    q, k, v, mask = _inputs(b, h, m, n, d, mask_frac=frac, seed=3)
    mask = mask.at[0].set(False)                       # sample 0: every input is padding
    out, grads = _value_and_grads("pallas", q, k, v, mask, bs)
    ref_out, ref_grads = _value_and_grads("reference", q, k, v, mask)
    for o, gs in ((out, grads), (ref_out, ref_grads)):
        assert np.all(np.isfinite(o)) and np.all(np.asarray(o[0]) == 0.0)
        for g in gs:
            assert np.all(np.isfinite(g))
            assert np.all(np.asarray(g[0]) == 0.0)
    assert _rel(out[1], ref_out[1]) <= FP32_TOL
    for g, r in zip(grads, ref_grads):
        assert _rel(g, r) <= FP32_TOL


def test_masked_keys_get_no_weight():
    """Changing a masked key/value must not change the output or the other keys' gradients."""
    b, h, m, n, d, _, _, bs = CASE_MASKED
    q, k, v, _ = _inputs(b, h, m, n, d)
    mask = jnp.broadcast_to(jnp.arange(n)[None] < 250, (b, n))
    out1, g1 = _value_and_grads("pallas", q, k, v, mask, bs)
    out2, g2 = _value_and_grads("pallas", q, k.at[..., 260:, :].set(50.0), v.at[..., 260:, :].set(-7.0),
                                mask, bs)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(g1[0], g2[0])
    assert np.all(np.asarray(g1[1][..., 250:, :]) == 0) and np.all(np.asarray(g1[2][..., 250:, :]) == 0)


def test_bf16_inputs():
    q, k, v, mask = _inputs(1, 2, 16, 200, 32, dtype=jnp.bfloat16, mask_frac=0.25)
    out, grads = _value_and_grads("pallas", q, k, v, mask)
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    # Reference in fp32 on the same (bf16-rounded) inputs.
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ref_out, ref_grads = _value_and_grads("reference", *f32, mask)
    assert _rel(out, ref_out) <= BF16_TOL
    for g, r in zip(grads, ref_grads):
        assert _rel(g, r) <= BF16_TOL


def test_dispatcher_picks_reference_on_cpu_and_pallas_when_interpreting():
    q, k, v, mask = _inputs(1, 1, 8, 50, 16, mask_frac=0.2)
    ref = latent_cross_attention_reference(q, k, v, mask)
    np.testing.assert_array_equal(latent_cross_attention(q, k, v, mask), ref)          # auto on CPU
    np.testing.assert_array_equal(latent_cross_attention(q, k, v, mask, implementation="auto"), ref)
    # interpret=True with auto runs the kernel: same values up to float reassociation, not bitwise.
    out = latent_cross_attention(q, k, v, mask, interpret=True)
    assert _rel(out, ref) <= FP32_TOL


def _all_shapes(jaxpr, acc):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            acc.append(tuple(getattr(var.aval, "shape", ())))
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _all_shapes(inner, acc)
    return acc


def test_kernel_never_materialises_the_score_matrix():
    """No value anywhere in the forward+backward program (kernel bodies included) has M x N entries."""
    b, h, m, n, d = 1, 2, 24, 1024, 32
    q, k, v, mask = _inputs(b, h, m, n, d, mask_frac=0.1)

    def loss(q, k, v):
        return latent_cross_attention(q, k, v, mask, implementation="pallas", interpret=True,
                                      block_sizes=BlockSizes(block_kv=128)).sum()

    shapes = _all_shapes(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v).jaxpr, [])
    assert not [s for s in shapes if m in s and n in s]
    ref_shapes = _all_shapes(jax.make_jaxpr(
        jax.grad(lambda q, k, v: latent_cross_attention_reference(q, k, v, mask).sum(),
                 argnums=(0, 1, 2)))(q, k, v).jaxpr, [])
    assert (b, h, m, n) in ref_shapes      # the check would see it if it were there


def test_bad_block_sizes_raise_clear_errors():
    q, k, v, _ = _inputs(1, 1, 16, 100, 16)
    with pytest.raises(ValueError, match=r"block sizes block_kv_dkv=96 do not tile the padded shapes "
                                         r"M=16 \(M=16 padded to a multiple of block_q=16\) and N=128 "
                                         r"\(N=100 padded to a multiple of block_kv=128\)"):
        latent_cross_attention(q, k, v, implementation="pallas", interpret=True,
                               block_sizes=BlockSizes(block_kv=128, block_kv_dkv=96))
    with pytest.raises(ValueError, match=r"block sizes block_q_dq=24 do not tile"):
        latent_cross_attention(q, k, v, implementation="pallas", interpret=True,
                               block_sizes=BlockSizes(block_q=16, block_q_dq=24))
    with pytest.raises(ValueError, match=r"block size block_q=12 must be a positive multiple of 8"):
        latent_cross_attention(q, k, v, implementation="pallas", interpret=True,
                               block_sizes=BlockSizes(block_q=12))


def test_bad_inputs_raise_clear_errors():
    q, k, v, _ = _inputs(1, 1, 8, 10, 16)
    with pytest.raises(ValueError, match="the input length N is 0"):
        latent_cross_attention(q, k[:, :, :0], v[:, :, :0], implementation="pallas", interpret=True)
    with pytest.raises(ValueError, match="the input length N is 0"):
        latent_cross_attention(q, k[:, :, :0], v[:, :, :0])
    with pytest.raises(ValueError, match=r"mask shape \(1, 9\) must be \[B, N\] = \(1, 10\)"):
        latent_cross_attention(q, k, v, jnp.ones((1, 9), bool))
    with pytest.raises(ValueError, match="shapes do not agree"):
        latent_cross_attention(q, k[..., :8], v)
    with pytest.raises(ValueError, match=r"implementation='triton'; choose one of"):
        latent_cross_attention(q, k, v, implementation="triton")


@pytest.mark.parametrize("platform,backend,call", [("cuda", "gpu", "__gpu$xla.gpu.triton"),
                                                   ("tpu", "tpu", "tpu_custom_call")])
def test_kernels_lower_for_gpu_and_tpu(monkeypatch, platform, backend, call):
    """Lower forward + both backward kernels for CUDA (Triton) and TPU (Mosaic) from this CPU host
    with jax.export: checks the Pallas lowering (block shapes, ops), not a compile or a run there."""
    import vitjax.kernels.latent_cross_attention as lx
    monkeypatch.setattr(lx, "_backend", lambda: backend)
    export = functools.partial(jax.export.export, platforms=(platform,),
                               disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(call)])
    n = 300 if backend == "gpu" else 512          # TPU: kv blocks are multiples of 128
    q, k = jnp.zeros((1, 2, 64, 64)), jnp.zeros((1, 2, n, 64))
    mask = jnp.ones((1, n), bool)

    def loss(q, k, v):
        return jnp.sum(lx.latent_cross_attention(q, k, v, mask, implementation="pallas", interpret=False) ** 2)
    for dtype in (jnp.float32, jnp.bfloat16):
        args = [x.astype(dtype) for x in (q, k, k)]
        text = export(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))))(*args).mlir_module()
        assert text.count(call) == 3          # forward, dK/dV, dQ
