"""PVT v1/v2: sizes vs timm, pyramid shapes, spatial reduction, adaptive pooling, timm parity, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax.interop import pvt as ex
from vitjax.models.pvt import V2_SIZES, adaptive_avg_pool

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

TINY = dict(num_classes=5, embed_dims=(8, 16, 24, 32), depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
            mlp_ratios=(2, 2, 2, 2), sr_ratios=(4, 2, 2, 1))


def _key(seed):
    # RBG keys: XLA compiles RngBitGenerator-based initialisers ~10x faster than threefry on CPU.
    return jax.random.key(seed, impl="rbg")


def _count(model):
    s = model.image_size
    v = jax.eval_shape(model.init, _key(0), jnp.zeros((1, s, s, model.in_channels)))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.meta.unbox(v)))


@pytest.mark.parametrize("name,timm_name", [("pvt_v2_b0", "pvt_v2_b0"), ("pvt_v2_b2_li", "pvt_v2_b2_li")])
def test_parameter_counts_match_timm(name, timm_name):
    ref = sum(p.numel() for p in timm.create_model(timm_name, pretrained=False).parameters())
    assert _count(vitjax.create_model(name, num_classes=1000)) == ref


def test_sizes_registry_and_pyramid():
    assert V2_SIZES["b5"][3] == (4, 4, 4, 4)
    assert {"pvt_v2_b0", "pvt_v2_b5", "pvt_v2_b2_li", "pvt_v1_tiny", "pvt_v1_large"} <= set(vitjax.list_models("pvt*"))
    for version, name in ((2, "pvt_v2"), (1, "pvt_v1")):
        m = vitjax.create_model(name, variant=None, image_size=64, **TINY)
        x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
        v = jax.eval_shape(m.init, _key(0), x)        # shapes only: nothing is compiled
        assert jax.eval_shape(m.apply, v, x).shape == (2, 5)
        pyr = jax.eval_shape(lambda v, x: m.apply(v, x, features=True), v, x)
        assert [f.shape for f in pyr] == [(2, 16, 16, 8), (2, 8, 8, 16), (2, 4, 4, 24), (2, 2, 2, 32)]
        p = nn.meta.unbox(v)["params"]
        # spatial reduction: stage 1 (ratio 4) keys come from a 4x4/4 conv; stage 4 (ratio 1) has none
        assert p["stage0_block0"]["attn"]["sr"]["kernel"].shape == (4, 4, 8, 8)
        assert "sr" not in p["stage3_block0"]["attn"]
        assert ("dwconv" in p["stage0_block0"]["mlp"]) == (version == 2)
        assert ("stage0_pos" in p) == (version == 1)
        k = p["patch_embed"]["proj"]["kernel"].shape[0]
        assert k == (7 if version == 2 else 4)


def test_adaptive_avg_pool_matches_torch():
    x = np.random.RandomState(0).randn(2, 11, 4, 3).astype(np.float32)
    ref = torch.nn.AdaptiveAvgPool2d(7)(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(adaptive_avg_pool(jnp.asarray(x), 7)), ref, atol=1e-6)


def _perturbed_timm(linear, seed):
    net = timm.create_model("pvt_v2_b0", pretrained=False, linear=linear, drop_path_rate=0.0, **TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("linear", [False, True])
def test_timm_parity_both_directions(linear, tmp_path):
    m = vitjax.create_model("pvt_v2", variant=None, image_size=64, linear=linear, **TINY)
    net = _perturbed_timm(linear, int(linear))
    x = np.random.RandomState(1).randn(2, 64, 64, 3).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        ref_feats = net.forward_intermediates(torch.from_numpy(x).permute(0, 3, 1, 2), intermediates_only=True)
    params = ex.from_timm(net.state_dict(), m)
    # One compiled pass: PVT's logits are the head applied to the mean of the last (normalised) map.
    pyr = jax.jit(lambda p, x: m.apply({"params": p}, x, features=True))(params, jnp.asarray(x))
    ours = np.asarray(pyr[-1]).mean((1, 2)) @ params["head"]["kernel"] + params["head"]["bias"]
    assert np.abs(ref).max() > 0.1 and np.abs(ours - ref).max() <= 1e-4
    for a, b in zip(pyr, ref_feats):
        assert np.abs(np.asarray(a) - b.permute(0, 2, 3, 1).numpy()).max() <= 1e-4
    # vitjax -> timm: exact round trip of the state dict, and timm loads it strictly
    sd = ex.to_timm(params, m)
    assert set(sd) == set(net.state_dict())
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy())
    net2 = timm.create_model("pvt_v2_b0", pretrained=False, linear=linear, **TINY).eval()
    net2.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    if not linear:
        from vitjax.interop.state_dict import write_export
        write_export(tmp_path / "pvt", sd, ex.timm_config(m))
        loaded = timm.create_model(f"local-dir:{tmp_path / 'pvt'}", pretrained=True).eval()
        with torch.no_grad():
            out = loaded(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        assert np.abs(out - ours).max() <= 1e-4


def test_errors():
    with pytest.raises(ValueError, match=r"sr_ratios \(8, 4\) must have one entry per stage \(4 stages"):
        vitjax.create_model("pvt_v2", variant="b0", sr_ratios=(8, 4))
    with pytest.raises(ValueError, match="linear spatial-reduction attention .* is a PVT v2 option"):
        vitjax.create_model("pvt_v1", variant="tiny", linear=True)
    with pytest.raises(ValueError, match="unknown PVT v2 variant 'b9'"):
        vitjax.create_model("pvt_v2", variant="b9")
    with pytest.raises(ValueError, match="PVT v1 needs image_size divisible by 32"):
        vitjax.create_model("pvt_v1", variant="tiny", image_size=100)
    with pytest.raises(ValueError, match="only PVT v2 models convert"):
        ex.to_timm({}, vitjax.create_model("pvt_v1", variant="tiny"))
    m = vitjax.create_model("pvt_v2", variant=None, image_size=64, **TINY)
    sd = _perturbed_timm(False, 0).state_dict()
    with pytest.raises(ValueError, match="missing key 'stages.1.blocks.1.attn.kv.weight'"):
        ex.from_timm({k: v for k, v in sd.items() if k != "stages.1.blocks.1.attn.kv.weight"}, m)
    with pytest.raises(ValueError, match="the checkpoint has 5 classes"):
        ex.from_timm(sd, vitjax.create_model("pvt_v2", variant=None, image_size=64, **{**TINY, "num_classes": 3}))
    assert "head" not in ex.from_timm(sd, m, drop_head=True)
