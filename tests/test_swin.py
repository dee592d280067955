"""Swin v1/v2: sizes, stage geometry, pyramid shapes, shift/window behaviour, the kernel path, configs, errors."""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax.models.swin import SIZES, count_params, stage_geometry, window_partition, window_reverse

REPO = pathlib.Path(__file__).resolve().parents[1]


def _key(seed):
    # RBG keys: XLA compiles RngBitGenerator-based initialisers ~10x faster than threefry on CPU.
    return jax.random.key(seed, impl="rbg")


def test_parameter_count_matches_timm():
    assert count_params(vitjax.create_model("swin_t")) == 28_288_354     # timm swin_tiny_patch4_window7_224
    assert count_params(vitjax.create_model("swinv2_t")) == 28_347_154   # timm swinv2_tiny_window8_256


def test_size_table_and_registry():
    assert SIZES["S"] == (96, (2, 2, 18, 2), (3, 6, 12, 24))
    assert {"swin", "swin_t", "swin_s", "swin_b", "swin_l"} <= set(vitjax.list_models("swin*"))
    m = vitjax.create_model("swin_l", num_classes=10)
    assert (m.embed_dim, m.depths, m.num_heads, m.drop_path) == (192, (2, 2, 18, 2), (6, 12, 24, 48), 0.5)


def test_stage_geometry():
    # 224px Swin-T: 56, 28, 14, 7; the last map equals the window -> no shift.
    assert stage_geometry(224, 4, 4, 7) == [(56, 7, 3), (28, 7, 3), (14, 7, 3), (7, 7, 0)]
    # 24px, patch 2, window 4: 12, 6 (padded to 8), 3 (window shrinks to 3, unshifted).
    assert stage_geometry(24, 2, 3, 4) == [(12, 4, 2), (6, 4, 2), (3, 3, 0)]


def test_window_partition_roundtrip():
    x = jnp.arange(2 * 8 * 12 * 3, dtype=jnp.float32).reshape(2, 8, 12, 3)
    w = window_partition(x, 4)
    assert w.shape == (12, 16, 3)
    np.testing.assert_array_equal(w[1].reshape(4, 4, 3), x[0, :4, 4:8])     # row-major windows
    np.testing.assert_array_equal(window_reverse(w, 4, 2, 8, 12), x)


def _tiny(**kw):
    base = dict(variant=None, num_classes=5, image_size=24, patch_size=2, in_channels=3, embed_dim=16,
                depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4, drop_path=0.0)
    base.update(kw)
    return vitjax.create_model("swin", **base)


def test_forward_shapes_pyramid_and_params():
    # Shapes by abstract evaluation: nothing is compiled.
    m = _tiny()
    x = jax.ShapeDtypeStruct((2, 24, 24, 3), jnp.float32)
    v = jax.eval_shape(m.init, _key(1), x)
    p = nn.meta.unbox(v)["params"]
    logits = jax.eval_shape(m.apply, v, x)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    pyr = jax.eval_shape(lambda v, x: m.apply(v, x, features=True), v, x)
    assert [f.shape for f in pyr] == [(2, 12, 12, 16), (2, 6, 6, 32), (2, 3, 3, 64)]
    headless = {"params": {k: w for k, w in v["params"].items() if k != "head"}}
    assert jax.eval_shape(_tiny(num_classes=0).apply, headless, x).shape == (2, 64)
    assert p["stage0_block0"]["attn"]["relative_position_bias_table"].shape == (49, 2)
    assert p["stage2_block0"]["attn"]["relative_position_bias_table"].shape == (25, 4)  # shrunk window 3
    assert p["stage1_downsample"]["reduction"]["kernel"].shape == (64, 32)
    assert "stage0_downsample" not in p
    specs = nn.get_partition_spec(v)["params"]
    assert tuple(specs["stage0_block0"]["attn"]["query"]["kernel"]) == ("embed", "heads", "kv")
    assert tuple(specs["stage0_block0"]["attn"]["relative_position_bias_table"]) == (None, "heads")


ONE_STAGE = dict(depths=(2,), num_heads=(2,), image_size=16)     # 8x8 map, W4: W-MSA then SW-MSA (shift 2)


@pytest.fixture(scope="module")
def one_stage():
    m = _tiny(**ONE_STAGE)
    x = jax.random.normal(_key(0), (1, 16, 16, 3))
    return m, nn.meta.unbox(jax.jit(m.init)(_key(1), x))["params"], x


