"""ViT/DeiT modules: variants, shapes, parameter counts, logical names, remat, position embeddings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax.models.posemb import resize_posemb, sincos_2d
from vitjax.models.vit import SIZES, decode_variant


def _count(model, size=224, ch=3):
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, ch)))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.meta.unbox(v)))


def test_decode_variant():
    assert decode_variant("B/16") == dict(width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16)
    assert decode_variant("So400m/14")["width"] == 1152
    assert decode_variant("g")["depth"] == 40
    with pytest.raises(ValueError, match="unknown ViT variant 'X/16'"):
        decode_variant("X/16")


@pytest.mark.parametrize("name,expected", [
    ("vit_ti16", 5_717_416),            # timm vit_tiny_patch16_224
    ("vit_b16", 86_567_656),            # timm vit_base_patch16_224
    ("deit_ti16", 5_910_800),           # timm deit_tiny_distilled_patch16_224
])
def test_parameter_counts_match_timm(name, expected):
    assert _count(vitjax.create_model(name, num_classes=1000)) == expected


def test_size_table_covers_paper_sizes():
    assert set(SIZES) >= {"Ti", "S", "B", "L", "H", "g", "So400m"}
    # ViT-L/16 and ViT-H/14 parameter counts from Dosovitskiy et al. 2021 Table 1 (307M, 632M).
    assert abs(_count(vitjax.create_model("vit_l16", num_classes=1000)) / 1e6 - 304) < 5
    assert abs(_count(vitjax.create_model("vit_h14", num_classes=1000)) / 1e6 - 632) < 3


def _tiny(**kw):
    base = dict(variant=None, num_classes=7, image_size=16, patch_size=4, in_channels=3, width=32,
                depth=2, num_heads=4, mlp_dim=64, head_zero_init=False)
    base.update(kw)
    return vitjax.create_model("vit", **base)


@pytest.mark.parametrize("pool,posemb", [("token", "learned"), ("gap", "sincos2d")])
def test_forward_shapes(pool, posemb):
    m = _tiny(pool=pool, posemb=posemb)
    x = jnp.ones((3, 16, 16, 3))
    v = m.init(jax.random.key(0), x)
    assert m.apply(v, x).shape == (3, 7)
    feats = _tiny(pool=pool, posemb=posemb, num_classes=0).apply(
        {"params": {k: p for k, p in v["params"].items() if k != "head"}}, x)
    assert feats.shape == (3, 32)
    assert ("pos_embedding" in v["params"]) == (posemb == "learned")
    assert ("cls" in v["params"]) == (pool == "token")


def test_deit_two_heads_average():
    m = vitjax.create_model("deit", variant=None, num_classes=5, image_size=16, patch_size=4, width=32,
                            depth=1, num_heads=2, mlp_dim=64, head_zero_init=False)
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    v = m.init(jax.random.key(0), x)
    assert v["params"]["pos_embedding"].value.shape == (1, 2 + 16, 32)
    a, b = m.apply(v, x, return_heads=True)
    np.testing.assert_allclose(m.apply(v, x), (a + b) / 2, atol=1e-6)
    assert not np.allclose(a, b)


def test_every_parameter_has_logical_names():
    m = _tiny(pool="token", posemb="learned")
    boxed = jax.eval_shape(m.init, jax.random.key(0), jnp.ones((1, 16, 16, 3)))["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim


def test_image_size_errors():
    with pytest.raises(ValueError, match="image_size 30 is not divisible by patch_size 4"):
        _tiny(image_size=30)
    m = _tiny()
    with pytest.raises(ValueError, match=r"do not fit this model, built for \[batch, 16, 16, 3\]"):
        m.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))


def test_unknown_option_names_nearest():
    with pytest.raises(ValueError, match="nearest valid names.*'width'"):
        vitjax.create_model("vit", variant="Ti/16", widht=3)
    with pytest.raises(ValueError, match="nearest registered names.*vit_b16"):
        vitjax.create_model("vit_b61")


@pytest.mark.parametrize("policy", ["full", "dots_saveable", "save_attn_mlp_out"])
def test_remat_does_not_change_values_or_grads(policy):
    x = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
    ref, rem = _tiny(), _tiny(remat=policy)
    params = ref.init(jax.random.key(0), x)["params"]

    def loss(m):
        return lambda p: jnp.sum(m.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(3)}) ** 2)

    l1, g1 = jax.value_and_grad(loss(ref))(params)
    l2, g2 = jax.value_and_grad(loss(rem))(params)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # fp32 reassociation noise


def test_drop_path_only_in_training():
    m = _tiny(drop_path=0.5)
    x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
    v = m.init(jax.random.key(0), x)
    np.testing.assert_allclose(m.apply(v, x), m.apply(v, x), atol=0)
    t1 = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
    t2 = m.apply(v, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(t1, t2)


def test_sincos_table_matches_mae_formula():
    t = sincos_2d(8, 2, 3)
    assert t.shape == (6, 8)
    # token (h=1, w=2): first half encodes w, second half h; omega = 1/10000^(i/2) for dim/4 = 2.
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    expect = np.concatenate([np.sin(2 * omega), np.cos(2 * omega), np.sin(1 * omega), np.cos(1 * omega)])
    np.testing.assert_allclose(t[1 * 3 + 2], expect, atol=1e-6)


def test_resize_posemb_keeps_prefix_and_interpolates():
    rng = np.random.default_rng(0)
    pe = rng.normal(size=(1, 1 + 4 * 4, 6)).astype(np.float32)
    out = resize_posemb(pe, 1, (4, 4), (8, 8))
    assert out.shape == (1, 1 + 64, 6)
    np.testing.assert_array_equal(out[:, 0], pe[:, 0])
    assert resize_posemb(pe, 1, (4, 4), (4, 4)) is pe
    const = np.ones((1, 17, 6), np.float32)
    np.testing.assert_allclose(resize_posemb(const, 1, (4, 4), (6, 6)), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="does not hold 1 prefix tokens plus a 5x5 grid"):
        resize_posemb(pe, 1, (5, 5), (8, 8))


def test_bfloat16_compute_keeps_float32_params():
    m = _tiny(dtype=jnp.bfloat16, param_dtype=jnp.float32)
    x = jnp.ones((2, 16, 16, 3))
    v = m.init(jax.random.key(0), x)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(nn.meta.unbox(v)))
    assert m.apply(v, x).dtype == jnp.bfloat16


def test_registry_lists_families():
    names = vitjax.list_models()
    for n in ("vit", "deit", "vit_ti16", "vit_s16", "vit_b16", "vit_l16", "vit_h14", "vit_g14",
              "vit_so400m14", "deit_s16"):
        assert n in names
