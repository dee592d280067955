"""Parity of vitjax ViT/DeiT with timm and HF transformers through ``vitjax.interop.vit`` (fp32, CPU).

Every parameter (vitjax and torch) is replaced by random values first: vitjax zero-initialises heads
and LayerNorm scales start at one, so with init weights a wrong head or norm mapping could go unseen.
Logits are compared on 2 random images, max abs difference < 1e-4 (logits are O(1)).
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vitjax.interop import vit as ex
from vitjax.models.posemb import resize_posemb
from vitjax.models.vit import ViT

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from safetensors.torch import save_file as torch_save_safetensors  # noqa: E402

torch.set_num_threads(1)
TOL = 1e-4
MAX_DIFFS: dict[str, float] = {}   # printed by the last test (pytest -s) for the record

TI = dict(width=192, depth=12, num_heads=3, mlp_dim=768)
# ViT-B/16 shape with depth reduced from 12 to 2: the per-block mapping is what is under test, and 12
# B-sized blocks would cost most of the CPU budget of this file.
B2 = dict(width=768, depth=2, num_heads=12, mlp_dim=3072)
# Tiny-width 2-block models for the variants (GAP, sin-cos, DeiT) for the same reason.
TI2 = dict(width=192, depth=2, num_heads=3, mlp_dim=768)


# ----------------------------------------------------------------------------------------------------
# helpers


def _randomize_jax(params, seed: int):
    """Every leaf ~ N(0, 0.05), LayerNorm scales ~ 1 + N(0, 0.1) (so the features keep an O(1) scale);
    a different seed per leaf."""
    flat, tdef = jax.tree_util.tree_flatten_with_path(params)
    leaves = []
    for i, (path, leaf) in enumerate(flat):
        r = np.random.default_rng(seed * 1000 + i).normal(size=leaf.shape).astype(np.float32)
        is_scale = jax.tree_util.keystr(path).endswith("['scale']")
        leaves.append(1.0 + 0.1 * r if is_scale else 0.05 * r)
    return jax.tree_util.tree_unflatten(tdef, leaves)


def _randomize_torch(module, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * r if ("norm" in name and name.endswith("weight")) else 0.05 * r)
    return module.eval()


def _init(model: ViT, seed: int):
    """The model's parameter tree (unboxed) filled with random values.

    ``jax.eval_shape(model.init)`` rather than ``jax.jit(model.init)``: every leaf is replaced anyway,
    and compiling init (its RNG ops) took 11 s for 2 blocks and 30 s for 12 on this shared 2-core
    machine, against 0.1-1.4 s to trace; the tree is the same one init builds.
    """
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.in_channels), jnp.float32)
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(seed), x))["params"]
    return _randomize_jax(params, seed)


def _images(model: ViT, seed: int = 123) -> np.ndarray:
    s = model.image_size
    return np.random.default_rng(seed).normal(size=(2, s, s, model.in_channels)).astype(np.float32)


def _nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


_APPLY: dict = {}


def _run(model: ViT, params, x) -> np.ndarray:
    # One jitted apply per model config: a fresh jax.jit(model.apply) retraces and recompiles
    # (about 4 s for 12 blocks here).
    if model not in _APPLY:
        _APPLY[model] = jax.jit(model.apply)
    return np.asarray(_APPLY[model]({"params": params}, x))


def _torch_out(net, x) -> np.ndarray:
    with torch.no_grad():
        out = net(_nchw(x)) if not hasattr(net, "config") else net(pixel_values=_nchw(x)).logits
    return out.numpy()


def _check(name: str, a: np.ndarray, b: np.ndarray):
    assert a.shape == b.shape, (name, a.shape, b.shape)
    diff = float(np.max(np.abs(a - b)))
    MAX_DIFFS[name] = diff
    assert np.abs(a).max() > 0.1, f"{name}: outputs too small to be a meaningful comparison"
    assert diff < TOL, f"{name}: max abs diff {diff:.3g}"


def _same_tree(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a), jax.tree_util.tree_flatten_with_path(b)
    assert [jax.tree_util.keystr(k) for k, _ in fa[0]] == [jax.tree_util.keystr(k) for k, _ in fb[0]]
    for (k, x), (_, y) in zip(fa[0], fb[0]):
        assert np.shape(x) == np.shape(y), jax.tree_util.keystr(k)


def _load_timm(d):
    # The documented loading call (vitjax/interop/state_dict.py), exactly as the export CLI prints it:
    # timm.create_model("local-dir:<d>", pretrained=True) -- config.json + model.safetensors, strict load.
    snippet = ex.timm_load_snippet(d)
    assert snippet == f"timm.create_model('local-dir:{d}', pretrained=True)"
    return eval(snippet, {"timm": timm}).eval()


def _load_hf(d, cls):
    net, info = cls.from_pretrained(str(d), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return net.eval()


def _save_both(sd, d) -> list:
    """A torch state dict saved as .safetensors and with torch.save (.bin): both paths."""
    d.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in sd.items()}
    torch_save_safetensors(sd, str(d / "weights.safetensors"))
    torch.save(sd, d / "weights.bin")
    return [d / "weights.safetensors", d / "weights.bin"]


# ----------------------------------------------------------------------------------------------------
# ViT-Ti/16 and ViT-B/16 (2 blocks), 224 px, 10 classes: vitjax <-> timm and HF, both directions


@pytest.fixture(scope="module", params=["ti16", "b16_depth2"])
def vit_case(request):
    dims = TI if request.param == "ti16" else B2
    model = ViT(num_classes=10, image_size=224, patch_size=16, **dims)
    params = _init(model, seed=1 if request.param == "ti16" else 2)
    x = _images(model)
    return request.param, model, params, x, _run(model, params, x)


def test_export_to_timm_and_hf(vit_case, tmp_path):
    name, model, params, x, y = vit_case
    ex.write_export(tmp_path / "timm", ex.to_timm(params, model), ex.timm_config(model))
    _check(f"{name} vitjax->timm", _torch_out(_load_timm(tmp_path / "timm"), x), y)
    ex.write_export(tmp_path / "hf", ex.to_hf(params, model), ex.hf_config(model))
    hf = _load_hf(tmp_path / "hf", transformers.ViTForImageClassification)
    _check(f"{name} vitjax->hf", _torch_out(hf, x), y)
    if name == "ti16":
        cfg = json.loads((tmp_path / "timm" / "config.json").read_text())
        assert cfg["architecture"] == "vit_tiny_patch16_224"


def test_import_from_timm_and_hf(vit_case, tmp_path):
    name, model, params, x, _ = vit_case
    cfg = ex.timm_config(model)
    net = _randomize_torch(timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]), 10)
    want = _torch_out(net, x)
    for path in _save_both(net.state_dict(), tmp_path / "timm"):
        got = ex.import_pretrained(path, model)
        _same_tree(got, params)
        _check(f"{name} timm->vitjax ({path.suffix})", _run(model, got, x), want)

    # state_dict() of transformers v5 has the in-memory names (vit.layers.{i}.attention.q_proj...).
    hf = _randomize_torch(transformers.ViTForImageClassification(
        transformers.ViTConfig.from_dict(ex.hf_config(model))), 11)
    want = _torch_out(hf, x)
    assert any(".layers.0.attention.q_proj." in k for k in hf.state_dict())
    for path in _save_both(hf.state_dict(), tmp_path / "hf"):
        got = ex.import_pretrained(path, model)
        _same_tree(got, params)
        _check(f"{name} hf->vitjax ({path.suffix})", _run(model, got, x), want)
    if name == "ti16":
        # save_pretrained writes the on-disk (legacy) names: the other naming, through a folder.
        hf.save_pretrained(tmp_path / "hf_saved")
        got = ex.import_pretrained(tmp_path / "hf_saved", model)
        _check(f"{name} hf save_pretrained->vitjax", _run(model, got, x), want)


# ----------------------------------------------------------------------------------------------------
# variants


def test_gap_vit_timm_roundtrip(tmp_path):
    model = ViT(num_classes=10, pool="gap", **TI2)
    params = _init(model, seed=3)
    x = _images(model)
    y = _run(model, params, x)
    sd = ex.to_timm(params, model)
    assert "fc_norm.weight" in sd and "norm.weight" not in sd and "cls_token" not in sd
    ex.write_export(tmp_path / "timm", sd, ex.timm_config(model))
    net = _load_timm(tmp_path / "timm")
    assert net.global_pool == "avg" and isinstance(net.norm, torch.nn.Identity)
    _check("gap vitjax->timm", _torch_out(net, x), y)

    _randomize_torch(net, 12)
    want = _torch_out(net, x)
    path = _save_both(net.state_dict(), tmp_path / "rand")[0]
    _check("gap timm->vitjax", _run(model, ex.import_pretrained(path, model), x), want)

    for fn in (lambda: ex.to_hf(params, model), lambda: ex.hf_config(model),
               lambda: ex.from_hf({}, model)):
        with pytest.raises(ValueError, match="--format timm"):
            fn()


def test_sincos_posemb_exports_fixed_table(tmp_path):
    # num_classes=0: also checks the feature-only export (timm head = Identity, HF classifier = Identity).
    model = ViT(num_classes=0, posemb="sincos2d", **TI2)
    params = _init(model, seed=4)
    assert "pos_embedding" not in params
    x = _images(model)
    y = _run(model, params, x)
    sd = ex.to_timm(params, model)
    assert sd["pos_embed"].shape == (1, 197, 192) and not sd["pos_embed"][0, 0].any()
    ex.write_export(tmp_path / "timm", sd, ex.timm_config(model))
    _check("sincos features vitjax->timm", _torch_out(_load_timm(tmp_path / "timm"), x), y)
    ex.write_export(tmp_path / "hf", ex.to_hf(params, model), ex.hf_config(model))
    hf = _load_hf(tmp_path / "hf", transformers.ViTForImageClassification)
    _check("sincos features vitjax->hf", _torch_out(hf, x), y)

    back = ex.import_pretrained(tmp_path / "timm", model)      # the table is checked, not imported
    _same_tree(back, params)
    learned = dict(sd, pos_embed=sd["pos_embed"] + 0.01)
    with pytest.raises(ValueError, match="posemb='learned'"):
        ex.from_timm(learned, model)


def test_deit_distilled_timm_and_hf(tmp_path):
    # deit_tiny_distilled_patch16_224 shape with 2 blocks instead of 12 (CPU time).
    model = ViT(num_classes=10, distilled=True, **TI2)
    params = _init(model, seed=5)
    x = _images(model)
    y = _run(model, params, x)
    cls_only = _run(model, dict(params, head_dist=params["head"]), x)
    assert np.abs(cls_only - y).max() > 1e-2       # the distillation head matters

    ex.write_export(tmp_path / "timm", ex.to_timm(params, model), ex.timm_config(model))
    net = _load_timm(tmp_path / "timm")
    assert type(net).__name__ == "VisionTransformerDistilled"
    _check("deit vitjax->timm", _torch_out(net, x), y)
    ex.write_export(tmp_path / "hf", ex.to_hf(params, model), ex.hf_config(model))
    hf = _load_hf(tmp_path / "hf", transformers.DeiTForImageClassificationWithTeacher)
    _check("deit vitjax->hf", _torch_out(hf, x), y)

    net = _randomize_torch(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False,
                                             depth=2, num_classes=10), 13)
    path = _save_both(net.state_dict(), tmp_path / "rand_timm")[1]
    _check("deit timm->vitjax", _run(model, ex.import_pretrained(path, model), x), _torch_out(net, x))
    _randomize_torch(hf, 14)
    path = _save_both(hf.state_dict(), tmp_path / "rand_hf")[0]
    _check("deit hf->vitjax", _run(model, ex.import_pretrained(path, model), x), _torch_out(hf, x))


def test_timm_architecture_names():
    assert ex.timm_config(ViT(num_classes=5, distilled=True, **TI))["architecture"] == \
        "deit_tiny_distilled_patch16_224"
    assert ex.timm_config(ViT(num_classes=5, image_size=384, **B2 | {"depth": 12}))["architecture"] == \
        "vit_base_patch16_384"
    # no timm name for this shape: the generic entry point, with model_args carrying the shape
    cfg = ex.timm_config(ViT(num_classes=5, **TI2))
    assert cfg["architecture"] == "vit_base_patch16_224" and cfg["model_args"]["embed_dim"] == 192


def test_import_224_checkpoint_into_384_model():
    m224 = ViT(num_classes=10, **TI2)
    m384 = ViT(num_classes=10, image_size=384, **TI2)
    params = _init(m224, seed=6)
    for sd, fn in ((ex.to_timm(params, m224), ex.from_timm), (ex.to_hf(params, m224), ex.from_hf)):
        got = fn(sd, m384)
        want_tree = nn.meta.unbox(jax.eval_shape(m384.init, jax.random.key(0),
                                                 jnp.zeros((1, 384, 384, 3))))["params"]
        _same_tree(got, want_tree)
        assert got["pos_embedding"].shape == (1, 1 + 24 * 24, 192)
        np.testing.assert_allclose(got["pos_embedding"],
                                   resize_posemb(params["pos_embedding"], 1, (14, 14), (24, 24)), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# errors, formats, configs


@pytest.fixture(scope="module")
def small():
    model = ViT(num_classes=10, **TI2)
    params = _init(model, seed=7)
    return model, params, ex.to_timm(params, model), ex.to_hf(params, model)


def test_missing_unexpected_and_mismatched_keys(small):
    model, _, sd, hf_sd = small
    bad = {k: v for k, v in sd.items() if k != "blocks.1.attn.qkv.weight"}
    with pytest.raises(ValueError, match=r"missing key 'blocks\.1\.attn\.qkv\.weight'.*\(576, 192\)"):
        ex.from_timm(bad, model)
    bad = dict(sd, **{"blocks.0.mlp.fc1.weight": np.zeros((512, 192), np.float32)})
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1\.weight.*\(768, 192\).*\(512, 192\)"):
        ex.from_timm(bad, model)
    bad = dict(sd, **{"blocks.0.ls1.gamma": np.zeros((192,), np.float32)})
    with pytest.raises(ValueError, match=r"unexpected key 'blocks\.0\.ls1\.gamma'"):
        ex.from_timm(bad, model)
    bad = {k: v for k, v in hf_sd.items() if "layer.1.output.dense.weight" not in k}
    with pytest.raises(ValueError, match=r"missing key 'vit\.encoder\.layer\.1\.output\.dense\.weight'"
                                         r".*\(192, 768\)"):
        ex.from_hf(bad, model)
    deeper = ViT(num_classes=10, **TI2 | {"depth": 3})
    with pytest.raises(ValueError, match=r"missing key 'blocks\.2\."):
        ex.from_timm(sd, deeper)


def test_head_mismatch_needs_drop_head(small):
    model, params, sd, hf_sd = small
    five = ViT(num_classes=5, **TI2)
    with pytest.raises(ValueError, match=r"head\.weight.*\(10, 192\).*drop_head=True"):
        ex.from_timm(sd, five)
    with pytest.raises(ValueError, match=r"classifier\.weight.*drop_head=True"):
        ex.from_hf(hf_sd, five)
    with pytest.raises(ValueError, match="num_classes=0"):
        ex.from_timm(sd, ViT(num_classes=0, **TI2))
    for fn, s in ((ex.from_timm, sd), (ex.from_hf, hf_sd)):
        got = fn(s, five, drop_head=True)
        assert "head" not in got
        for k in ("cls", "pos_embedding", "encoder_norm"):
            jax.tree_util.tree_map(np.testing.assert_array_equal, got[k], params[k])
    # headless checkpoint (num_classes=0 export) into a classifier model
    headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
    with pytest.raises(ValueError, match="no classifier head"):
        ex.from_timm(headless, model)
    assert "head" not in ex.from_timm(headless, model, drop_head=True)


def test_hf_model_dump_without_prefix(small):
    """A ViTModel state dict (no vit. prefix, a pooler vitjax lacks) into a features-only model."""
    model, params, _, hf_sd = small
    cfg = transformers.ViTConfig.from_dict(ex.hf_config(model))
    net = _randomize_torch(transformers.ViTModel(cfg), 15)
    sd = net.state_dict()
    assert "pooler.dense.weight" in sd and not any(k.startswith("vit.") for k in sd)
    got = ex.from_hf(sd, ViT(num_classes=0, **TI2))
    np.testing.assert_array_equal(got["cls"], sd["embeddings.cls_token"].numpy())
    np.testing.assert_array_equal(got["encoder"]["block1"]["mlp"]["fc2"]["kernel"],
                                  sd["layers.1.mlp.fc2.weight"].numpy().T)
    assert ex.detect_format(sd) == "hf"


def test_files_and_formats(small, tmp_path):
    model, params, sd, hf_sd = small
    assert ex.detect_format(sd) == "timm" and ex.detect_format(hf_sd) == "hf"
    assert ex.detect_format({"model": {"module." + k: v for k, v in sd.items()}}) == "timm"
    with pytest.raises(ValueError, match="cannot tell"):
        ex.detect_format({"foo.weight": np.zeros(3)})
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="nope"):
        ex.import_pretrained(missing, model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        ex.read_state_dict(tmp_path / "empty")
    # a DeiT-style training checkpoint: {"model": state_dict, "epoch": ...}, torch.save'd
    torch.save({"model": {k: torch.from_numpy(v) for k, v in sd.items()}, "epoch": 3}, tmp_path / "ckpt.pth")
    got = ex.import_pretrained(tmp_path / "ckpt.pth", model)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, jax.tree_util.tree_map(np.asarray, params))


def test_configs_roundtrip_to_model_kwargs():
    fields = ("width", "depth", "num_heads", "mlp_dim", "patch_size", "image_size", "in_channels",
              "num_classes", "layernorm_eps", "pool", "distilled", "qkv_bias", "activation")
    models = [ViT(num_classes=10, **TI2), ViT(num_classes=0, pool="gap", image_size=256, **TI2),
              ViT(num_classes=7, distilled=True, patch_size=32, qkv_bias=False, **TI2),
              ViT(num_classes=3, in_channels=1, activation="gelu_tanh", layernorm_eps=1e-12, **TI2)]
    for m in models:
        want = {f: getattr(m, f) for f in fields}
        configs = [json.loads(json.dumps(ex.hf_config(m)))] if m.pool == "token" else []
        if m.layernorm_eps == 1e-6:
            configs.append(json.loads(json.dumps(ex.timm_config(m))))
        else:
            with pytest.raises(ValueError, match="eps"):
                ex.timm_config(m)
        for cfg in configs:
            got = ex.model_kwargs_from_torch_config(cfg)
            assert got == want, cfg.get("architecture", cfg.get("model_type"))
    # a timm hub config.json without model_args (their usual form)
    hub = {"architecture": "vit_base_patch16_224.augreg2_in21k_ft_in1k", "num_classes": 1000,
           "num_features": 768, "global_pool": "token",
           "pretrained_cfg": {"input_size": [3, 224, 224], "num_classes": 1000}}
    kw = ex.model_kwargs_from_torch_config(hub)
    got = tuple(kw[k] for k in ("width", "depth", "num_heads", "mlp_dim", "num_classes", "image_size"))
    assert got == (768, 12, 12, 3072, 1000, 224)
    with pytest.raises(ValueError, match="reg_tokens"):
        ex.model_kwargs_from_torch_config(dict(hub, model_args={"reg_tokens": 4}))
    hf_deit = ex.model_kwargs_from_torch_config(transformers.DeiTConfig(
        architectures=["DeiTForImageClassificationWithTeacher"], num_labels=4).to_dict())
    assert hf_deit["distilled"] and hf_deit["num_classes"] == 4 and hf_deit["layernorm_eps"] == 1e-12


def test_zz_report_max_diffs():
    for k, v in MAX_DIFFS.items():
        print(f"  {k:40s} {v:.3g}")


def test_timm_exports_record_the_runs_normalisation():
    """The export CLI writes the run's eval ``normalize`` (here ImageNet's) into timm's pretrained_cfg
    for every timm-exportable model, and vitjax's 0.5/0.5 for a run that has no normalize op."""
    import ml_collections

    import vitjax
    from vitjax.interop.registry import exporter
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    run = ml_collections.ConfigDict({"input": {"eval_ops": [
        {"op": "decode_center_crop", "size": 32}, {"op": "normalize", "mean": mean, "std": std}]}})
    bare = ml_collections.ConfigDict({"input": {"eval_ops": [{"op": "resize", "size": 32}]}})
    models = [ViT(num_classes=10, image_size=32, **TI2),
              vitjax.create_model("mae", variant=None, image_size=32, patch_size=16, width=64, depth=1,
                                  num_heads=2, mlp_dim=128, decoder_width=32, decoder_depth=1,
                                  decoder_heads=2, decoder_mlp_dim=64),
              vitjax.create_model("swin", variant=None, image_size=32, num_classes=5, patch_size=2, embed_dim=16,
                                  depths=(2, 2), num_heads=(2, 2), window_size=4),
              vitjax.create_model("pvt_v2", variant=None, image_size=32, num_classes=5)]
    for m in models:
        cfg = exporter(m, "timm", False, run)[1]()["pretrained_cfg"]
        assert (cfg["mean"], cfg["std"]) == (list(mean), list(std)), type(m).__name__
        cfg = exporter(m, "timm", False, bare)[1]()["pretrained_cfg"]
        assert (cfg["mean"], cfg["std"]) == ([0.5] * 3, [0.5] * 3), type(m).__name__
