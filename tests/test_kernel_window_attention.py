"""Pallas window-attention kernel (interpret mode on CPU) against the pure-jnp reference.

Grids are kept to a few steps: the Pallas interpreter costs about 2 ms per grid step on CPU.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitjax.kernels import window_attention as wa
from vitjax.kernels.window_attention import (BlockSizes, relative_position_index, window_attention,
                                             window_attention_reference, window_shift_mask)


def _inputs(window, heads, head_dim, batch=2, side=2, seed=0):
    n = batch * side * side
    t = window * window
    rng = np.random.default_rng(seed)
    q, k, v, do = (jnp.asarray(rng.standard_normal((n, heads, t, head_dim), np.float32)) for _ in range(4))
    table = jnp.asarray(0.5 * rng.standard_normal(((2 * window - 1) ** 2, heads), np.float32))
    return q, k, v, table, do


def _value_and_grads(fn, do):
    def loss(q, k, v, t):
        return jnp.sum(fn(q, k, v, t) * do)
    return jax.jit(lambda *a: (fn(*a), jax.grad(loss, argnums=(0, 1, 2, 3))(*a)))


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("window,head_dim,shift,groups", [
    (7, 32, True, None),
    (8, 16, False, 4),        # GPU-style backward: one window block per group, partials summed outside
    (12, 16, True, None),
])
def test_values_and_all_grads_match_reference(window, head_dim, shift, groups):
    q, k, v, table, do = _inputs(window, heads=2, head_dim=head_dim)
    side = 2
    mask = jnp.asarray(window_shift_mask(side * window, side * window, window, window // 2)) if shift else None
    blocks = BlockSizes(block_windows=2 if groups else None, bwd_groups=groups)
    kern = _value_and_grads(lambda *a: window_attention(*a, mask, window_size=window, block_sizes=blocks,
                                                        interpret=True), do)
    ref = _value_and_grads(lambda *a: window_attention_reference(*a, mask, window_size=window), do)
    (ok, gk), (orf, gr) = kern(q, k, v, table), ref(q, k, v, table)
    assert ok.shape == q.shape
    assert _rel(ok, orf) <= 1e-5
    for name, a, b in zip(("q", "k", "v", "table"), gk, gr):
        assert a.shape == b.shape
        assert _rel(a, b) <= 1e-5, name
    # The table gradient is not trivially zero and the mask matters.
    assert float(jnp.max(jnp.abs(gk[3]))) > 1e-2
    if shift:
        plain = window_attention_reference(q, k, v, table, None, window_size=window)
        assert _rel(plain, orf) > 1e-2


@pytest.mark.parametrize("window,head_dim,shift", [
    (7, 32, False),           # T = 49 -> 64
    (7, 32, True),
    (3, 12, True),            # T = 9 -> 16 and head_dim 12 -> 16
])
def test_padded_gpu_form_matches_reference(window, head_dim, shift):
    """pad_tokens=True: the GPU (Triton) form of the kernel, run in the interpreter."""
    q, k, v, table, do = _inputs(window, heads=2, head_dim=head_dim)
    side = 2
    mask = jnp.asarray(window_shift_mask(side * window, side * window, window, window // 2)) if shift else None
    fn = lambda *a: window_attention(*a, mask, window_size=window, interpret=True, pad_tokens=True)  # noqa: E731
    kern = _value_and_grads(fn, do)
    ref = _value_and_grads(lambda *a: window_attention_reference(*a, mask, window_size=window), do)
    (ok, gk), (orf, gr) = kern(q, k, v, table), ref(q, k, v, table)
    assert ok.shape == q.shape
    assert _rel(ok, orf) <= 1e-5
    for name, a, b in zip(("q", "k", "v", "table"), gk, gr):
        assert a.shape == b.shape
        assert _rel(a, b) <= 1e-5, name
    assert float(jnp.max(jnp.abs(gk[3]))) > 1e-2
    # The kernels really ran on padded operands.
    tp, dp = wa._pow2_at_least_16(window * window), wa._pow2_at_least_16(head_dim)
    assert (tp, dp) != (window * window, head_dim)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(fn(*a) * do), argnums=(0, 1, 2, 3)))(q, k, v, table))
    assert jaxpr.count("pallas_call") == 2
    assert f"f32[{q.shape[0]},2,{tp},{dp}]" in jaxpr


def test_padded_index_marks_padding():
    idx = wa._padded_index(3, 16)
    assert (idx[:9, :9] == relative_position_index(3)).all()
    assert (idx[9:, :9] == wa._PAD_QUERY).all() and (idx[:, 9:] == wa._PAD_KEY).all()
    assert wa._PAD_QUERY < 0 and wa._PAD_KEY < 0 and wa._PAD_QUERY != wa._PAD_KEY
    assert [wa._pow2_at_least_16(n) for n in (4, 16, 17, 49, 64, 144)] == [16, 16, 32, 64, 64, 256]


def test_gpu_path_lowers_to_triton(monkeypatch):
    """Lower the GPU dispatch (fwd + bwd, window 7, shift mask) for CUDA from this CPU host: checks
    the Pallas -> Triton IR lowering (tile sizes, 2-D matmuls), not Triton's compilation or a run."""
    monkeypatch.setattr(wa, "_backend", lambda: "gpu")
    q, k, v, table, _ = _inputs(7, heads=2, head_dim=32)
    mask = jnp.asarray(window_shift_mask(14, 14, 7, 3))
    export = functools.partial(jax.export.export, platforms=("cuda",), disabled_checks=[
        jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])

    def loss(*a):
        return jnp.sum(window_attention(*a, mask, window_size=7).astype(jnp.float32) ** 2)
    for dtype in (jnp.float32, jnp.bfloat16):
        args = [x.astype(dtype) for x in (q, k, v)] + [table]
        text = export(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))))(*args).mlir_module()
        assert text.count("__gpu$xla.gpu.triton") == 2
        assert "window_attention_fwd" in text and "window_attention_bwd" in text
    # Without the padding the kernel does not lower for GPU: T = 49 is not a power of two.
    unpadded = jax.jit(lambda *a: wa._window_attention_pallas(*a, None, 7, 0.1, BlockSizes(), False, False))
    with pytest.raises(ValueError, match="power of 2"):
        export(unpadded)(q, k, v, table)
    with pytest.raises(ValueError, match="needs pad_tokens=True"):
        window_attention(q, k, v, table, window_size=7, pad_tokens=False)


