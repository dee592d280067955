"""Parity of vitjax Perceiver IO with HF ``PerceiverForImageClassificationFourier`` (fp32, CPU).

Both directions through files: vitjax params -> ``write_export`` -> ``from_pretrained``, and HF
``save_pretrained`` -> ``import_pretrained``. Every weight is random first (LayerNorm scales near 1)
so a wrong mapping of any tensor shows. Tiny shapes: 8x8 RGB images (64 pixels, each 3 + 2 * 129 =
261 features: HF fixes 64 bands and max resolution 224), 16 x 32 latents, 2 blocks of 2 self-attends.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from vitjax.interop import perceiver as ex
from vitjax.models.perceiver import fourier_features, grid_positions
from vitjax.models import create_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.models.perceiver import modeling_perceiver as hf_mod  # noqa: E402

torch.set_num_threads(1)
TOL = 1e-4
TINY = dict(num_classes=5, image_size=8, in_channels=3, num_latents=16, latent_dim=36, num_blocks=2,
            num_self_attends_per_block=2, num_self_heads=4,
            num_cross_heads=3,               # divides 261 input channels and 36: exercises the head split
            cross_widening_factor=2, self_widening_factor=2, num_bands=64, max_resolution=224)


# XLA's CPU optimisation passes dominate these tiny programs' compile time (conftest.py).
pytestmark = pytest.mark.usefixtures("fast_compiles")


def _model():
    return create_model("perceiver_io", **TINY)


def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 8, 8, 3)).astype(np.float32)


def _random_params(model, seed):
    """Random values in the shapes of ``model.init`` (traced abstractly: compiling init costs ~40 s
    on a loaded 2-core machine). Every leaf ~ 0.1 N(0, 1), LayerNorm scales ~ 1 + 0.1 N(0, 1)."""
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    flat, tdef = jax.tree_util.tree_flatten_with_path(meta.unbox(abstract)["params"])
    leaves = []
    for i, (path, leaf) in enumerate(flat):
        r = np.random.default_rng(seed * 1000 + i).normal(size=leaf.shape).astype(np.float32)
        leaves.append(1.0 + 0.1 * r if jax.tree_util.keystr(path).endswith("['scale']") else 0.1 * r)
    return jax.tree_util.tree_unflatten(tdef, leaves)


def _hf_logits(net, images, mask=None):
    kw = {} if mask is None else {"attention_mask": torch.from_numpy(mask.reshape(len(mask), -1).astype(np.int64))}
    with torch.no_grad():
        return net(inputs=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), **kw).logits.numpy()


@pytest.fixture(scope="module")
def jax_side():
    model = _model()
    params = _random_params(model, seed=1)
    apply = jax.jit(lambda p, x, m: model.apply({"params": p}, x, mask=m))
    return model, params, apply


def test_fourier_features_match_hf():
    pos = grid_positions((8, 8))
    ours = fourier_features(pos, 64, (224, 224))
    theirs = hf_mod.generate_fourier_features(torch.from_numpy(pos)[None], 64, (224, 224)).numpy()[0]
    assert ours.shape == theirs.shape == (64, 2 * (2 * 64 + 1))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5)
    np.testing.assert_array_equal(pos, hf_mod.build_linear_positions((8, 8)).reshape(-1, 2).numpy())


def test_export_to_hf_logits_match(jax_side, tmp_path):
    model, params, apply = jax_side
    ex.write_export(tmp_path, ex.to_hf(params, model), ex.hf_config(model))
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["PerceiverForImageClassificationFourier"]
    net = transformers.PerceiverForImageClassificationFourier.from_pretrained(str(tmp_path)).eval()
    # strict: every HF parameter came from the file (from_pretrained would random-init missing ones)
    exported = set(ex.to_hf(params, model))
    assert exported == set(net.state_dict())
    images = _images()
    ours = np.asarray(apply(params, images, np.ones((2, 8, 8), bool)))
    theirs = _hf_logits(net, images)
    assert ours.shape == theirs.shape == (2, 5)
    assert np.abs(ours).max() > 0.1                      # not a trivially zero output
    assert np.abs(ours - theirs).max() <= TOL
    # padding masks mean the same on both sides: HF's attention_mask [B, H*W] = vitjax's [B, H, W]
    mask = np.ones((2, 8, 8), bool)
    mask[1, 5:] = False
    ours_m, theirs_m = np.asarray(apply(params, images, mask)), _hf_logits(net, images, mask)
    assert np.abs(ours_m - ours).max() > 1e-3           # the mask changes sample 1
    assert np.abs(ours_m - theirs_m).max() <= TOL


def test_import_from_hf_logits_match(tmp_path):
    model = _model()
    cfg = transformers.PerceiverConfig(**{k: v for k, v in ex.hf_config(model).items()
                                          if k not in ("architectures", "model_type")})
    torch.manual_seed(0)
    net = transformers.PerceiverForImageClassificationFourier(cfg).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in net.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * r if "layernorm" in name and name.endswith("weight") else 0.1 * r)
    net.save_pretrained(str(tmp_path))
    kwargs = ex.model_kwargs_from_hf_config(json.loads((tmp_path / "config.json").read_text()))
    model2 = create_model("perceiver_io", **kwargs)
    assert model2 == model                                    # the config round-trips to the same model
    params = ex.import_pretrained(tmp_path, model2)
    images = _images(3)
    ours = np.asarray(jax.jit(lambda p, x: model2.apply({"params": p}, x))(params, images))
    theirs = _hf_logits(net, images)
    assert np.abs(ours).max() > 0.1
    assert np.abs(ours - theirs).max() <= TOL


def test_incompatible_models_and_checkpoints_are_refused(jax_side):
    model, params, _ = jax_side
    pool = create_model("perceiver", **dict(TINY, num_blocks=2, num_cross_attends=2))
    with pytest.raises(ValueError, match=r"cannot be expressed as HF PerceiverForImageClassificationFourier: "
                                         r"decoder='pool' \(HF needs 'query'\); num_cross_attends=2 "
                                         r"\(HF needs 1\)"):
        ex.to_hf(params, pool)
    small_mu = create_model("perceiver_io", **dict(TINY, max_resolution=None))
    with pytest.raises(ValueError, match=r"max_resolution=None \(resolves to \(8, 8\); HF needs 224\)"):
        ex.hf_config(small_mu)
    sd = ex.to_hf(params, model)
    bigger = create_model("perceiver_io", **dict(TINY, num_self_attends_per_block=3))
    with pytest.raises(ValueError, match=r"lacks .*encoder.self_attends.2"):
        ex.from_hf(sd, bigger)
    smaller = create_model("perceiver_io", **dict(TINY, num_self_attends_per_block=1))
    with pytest.raises(ValueError, match=r"tensors this model does not use: \['perceiver.encoder.self_attends.1"):
        ex.from_hf(sd, smaller)