def test_shift_mask_and_relative_bias_change_the_output(one_stage):
    m, p, x = one_stage
    fwd = jax.jit(lambda x: m.apply({"params": p}, x, features=True)[0])
    # Changing a token in the top-left window moves only tokens that window (or the shifted block's
    # windows that overlap it) can see: the far corner stays put after one W-MSA + one SW-MSA block.
    moved = jnp.abs(fwd(x.at[0, 0, 0].add(5.0)) - fwd(x)).max(-1)[0]
    assert moved[0, 0] > 1e-3
    assert float(moved[7, 7]) == 0.0
    # ... while the cyclic shift lets the top-left token reach the bottom-right window (wrap-around
    # neighbours are masked out, but the shifted window spans rows/cols 2..5 -> tokens 2..5 move).
    assert float(moved[5, 5]) > 1e-4 and float(moved[6, 6]) == 0.0


def test_kernel_path_matches_reference_path(one_stage):
    # Both blocks (W-MSA, then SW-MSA with its mask) through the Pallas kernel in interpret mode;
    # the kernel's gradients are tested in tests/test_kernel_window_attention.py.
    ref, p, x = one_stage
    ker = _tiny(attention_impl="pallas", attention_interpret=True, **ONE_STAGE)
    assert "pallas_call" in str(jax.make_jaxpr(lambda q: ker.apply({"params": q}, x))(p))
    a, b = jax.jit(lambda q: (ref.apply({"params": q}, x), ker.apply({"params": q}, x)))(p)
    assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * float(jnp.max(jnp.abs(a)))


def test_v2_parameters_and_kernel_path():
    # Swin v2: the continuous-position-bias MLP produces the table the kernel consumes (the kernel's
    # table gradient, which carries the MLP's gradient, is tested in test_kernel_window_attention.py).
    kw = dict(depths=(1,), num_heads=(2,), image_size=16, version=2)      # one W-MSA block, 4 windows
    ref, ker = _tiny(**kw), _tiny(attention_impl="pallas", attention_interpret=True, **kw)
    x = jax.random.normal(_key(0), (1, 16, 16, 3))
    p = nn.meta.unbox(jax.jit(ref.init)(_key(1), x))["params"]
    attn = p["stage0_block0"]["attn"]
    assert "relative_position_bias_table" not in attn
    assert attn["cpb_fc1"]["kernel"].shape == (2, 512) and attn["cpb_fc2"]["kernel"].shape == (512, 2)
    np.testing.assert_allclose(attn["logit_scale"], np.log(10.0), rtol=1e-6)
    assert "bias" not in attn["key"] and "bias" in attn["query"]          # v2: q and v biases only
    a, b = jax.jit(lambda q: (ref.apply({"params": q}, x), ker.apply({"params": q}, x)))(p)
    assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * float(jnp.max(jnp.abs(a)))


def test_train_mode_drop_path_uses_rng(one_stage):
    _, p, x = one_stage
    m = _tiny(drop_path=0.5, **ONE_STAGE)
    run = jax.jit(lambda k: m.apply({"params": p}, x, train=True, rngs={"dropout": k}))
    a, b = run(_key(2)), run(_key(3))
    assert a.shape == (1, 5) and float(jnp.max(jnp.abs(a - b))) > 0


def test_errors():
    with pytest.raises(ValueError, match=r"depths \(2, 2\) and num_heads \(2,\) must have one entry per stage"):
        _tiny(depths=(2, 2), num_heads=(2,))
    with pytest.raises(ValueError, match="image_size 30 is not divisible by patch_size 4"):
        _tiny(image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="stage 2 width 32 is not divisible by its num_heads=3"):
        _tiny(num_heads=(2, 3, 4))
    with pytest.raises(ValueError, match=r"unknown Swin option\(s\) \['windows'\]"):
        _tiny(windows=4)
    with pytest.raises(ValueError, match="Swin version must be 1 or 2, got 3"):
        _tiny(version=3)
    with pytest.raises(ValueError, match="unknown Swin variant 'XL'"):
        vitjax.create_model("swin", variant="XL")
    m = _tiny()
    with pytest.raises(ValueError, match="Swin was built for 24x24 images .* but got 32x32"):
        jax.eval_shape(m.init, _key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("name,image_size,count", [("swin_digits", 32, None), ("swin_t_imagenet", 224, 28_288_354)])
def test_configs_load_and_build(name, image_size, count):
    from vitjax.config import load_config_file
    c = load_config_file(str(REPO / "configs" / f"{name}.py"))
    from vitjax.models import build_model
    m = build_model(c)                                  # how the trainer builds it
    assert (m.image_size, m.in_channels) == (image_size, c.model.in_channels)
    if count:
        assert count_params(m) == count
    else:
        x = jax.ShapeDtypeStruct((2, image_size, image_size, m.in_channels), jnp.float32)
        v = jax.eval_shape(m.init, _key(0), x)
        assert jax.eval_shape(lambda v, x: m.apply(v, x, train=False), v, x).shape == (2, 10)