def test_relative_position_index_matches_swin_definition():
    idx = relative_position_index(2)
    # tokens (0,0),(0,1),(1,0),(1,1); index = (dy+1)*3 + (dx+1)
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    assert relative_position_index(7).max() == 168 and relative_position_index(7).shape == (49, 49)


def test_shift_mask_regions():
    m = window_shift_mask(8, 8, 4, 2)
    assert m.shape == (4, 16, 16)
    assert not m[0].any()                              # top-left window: one region
    assert set(np.unique(m[3]).tolist()) == {-100.0, 0.0}
    # bottom-right window has 4 regions of 2x2 tokens: each token sees exactly 4 tokens
    assert ((m[3] == 0).sum(1) == 4).all()
    assert ((m[1] == 0).sum(1) == 8).all()             # top-right: 2 regions of 4x2


def test_auto_uses_reference_on_cpu_and_kernel_holds_no_window_score_tensor():
    q, k, v, table, _ = _inputs(7, heads=2, head_dim=16)
    auto = jax.make_jaxpr(lambda *a: window_attention(*a, window_size=7))(q, k, v, table)
    assert "pallas_call" not in str(auto)
    np.testing.assert_array_equal(window_attention(q, k, v, table, window_size=7),
                                  window_attention_reference(q, k, v, table, window_size=7))

    n, h, t, _ = q.shape
    fn = lambda *a: jnp.sum(window_attention(*a, window_size=7, interpret=True) ** 2)  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1, 2, 3)))(q, k, v, table)
    shapes = [tuple(var.aval.shape) for eqn in jaxpr.eqns for var in eqn.outvars]
    assert "pallas_call" in str(jaxpr)
    # Neither the scores [N, H, T, T] nor the gathered bias [H, T, T] / [T, T, H] exist outside kernels.
    assert not any(s in shapes for s in [(n, h, t, t), (h, t, t), (t, t, h), (t * t, h)])


def test_block_choice_and_bf16():
    assert wa._blocks(n=128, nw=64, t=49, requested=None, min_rows=128) == 4     # Swin-T stage 1
    assert wa._blocks(n=6, nw=None, t=144, requested=None, min_rows=128) == 1
    q, k, v, table, _ = _inputs(7, heads=2, head_dim=16)
    lo = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    out = window_attention(*lo, table, window_size=7, interpret=True)
    assert out.dtype == jnp.bfloat16
    ref = window_attention_reference(q, k, v, table, window_size=7)
    assert _rel(out.astype(jnp.float32), ref) < 3e-2


def test_errors():
    q, k, v, table, _ = _inputs(7, heads=2, head_dim=16)
    with pytest.raises(ValueError, match="q has 49 tokens per window but window_size=8 needs 64"):
        window_attention(q, k, v, table, window_size=8)
    with pytest.raises(ValueError, match=r"bias_table must have shape \(\(2\*7-1\)\*\*2, heads\) = \(169, 2\), "
                                         r"got \(169, 3\)"):
        window_attention(q, k, v, jnp.zeros((169, 3)), window_size=7)
    with pytest.raises(ValueError, match="8 windows is not a whole number of images of 3 windows"):
        window_attention(q, k, v, table, jnp.zeros((3, 49, 49)), window_size=7)
    with pytest.raises(ValueError, match="q, k and v must have the same shape"):
        window_attention(q, k[:4], v, table, window_size=7)
    with pytest.raises(ValueError, match="needs a TPU or GPU but the backend is 'cpu'; pass interpret=True"):
        window_attention(q, k, v, table, window_size=7, implementation="pallas")
    with pytest.raises(ValueError, match="unknown window-attention implementation 'xla'"):
        window_attention(q, k, v, table, window_size=7, implementation="xla")
    with pytest.raises(ValueError, match=r"block_windows=3 must be a positive divisor of the number of windows "
                                         r"per image \(shift_mask.shape\[0\]\) \(4\)"):
        window_attention(q, k, v, table, jnp.zeros((4, 49, 49)), window_size=7,
                         block_sizes=BlockSizes(block_windows=3), interpret=True)
    with pytest.raises(ValueError, match="not a multiple of window_size=7"):
        window_shift_mask(10, 14, 7, 3)
