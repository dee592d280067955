"""CLIP's softmax and SigLIP's sigmoid loss: the reference formulas, and their sharded forms on 8
simulated devices (tests/conftest.py) against the single-device loss, values and gradients."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from vitjax.losses import contrastive as C
from vitjax.sharding import DEFAULT_RULES

REL = 1e-5


def _mesh(shape=(2, 4, 1)):
    return jax.make_mesh(shape, ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def _emb(b=64, d=16, seed=0):
    r = np.random.default_rng(seed)
    zi = r.normal(size=(b, d))
    zt = r.normal(size=(b, d)) + 0.7 * zi          # correlated pairs: a loss far from log(B)
    n = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return jnp.asarray(n(zi)), jnp.asarray(n(zt))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def test_reference_losses_match_their_formulas():
    zi, zt = _emb(8, 4)
    s, bias = 5.0, -2.0
    lg = s * np.asarray(zi, np.float64) @ np.asarray(zt, np.float64).T
    ce_rows = -np.log(np.exp(np.diag(lg)) / np.exp(lg).sum(1))
    ce_cols = -np.log(np.exp(np.diag(lg)) / np.exp(lg).sum(0))
    assert abs(float(C.softmax_loss(zi, zt, s)) - (ce_rows.mean() + ce_cols.mean()) / 2) < 1e-5
    z = 2 * np.eye(8) - 1
    sig = np.sum(np.log1p(np.exp(-z * (lg + bias)))) / 8
    assert abs(float(C.sigmoid_loss(zi, zt, s, bias)) - sig) < 1e-5


def test_masked_reference_equals_loss_on_the_real_rows():
    zi, zt = _emb(12, 8, seed=3)
    mask = jnp.arange(12) < 9

    @jax.jit
    def losses(zi, zt):
        return (C.softmax_loss(zi, zt, 7.0, mask=mask), C.softmax_loss(zi[:9], zt[:9], 7.0),
                C.sigmoid_loss(zi, zt, 7.0, -4.0, mask=mask), C.sigmoid_loss(zi[:9], zt[:9], 7.0, -4.0))

    soft_masked, soft_real, sig_masked, sig_real = losses(zi, zt)
    assert abs(float(soft_masked) - float(soft_real)) < 1e-5
    assert abs(float(sig_masked) - float(sig_real)) < 1e-5


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1), (2, 2, 2)])
def test_sharded_softmax_equals_unsharded_loss_and_grads(mesh_shape):
    zi, zt = _emb()
    s = jnp.float32(9.0)
    ref = jax.jit(jax.value_and_grad(C.softmax_loss, argnums=(0, 1, 2)))(zi, zt, s)
    mesh = _mesh(mesh_shape)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        f = jax.jit(jax.value_and_grad(C.sharded_softmax_loss, argnums=(0, 1, 2)))
        x = jax.device_put(zi, NamedSharding(mesh, P(("data", "fsdp"), None)))
        got = f(x, zt, s)
        (_, metrics) = jax.jit(lambda a, b, c: C.sharded_softmax_loss(a, b, c, return_metrics=True))(zi, zt, s)
    assert _rel(got[0], ref[0]) <= REL
    for g, r, name in zip(got[1], ref[1], ("d/dzimg", "d/dztxt", "d/dscale")):
        assert _rel(g, r) <= REL, name
    _, ref_m = C.softmax_loss(zi, zt, s, return_metrics=True)
    assert float(metrics["i2t_top1"]) == float(ref_m["i2t_top1"])
    assert float(metrics["t2i_top1"]) == float(ref_m["t2i_top1"])


@pytest.mark.parametrize("mesh_shape", [(2, 4, 1)])
def test_sharded_sigmoid_ring_equals_unsharded_loss_and_grads(mesh_shape):
    zi, zt = _emb(seed=1)
    s, b = jnp.float32(10.0), jnp.float32(-10.0) + 6.0
    ref = jax.jit(jax.value_and_grad(C.sigmoid_loss, argnums=(0, 1, 2, 3)))(zi, zt, s, b)
    with jax.set_mesh(_mesh(mesh_shape)), nn.logical_axis_rules(DEFAULT_RULES):
        got = jax.jit(jax.value_and_grad(C.sharded_sigmoid_loss, argnums=(0, 1, 2, 3)))(zi, zt, s, b)
        hlo = jax.jit(C.sharded_sigmoid_loss).lower(zi, zt, s, b).as_text()
    assert "collective_permute" in hlo or "ppermute" in hlo          # the ring, not an all-gather
    assert _rel(got[0], ref[0]) <= REL
    for g, r, name in zip(got[1], ref[1], ("d/dzimg", "d/dztxt", "d/dscale", "d/dbias")):
        assert _rel(g, r) <= REL, name


def test_contrastive_loss_dispatch_and_errors():
    zi, zt = _emb(16, 8)
    ref = float(C.softmax_loss(zi, zt, 5.0))
    assert abs(float(C.contrastive_loss("softmax", zi, zt, 5.0)[0]) - ref) < 1e-6       # no mesh
    with jax.set_mesh(_mesh()), nn.logical_axis_rules(DEFAULT_RULES):
        assert C.batch_axes() == ("data", "fsdp")
        lowered = jax.jit(lambda a, b: C.contrastive_loss("softmax", a, b, 5.0)[0]).lower(zi, zt).as_text()
        assert "all_gather" in lowered or "all-gather" in lowered
        with pytest.raises(ValueError, match="not divisible by the 8 devices"):
            C.sharded_softmax_loss(zi[:12], zt[:12], 5.0)
    with pytest.raises(ValueError, match="needs a logit bias"):
        C.contrastive_loss("sigmoid", zi, zt, 5.0, None)
    with pytest.raises(ValueError, match="'softmax' or 'sigmoid'"):
        C.contrastive_loss("hinge", zi, zt, 5.0)


def test_sharded_memory_is_local_times_global():
    """Per-device temporaries of loss+grads from XLA's memory analysis at B=2048 on 8 devices:
    unsharded ~ 3 x B*B*4 bytes; sharded softmax within a few b*B*4 blocks (b = B/8), sigmoid within
    a few b*b*4 blocks plus the ring's B*D carry."""
    B, D, n = 2048, 32, 8
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))
    one = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:1])

    def temp(fn, m, rows, k):
        sh = [NamedSharding(m, rows)] * 2 + [NamedSharding(m, P())] * (k - 2)
        shapes = [(B, D), (B, D)] + [()] * (k - 2)
        args = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=x) for s, x in zip(shapes, sh)]
        with jax.set_mesh(m):
            c = jax.jit(jax.value_and_grad(fn, argnums=tuple(range(k)))).lower(*args).compile()
        return c.memory_analysis().temp_size_in_bytes

    b = B // n
    full = temp(C.softmax_loss, one, P(), 3)
    soft = temp(lambda x, y, s: C.sharded_softmax_loss(x, y, s, mesh=mesh, axes=("data",)), mesh, P("data"), 3)
    sig = temp(lambda x, y, s, c: C.sharded_sigmoid_loss(x, y, s, c, mesh=mesh, axes=("data",)), mesh,
               P("data"), 4)
    assert full >= 2 * B * B * 4
    assert soft <= 8 * b * B * 4 + 8 * B * D * 4, (soft, b * B * 4)
    assert soft * 3 < full
    assert sig <= 16 * b * b * 4 + 8 * B * D * 4, (sig, b * b * 4)
