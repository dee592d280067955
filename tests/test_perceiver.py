"""Perceiver / Perceiver IO model: Fourier features, decoders, weight sharing, masks, kernel path, errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from vitjax.kernels.latent_cross_attention import BlockSizes
from vitjax.models.perceiver import (
    CrossAttendBlock, Perceiver, fourier_features, grid_positions, next_token_loss, num_fourier_features)
from vitjax.models import create_model

TINY = dict(num_classes=10, image_size=8, in_channels=1, num_latents=16, latent_dim=32, num_blocks=2,
            num_self_attends_per_block=1, num_self_heads=2, num_cross_heads=2, cross_qk_channels=16,
            cross_v_channels=16, num_bands=4)


# XLA's CPU optimisation passes dominate these tiny programs' compile time (conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compiles")


def _init(model, x, seed=0):
    """Random values in the shapes of ``model.init`` (traced abstractly: compiling init with its RNG
    costs tens of seconds on a loaded 2-core machine). Leaves ~ 0.1 N(0, 1), LayerNorm scales ~ 1."""
    return _random_tree(jax.eval_shape(model.init, jax.random.key(0), x), seed)


def _random_tree(abstract_variables, seed=0):
    flat, tdef = jax.tree_util.tree_flatten_with_path(meta.unbox(abstract_variables)["params"])
    leaves = []
    for i, (path, leaf) in enumerate(flat):
        r = np.random.default_rng(seed * 1000 + i).normal(size=leaf.shape).astype(np.float32)
        leaves.append(1.0 + 0.1 * r if jax.tree_util.keystr(path).endswith("['scale']") else 0.1 * r)
    return jax.tree_util.tree_unflatten(tdef, leaves)


_APPLY = {}


def _apply(name, **overrides):
    """One jitted ``apply(params, images, mask)`` per model (train mode, dropout rng given), shared by
    the tests so each model compiles once."""
    key = (name, tuple(sorted(overrides.items())))
    if key not in _APPLY:
        model = create_model(name, **dict(TINY, **overrides))
        _APPLY[key] = model, jax.jit(lambda p, x, m: model.apply({"params": p}, x, mask=m, train=True,
                                                                  rngs={"dropout": jax.random.key(1)}))
    return _APPLY[key]


def _n_params(tree):
    return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(tree))


def _images(b=2, s=8, c=1, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, s, s, c)), jnp.float32)


def test_fourier_features_values_and_the_29_feature_pixel():
    # An RGB pixel of an image (d=2) with K=6 bands: 3 + 2 * (2 * 6 + 1) = 29 features.
    assert 3 + num_fourier_features(2, 6) == 29
    model = Perceiver(in_channels=3, num_bands=6, image_size=32, num_latents=4, latent_dim=8,
                      num_self_heads=2, num_blocks=1, num_cross_attends=1, num_self_attends_per_block=1)
    feats, _ = model.input_features(jnp.zeros((1, 32, 32, 3)))
    assert feats.shape == (1, 32 * 32, 29)
    # Values: [x, y, sin(pi f_k x)..., sin(pi f_k y)..., cos(...)...], f_k = linspace(1, mu/2, K).
    pos = np.array([[-1.0, 0.25], [0.5, 1.0]], np.float32)
    mu, k = 32, 6
    got = fourier_features(pos, k, (mu, mu))
    f = np.linspace(1, mu / 2, k)
    for row, (x, y) in enumerate(pos):
        want = np.concatenate([[x, y], np.sin(np.pi * f * x), np.sin(np.pi * f * y),
                               np.cos(np.pi * f * x), np.cos(np.pi * f * y)])
        np.testing.assert_allclose(got[row], want, atol=2e-6)
    # The grid runs row-major over [-1, 1] in each dim, corners included.
    g = grid_positions((3, 2))
    np.testing.assert_array_equal(g, [[-1, -1], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 1]])


@pytest.mark.parametrize("name,out_shape", [("perceiver", (2, 10)), ("perceiver_io", (2, 10)),
                                            ("perceiver_io_dense", (2, 8, 8, 10))])
def test_decoders_output_shapes_and_train_mode(name, out_shape):
    model, apply = _apply(name)
    x = _images()
    out = apply(_init(model, x), x, jnp.ones((2, 8, 8), bool))
    assert out.shape == out_shape and np.all(np.isfinite(out))


def test_weight_sharing_layout_and_parameter_count():
    x = _images()
    shared = _init(create_model("perceiver", **dict(TINY, num_blocks=3)), x)   # 3 cross-attends
    assert sorted(shared) == ["cross_attend0", "cross_attend1", "head", "latents", "pool_norm", "self_attend0"]
    unshared = _init(create_model("perceiver", **dict(TINY, num_blocks=3, share_weights=False)), x)
    assert sorted(k for k in unshared if k.startswith("cross")) == [f"cross_attend{i}" for i in range(3)]
    assert sorted(k for k in unshared if "self" in k) == [f"block{i}_self_attend0" for i in range(3)]
    per_cross = _n_params(shared["cross_attend1"])
    per_tower = _n_params(shared["self_attend0"])
    assert _n_params(unshared) - _n_params(shared) == per_cross + 2 * per_tower
    # Perceiver IO: one cross-attend, the decoder's learned query and its cross-attend.
    io = _init(create_model("perceiver_io", **TINY), x)
    assert sorted(io) == ["cross_attend0", "decoder", "decoder_head", "decoder_query", "latents", "self_attend0"]
    assert io["decoder_query"].shape == (1, 32) and io["latents"].shape == (16, 32)
    # the input width 1 + 2 * (2 * 4 + 1) = 19 feeds the keys and values of the cross-attend
    assert io["cross_attend0"]["attn"]["key"]["kernel"].shape == (19, 2, 8)


def test_pallas_kernel_path_matches_reference_path_values_and_grads():
    """The cross-attend block (norms, projections, attention, MLP) with the Pallas kernel (interpret
    mode) against the jnp reference: output and gradients w.r.t. parameters, latents and inputs.
    (The whole model only adds layers around this block; compiling it twice costs ~30 s here.)"""
    rng = np.random.default_rng(0)
    latents = jnp.asarray(rng.normal(size=(2, 16, 32)), jnp.float32)
    inputs = jnp.asarray(rng.normal(size=(2, 60, 19)), jnp.float32)
    mask = jnp.ones((2, 60), bool).at[1, 40:].set(False)
    blocks = {impl: CrossAttendBlock(num_heads=2, qk_channels=16, v_channels=16, widening_factor=2,
                                     attention=impl, interpret=True, block_sizes=BlockSizes(block_kv=32))
              for impl in ("reference", "pallas")}
    params = _random_tree(jax.eval_shape(blocks["reference"].init, jax.random.key(0), latents, inputs, mask))

    def run(block):
        def loss(p, z, x):
            return jnp.sum(jnp.sin(block.apply({"params": p}, z, x, mask)))
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, latents, inputs)

    (lr, gr), (lk, gk) = run(blocks["reference"]), run(blocks["pallas"])
    assert abs(float(lr - lk)) <= 1e-5 * max(1.0, abs(float(lr)))
    for a, b in zip(jax.tree.leaves(gk), jax.tree.leaves(gr)):
        assert float(jnp.abs(a - b).max()) <= 1e-5 * max(1.0, float(jnp.abs(b).max()))


def test_padding_mask_hides_padded_pixels_and_all_masked_sample_is_defined():
    model, apply = _apply("perceiver_io")
    x = _images()
    params = _init(model, x)
    mask = jnp.ones((2, 8, 8), bool).at[:, 6:, :].set(False)        # bottom two rows are padding
    a = apply(params, x, mask)
    b = apply(params, x.at[:, 6:, :, :].set(100.0), mask)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, apply(params, x, jnp.ones((2, 8, 8), bool)))   # the mask does something
    # [B, N] masks mean the same (row-major flattening of the pixel grid)
    np.testing.assert_array_equal(model.input_features(x, mask.reshape(2, 64))[1],
                                  model.input_features(x, mask)[1])
    # a sample with no real pixel: finite logits that do not depend on its pixels (finite gradients
    # for that case are checked on the attention itself in test_kernel_latent_xattn.py)
    none = mask.at[0].set(False)
    c = apply(params, x, none)
    d = apply(params, x.at[0].set(-5.0), none)
    assert np.all(np.isfinite(c))
    np.testing.assert_array_equal(c[0], d[0])


def test_bad_inputs_and_configs_raise_clear_errors():
    model = create_model("perceiver", **TINY)
    params = _init(model, _images())
    with pytest.raises(ValueError, match=r"the inputs' last dim is 3 but model.in_channels=1"):
        model.apply({"params": params}, _images(c=3))
    with pytest.raises(ValueError, match=r"the inputs have no elements \(index dims \(0, 8\)\)"):
        model.apply({"params": params}, jnp.zeros((2, 0, 8, 1)))
    with pytest.raises(ValueError, match=r"mask shape \(2, 7, 8\) must be \[batch, \*index_dims\]"):
        model.apply({"params": params}, _images(), mask=jnp.ones((2, 7, 8), bool))
    with pytest.raises(ValueError, match=r"Perceiver decoder must be one of \('pool', 'query', 'dense'\)"):
        create_model("perceiver", **dict(TINY, decoder="mean"))
    with pytest.raises(ValueError, match=r"num_cross_attends=4 must be between 1 and num_blocks=2"):
        create_model("perceiver", **dict(TINY, num_cross_attends=4))
    with pytest.raises(ValueError, match=r"unknown Perceiver option\(s\) \['num_latent'\]"):
        create_model("perceiver", num_latent=8)
    bad_heads = create_model("perceiver", **dict(TINY, cross_qk_channels=None, cross_v_channels=None))
    with pytest.raises(ValueError, match=r"cross-attention qk_channels=19 is not divisible by num_heads=2"):
        bad_heads.init(jax.random.key(0), _images())


def test_perceiver_ar_is_causal_and_its_loss_is_next_token_cross_entropy():
    model = create_model("perceiver_ar", vocab_size=11, max_len=32, num_latents=8, width=16, depth=2,
                         num_heads=2, mlp_ratio=2)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(2, 20)), jnp.int32)
    params = _random_tree(jax.eval_shape(model.init, jax.random.key(0), tokens))
    apply = jax.jit(lambda p, t: model.apply({"params": p}, t))
    logits = apply(params, tokens)
    assert logits.shape == (2, 8, 11)
    # Latent i sits at position 12 + i. Changing token 15 (latent 3's own input) leaves latents 0-2
    # unchanged and changes latent 3 and later; changing token 2 (before the latents) changes all.
    changed = apply(params, tokens.at[:, 15].set((tokens[:, 15] + 1) % 11))
    np.testing.assert_array_equal(logits[:, :3], changed[:, :3])
    assert np.all(np.abs(np.asarray(logits[:, 3:] - changed[:, 3:])).max(axis=(0, 2)) > 0)
    early = apply(params, tokens.at[:, 2].set((tokens[:, 2] + 1) % 11))
    assert np.all(np.abs(np.asarray(logits - early)).max(axis=(0, 2)) > 0)
    # loss: latent i predicts token 13 + i
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    want = -np.mean(np.take_along_axis(np.asarray(logp), np.asarray(tokens[:, 13:])[..., None], -1))
    np.testing.assert_allclose(float(next_token_loss(logits, tokens)), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"sequence length 5 must be between num_latents=8 and max_len=32"):
        model.apply({"params": params}, tokens[:, :5])
