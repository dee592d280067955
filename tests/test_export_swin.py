"""Swin weights to/from timm ``SwinTransformer`` and HF ``SwinForImageClassification``: logits parity.

Random weights everywhere (norm scales and biases too), tiny widths, fp32; parity bound 1e-4 abs.
The timm geometry (24px, patch 2, window 4) exercises padding (6 -> 8) and a shrunk, unshifted
window (3x3 map); the HF one (28px) padding before the shift, HF's order.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax.interop import swin as ex
from vitjax.interop.state_dict import write_export

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

ARCH = dict(num_classes=5, patch_size=2, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4)


def _key(seed):
    # RBG keys: XLA compiles RngBitGenerator-based initialisers ~10x faster than threefry on CPU.
    return jax.random.key(seed, impl="rbg")


def _jax_model(image_size, **kw):
    return vitjax.create_model("swin", variant=None, image_size=image_size, drop_path=0.0, **ARCH, **kw)


def _perturb_torch(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return net.eval()


def _random_jax_params(model, seed):
    """Random values of the init's shapes (numpy, so no initialiser is compiled); norms are random too."""
    s = model.image_size
    shapes = nn.meta.unbox(jax.eval_shape(model.init, _key(0), jnp.zeros((1, s, s, 3))))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (0.2 * rng.standard_normal(a.shape)).astype(np.float32), shapes)


@functools.lru_cache(maxsize=None)
def _jitted(model, features):
    return jax.jit(lambda p, x: model.apply({"params": p}, x, features=features))


def _apply(model, params, x, features=False):
    return _jitted(model, features)(params, jnp.asarray(x))


def _images(size):
    return np.random.RandomState(0).randn(2, size, size, 3).astype(np.float32)


def _torch_logits(net, x):
    with torch.no_grad():
        out = net(torch.from_numpy(x).permute(0, 3, 1, 2))
    return (out.logits if hasattr(out, "logits") else out).numpy()


@pytest.fixture(scope="module")
def timm_net():
    return _perturb_torch(timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=24,
                                            drop_path_rate=0.0, **ARCH), 0)


def test_timm_to_vitjax_logits_and_pyramid(timm_net):
    m = _jax_model(24)
    x = _images(24)
    params = ex.from_timm(timm_net.state_dict(), m)
    ours = np.asarray(_apply(m, params, x))
    ref = _torch_logits(timm_net, x)
    assert np.abs(ref).max() > 0.1
    assert np.abs(ours - ref).max() <= 1e-4
    with torch.no_grad():
        feats = timm_net.forward_intermediates(torch.from_numpy(x).permute(0, 3, 1, 2), intermediates_only=True)
    pyr = _apply(m, params, x, features=True)
    assert len(pyr) == len(feats) == 3
    for a, b in zip(pyr, feats):
        assert np.abs(np.asarray(a) - b.permute(0, 2, 3, 1).numpy()).max() <= 1e-4


def test_vitjax_to_timm_local_dir(tmp_path):
    m = _jax_model(24)
    params = _random_jax_params(m, 3)
    sd = ex.to_timm(params, m)
    assert sd["layers.1.blocks.0.attn.qkv.weight"].shape == (96, 32)
    assert not any("relative_position_index" in k or "attn_mask" in k for k in sd)
    write_export(tmp_path / "timm", sd, ex.timm_config(m))
    net = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = _images(24)
    ours = np.asarray(_apply(m, params, x))
    assert np.abs(ours - _torch_logits(net, x)).max() <= 1e-4
    # and back: the round trip is exact
    back = ex.from_timm(net.state_dict(), m)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_hf_both_directions(tmp_path):
    m = _jax_model(28, pad_before_shift=True)
    cfg = ex.hf_config(m)
    x = _images(28)
    # HF -> vitjax, from the transformers v5 in-memory names
    net = _perturb_torch(transformers.SwinForImageClassification(transformers.SwinConfig(
        **{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})), 1)
    params = ex.from_hf(net.state_dict(), m)
    assert np.abs(np.asarray(_apply(m, params, x)) - _torch_logits(net, x)).max() <= 1e-4
    # vitjax -> HF on-disk names + config.json, read by from_pretrained
    params = _random_jax_params(m, 5)
    sd = ex.to_hf(params, m)
    assert "swin.encoder.layers.0.downsample.reduction.weight" in sd       # HF: end of stage 1
    assert "swin.encoder.layers.2.downsample.norm.weight" not in sd
    write_export(tmp_path / "hf", sd, cfg)
    loaded = transformers.SwinForImageClassification.from_pretrained(str(tmp_path / "hf")).eval()
    ours = np.asarray(_apply(m, params, x))
    assert np.abs(ours - _torch_logits(loaded, x)).max() <= 1e-4
    back = ex.import_pretrained(tmp_path / "hf", m)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_swin_v2_timm_both_directions():
    m = _jax_model(24, version=2)
    net = _perturb_torch(timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=24,
                                           drop_path_rate=0.0, **ARCH), 7)
    x = _images(24)
    params = ex.from_timm(net.state_dict(), m)
    ours = np.asarray(_apply(m, params, x))
    assert np.abs(ours - _torch_logits(net, x)).max() <= 1e-4
    sd = ex.to_timm(params, m)
    assert "layers.0.blocks.0.attn.q_bias" in sd and "layers.0.blocks.0.attn.cpb_mlp.2.weight" in sd
    fresh = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=24, **ARCH).eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    assert np.abs(ours - _torch_logits(fresh, x)).max() <= 1e-4
    with pytest.raises(ValueError, match="only Swin v1 exports to Hugging Face"):
        ex.hf_config(m)


def test_original_layout_and_errors(timm_net):
    m = _jax_model(24)
    sd = {k: v for k, v in timm_net.state_dict().items()}
    # Microsoft's layout: downsample at the end of the previous stage, head.* instead of head.fc.*
    orig = {}
    for k, v in sd.items():
        if k.startswith("layers.") and ".downsample." in k:
            s = int(k.split(".")[1])
            k = f"layers.{s - 1}." + k.split(".", 2)[2]
        orig[k.replace("head.fc.", "head.")] = v
    a, b = ex.from_timm(orig, m), ex.from_timm(sd, m)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=r"shape mismatch for 'head.fc.weight': expected \(7, 64\) .* got "
                                         r"\(5, 64\); the checkpoint has 5 classes"):
        ex.from_timm(sd, vitjax.create_model("swin", **{**ARCH, "num_classes": 7}, variant=None, image_size=24))
    headless = ex.from_timm(sd, m, drop_head=True)
    assert "head" not in headless
    with pytest.raises(ValueError, match=r"missing key 'layers.1.blocks.1.attn.qkv.weight'"):
        ex.from_timm({k: v for k, v in sd.items() if k != "layers.1.blocks.1.attn.qkv.weight"}, m)
    with pytest.raises(ValueError, match="HF's Swin keeps the full-size bias table"):
        ex.hf_config(_jax_model(24, pad_before_shift=True))
    with pytest.raises(ValueError, match=r"pad_before_shift=False, timm's order"):
        ex.hf_config(_jax_model(28))
    with pytest.raises(ValueError, match=r"pad_before_shift=True, HF's order"):
        ex.timm_config(_jax_model(24, pad_before_shift=True))
    with pytest.raises(ValueError, match="cannot tell whether this state dict is a timm or Hugging Face Swin"):
        ex.detect_format({"foo.weight": np.zeros(1)})
