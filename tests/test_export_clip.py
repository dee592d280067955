"""Parity of vitjax CLIP with open_clip ``CLIP`` and HF ``CLIPModel`` through ``vitjax.interop.clip``
(fp32, CPU), both directions.

Tiny towers (2 blocks each, widths 64/48) keep this fast; the per-block and per-embedding mappings
are what is under test. Every parameter is random, the vitjax patch-embedding bias included (it is
folded into the position table on export), LayerNorm scales ~1 + N(0, 0.1). Compared: the unit image
and text embeddings and the image-text logits, max abs difference <= 1e-4.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax.interop import clip as ex

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

torch.set_num_threads(1)
TOL = 1e-4
TINY = dict(variant=None, embed_dim=24, image_size=32, patch_size=8, in_channels=3,
            vision_width=64, vision_depth=2, vision_heads=4, vision_mlp_dim=128, vision_pool="token",
            text_vocab_size=100, text_context_length=16, text_width=48, text_depth=2, text_heads=4,
            text_mlp_dim=96, layernorm_eps=1e-5)


def _model(**kw):
    return vitjax.create_model("clip", **{**TINY, **kw})


def _random_params(model, seed=0):
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jnp.zeros((1, model.image_size, model.image_size, model.in_channels)),
                              jnp.zeros((1, model.text_context_length), jnp.int32))
    flat, tdef = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(abstract)["params"])
    leaves = []
    for i, (path, leaf) in enumerate(flat):
        key = jax.tree_util.keystr(path)
        r = np.random.default_rng(seed * 1000 + i).normal(size=leaf.shape).astype(np.float32)
        if key.endswith("['logits']['scale']"):
            leaves.append(np.float32(np.log(1 / 0.07)))
        elif key.endswith("['logits']['bias']"):
            leaves.append(np.float32(-3.0))
        elif key.endswith("['scale']"):
            leaves.append(1.0 + 0.1 * r)
        else:
            leaves.append(0.05 * r)
    return jax.tree_util.tree_unflatten(tdef, leaves)


def _randomize_torch(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "logit_scale":
                p.fill_(float(np.log(1 / 0.07)))
                continue
            r = torch.randn(p.shape, generator=gen)
            is_norm = ("ln" in name or "norm" in name or "layrnorm" in name) and name.endswith("weight")
            p.copy_(1.0 + 0.1 * r if is_norm else 0.05 * r)
    return module.eval()


def _inputs(model, seed=1, n=3):
    r = np.random.default_rng(seed)
    images = r.normal(size=(n, model.image_size, model.image_size, model.in_channels)).astype(np.float32)
    v, t = model.text_vocab_size, model.text_context_length
    eot = v - 1 if model.text_pool == "argmax" else model.eos_id
    tokens = np.zeros((n, t), np.int64)
    for i in range(n):
        length = int(r.integers(2, t - 1))
        tokens[i, 0] = 1
        tokens[i, 1:length] = r.integers(3, v - 2, size=length - 1)
        tokens[i, length] = eot
    return images, tokens


def _jax_outputs(model, params, images, tokens):
    out = model.apply({"params": params}, jnp.asarray(images), jnp.asarray(tokens, jnp.int32))
    zi, zt = np.asarray(out["img"]), np.asarray(out["txt"])
    logits = float(out["scale"]) * zi @ zt.T
    if out["bias"] is not None:
        logits = logits + float(out["bias"])
    return zi, zt, logits


def _open_clip_outputs(net, images, tokens):
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        zi = net.encode_image(x, normalize=True)
        zt = net.encode_text(torch.from_numpy(tokens), normalize=True)
        li, _ = net.get_logits(x, torch.from_numpy(tokens))
    return zi.numpy(), zt.numpy(), li.numpy()


def _hf_outputs(net, images, tokens):
    with torch.no_grad():
        out = net(input_ids=torch.from_numpy(tokens),
                  pixel_values=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    return out.image_embeds.numpy(), out.text_embeds.numpy(), out.logits_per_image.numpy()


def _assert_close(a, b, what):
    for name, x, y in zip(("image embeddings", "text embeddings", "logits"), a, b):
        diff = float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        print(f"{what}: {name} max |diff| = {diff:.1e}")      # the record, with pytest -s
        assert diff <= TOL, f"{what}: {name} differ by {diff:.2e} (> {TOL})"
        assert np.abs(np.asarray(y)).max() > 1e-2, f"{what}: {name} are degenerate"


def _torch_sd(sd):
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


@pytest.mark.parametrize("kw", [dict(activation="quick_gelu"),
                                dict(activation="gelu", text_pool="eos", eos_id=2, logit_bias_init=-10.0)],
                         ids=["openai-quickgelu", "gelu-eos-bias"])
def test_to_open_clip(kw):
    model = _model(**kw)
    params = _random_params(model)
    net = open_clip.model.CLIP(**ex.open_clip_config(model))
    missing, unexpected = net.load_state_dict(_torch_sd(ex.to_open_clip(params, model)), strict=True)
    assert not missing and not unexpected
    images, tokens = _inputs(model)
    _assert_close(_open_clip_outputs(net.eval(), images, tokens), _jax_outputs(model, params, images, tokens),
                  "vitjax -> open_clip")


def test_from_open_clip_with_inferred_config():
    ref = _model(activation="quick_gelu")
    net = _randomize_torch(open_clip.model.CLIP(**ex.open_clip_config(ref)), seed=3)
    sd = {k: v for k, v in net.state_dict().items()}
    kwargs = ex.model_kwargs_from_open_clip(sd, vision_heads=4, text_heads=4, activation="quick_gelu")
    model = vitjax.create_model("clip", **kwargs)
    for k in ("embed_dim", "image_size", "patch_size", "vision_width", "vision_depth", "vision_mlp_dim",
              "text_vocab_size", "text_context_length", "text_width", "text_depth", "text_mlp_dim"):
        assert getattr(model, k) == getattr(ref, k), k
    params = ex.from_open_clip(sd, model)
    images, tokens = _inputs(model, seed=5)
    _assert_close(_jax_outputs(model, params, images, tokens), _open_clip_outputs(net, images, tokens),
                  "open_clip -> vitjax")


@pytest.mark.parametrize("kw", [dict(activation="quick_gelu"), dict(activation="gelu", text_pool="eos", eos_id=7)],
                         ids=["argmax", "eos7"])
def test_to_hf_from_pretrained(tmp_path, kw):
    model = _model(**kw)
    params = _random_params(model, seed=2)
    ex.write_export(tmp_path, ex.to_hf(params, model), ex.hf_config(model))
    net, info = transformers.CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    images, tokens = _inputs(model, seed=7)
    _assert_close(_hf_outputs(net.eval(), images, tokens), _jax_outputs(model, params, images, tokens),
                  "vitjax -> HF")


def test_from_hf():
    ref = _model(activation="quick_gelu")
    cfg = transformers.CLIPConfig.from_dict(ex.hf_config(ref))
    net = _randomize_torch(transformers.CLIPModel(cfg), seed=4)
    kwargs = ex.model_kwargs_from_hf_config(cfg.to_dict())
    model = vitjax.create_model("clip", **kwargs)
    assert (model.text_pool, model.eos_id, model.activation) == ("eos", ref.text_vocab_size - 1, "quick_gelu")
    params = ex.from_hf(net.state_dict(), model)
    images, tokens = _inputs(ref, seed=9)    # end token = vocab - 1, as the exported config says
    _assert_close(_jax_outputs(model, params, images, tokens), _hf_outputs(net, images, tokens), "HF -> vitjax")


def test_import_clip_from_folder_roundtrip(tmp_path):
    model = _model(activation="quick_gelu")
    params = _random_params(model, seed=6)
    ex.write_export(tmp_path, ex.to_open_clip(params, model), ex.open_clip_config(model))
    back = ex.import_clip(tmp_path, model)
    # the patch bias comes back folded into the position table: same function, other parameters
    images, tokens = _inputs(model, seed=11)
    _assert_close(_jax_outputs(model, back, images, tokens), _jax_outputs(model, params, images, tokens),
                  "open_clip folder -> vitjax")
    assert np.all(back["img"]["patch_embed"]["bias"] == 0)


def test_unexportable_and_mismatched_checkpoints_fail_clearly():
    with pytest.raises(ValueError, match="vision_pool='map'"):
        ex.open_clip_config(_model(vision_pool="map"))
    with pytest.raises(ValueError, match="logit bias"):
        ex.hf_config(_model(logit_bias_init=-10.0))
    model = _model()
    sd = ex.to_open_clip(_random_params(model), model)
    sd["token_embedding.weight"] = np.zeros((120, 48), np.float32)
    with pytest.raises(ValueError, match=r"token_embedding.weight.*\(120, 48\).*\(100, 48\)"):
        ex.from_open_clip(sd, model)
    del sd["ln_final.weight"]
    with pytest.raises(ValueError, match="lacks 'ln_final.weight'"):
        ex.from_open_clip(sd, model)


def test_the_digits_demo_learns_every_export_blocker_at_once_before_training(tmp_path):
    """configs/clip_digits.py (GAP image tower, 1 channel, the bytes tokenizer's end id 2) cannot be
    written as open_clip or HF CLIP: every reason comes in one message, at start-up when
    config.export.formats asks for those formats, each naming the setting to change."""
    from vitjax.config import ConfigError, load_config_file
    from vitjax.interop.registry import export_blockers
    from vitjax.models import build_model
    from vitjax.training.exports import check_export_targets

    cfg = load_config_file("configs/clip_digits.py")
    model = build_model(cfg)
    oc, hf = export_blockers(model, "open_clip"), export_blockers(model, "hf")
    assert [w.split(":")[0] for w in oc] == ["model.vision_pool='gap'", "model.in_channels=1"]
    assert [w.split(":")[0] for w in hf] == ["model.vision_pool='gap'", "model.text_pool='eos' with eos_id=2"]
    assert "set model.in_channels=3 and add dict(op='to_rgb')" in oc[1]
    assert export_blockers(model, "timm") == ["a CLIP cannot be exported as --format timm; see python -m "
                                              "vitjax.export --help for what each model supports (a CLIP "
                                              "exports as: hf, open_clip)"]
    with pytest.raises(ValueError, match=r"open_clip: model.vision_pool='gap'.*; model.in_channels=1"):
        ex.open_clip_config(model)
    cfg.export.formats = ["open_clip", "hf"]
    with pytest.raises(ConfigError) as e:
        check_export_targets(cfg, model)
    msg = str(e.value)
    assert msg.startswith("config.export.formats=['open_clip', 'hf'] cannot be written for this CLIP: "
                          "--format open_clip: model.vision_pool='gap'")
    assert msg.count("model.vision_pool='gap'") == 2 and "in_channels=1" in msg and "eos_id=2" in msg
    assert "\n" not in msg
    # The trainer asks before anything is compiled or written.
    from vitjax.training.trainer import Trainer
    wd = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^config.export.formats=\['open_clip', 'hf'\] cannot be written"):
        Trainer(cfg, str(wd), devices=jax.devices()[:1]).train()
    assert not wd.exists()
    # A class-token, 3-channel tower with argmax pooling exports to both.
    ok = model.clone(vision_pool="token", in_channels=3, text_pool="argmax")
    assert export_blockers(ok, "open_clip") == [] and export_blockers(ok, "hf") == []
    check_export_targets(cfg, ok)
