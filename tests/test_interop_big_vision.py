"""big_vision / vision_transformer ``.npz`` ViT checkpoints (``vitjax.interop.big_vision``), checked
against timm's own reader of that format, ``timm.models.vision_transformer._load_weights``:

- export: a vitjax ViT written to ``model.npz`` and loaded by timm's loader into a timm ViT of the same
  shape gives vitjax's logits (class-token ViT in both layouts; a SigLIP-style MAP-pooled tower);
- import: a timm ViT's weights written in the npz layout by this file's own inverse of timm's loader
  (``_timm_to_npz``, which shares nothing with the import path) and imported into vitjax give timm's
  logits (AugReg layout; big_vision's scanned, ``params/img/``-prefixed SigLIP layout);
- bad files: one-line errors naming the first mismatched tensor and both shapes.

Every parameter is random (vitjax zero-initialises heads), logits are compared on 2 random images,
max abs difference <= 1e-4 (fp32, logits O(1)).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from vitjax import param_tree
from vitjax.interop import big_vision as bv
from vitjax.interop.registry import export_blockers, exporter, import_weights
from vitjax.interop.state_dict import model_shapes
from vitjax.models.clip import ClipImageTower
from vitjax.models.vit import ViT

torch = pytest.importorskip("torch")
tv = pytest.importorskip("timm.models.vision_transformer")

torch.set_num_threads(1)
pytestmark = pytest.mark.usefixtures("fast_compiles")
TOL = 1e-4
SHAPE = dict(image_size=24, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64)


def _params(model, seed=0):
    """Every parameter ~ N(0, 0.05), LayerNorm scales ~ 1 + N(0, 0.1), from the abstract shapes."""
    rng = np.random.default_rng(seed)
    flat = {}
    for k, shape in model_shapes(model).items():
        r = rng.normal(size=shape).astype(np.float32)
        flat[k] = 1.0 + 0.1 * r if k.endswith("/scale") else 0.05 * r
    return param_tree.unflatten(flat)


def _images(c=3, n=2, size=24):
    return np.random.default_rng(7).normal(size=(n, size, size, c)).astype(np.float32)


_APPLY = {}     # one compiled forward per model configuration


def _vitjax_logits(model, params, x):
    if model not in _APPLY:
        _APPLY[model] = jax.jit(model.apply)
    return np.asarray(_APPLY[model]({"params": params}, x))


def _timm_logits(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def _timm_net(seed=None, **kw):
    net = tv.VisionTransformer(**kw).eval()
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in net.named_parameters():
                r = torch.randn(p.shape, generator=gen)
                p.copy_(1.0 + 0.1 * r if ("norm" in name and name.endswith("weight")) else 0.05 * r)
    return net


def _timm_to_npz(net, *, layout: str, prefix: str = "", scanned: bool = False) -> dict[str, np.ndarray]:
    """The inverse of timm's ``_load_weights``: a timm ViT's weights as the npz it would load."""
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    d, h = net.embed_dim, net.blocks[0].attn.num_heads
    a, n2, m = {"vit": (1, 2, 3), "big_vision": (0, 1, 0)}[layout]
    w = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": sd["patch_embed.proj.bias"]}
    if "cls_token" in sd:
        w["cls"] = sd["cls_token"]
    w["Transformer/posembed_input/pos_embedding" if layout == "vit" else "pos_embedding"] = sd["pos_embed"]

    def attn(out, pre, q, kv_w, kv_b, q_b, proj_w, proj_b):
        for n, wt, b in zip(("query", "key", "value"), (q,) + tuple(np.split(kv_w, 2)),
                            (q_b,) + tuple(np.split(kv_b, 2))):
            out[f"{pre}{n}/kernel"], out[f"{pre}{n}/bias"] = wt.T.reshape(d, h, -1), b.reshape(h, -1)
        out[f"{pre}out/kernel"], out[f"{pre}out/bias"] = proj_w.T.reshape(h, -1, d), proj_b

    def mlp(out, pre, p):
        for r in range(2):
            out[f"{pre}Dense_{r}/kernel"] = sd[f"{p}fc{r + 1}.weight"].T
            out[f"{pre}Dense_{r}/bias"] = sd[f"{p}fc{r + 1}.bias"]

    blocks = []
    for i in range(len(net.blocks)):
        b, p = {}, f"blocks.{i}."
        b["LayerNorm_0/scale"], b["LayerNorm_0/bias"] = sd[p + "norm1.weight"], sd[p + "norm1.bias"]
        qw, kw, vw = np.split(sd[p + "attn.qkv.weight"], 3)
        qb, kb, vb = np.split(sd[p + "attn.qkv.bias"], 3)
        attn(b, f"MultiHeadDotProductAttention_{a}/", qw, np.concatenate([kw, vw]), np.concatenate([kb, vb]),
             qb, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        b[f"LayerNorm_{n2}/scale"], b[f"LayerNorm_{n2}/bias"] = sd[p + "norm2.weight"], sd[p + "norm2.bias"]
        mlp(b, f"MlpBlock_{m}/", p + "mlp.")
        blocks.append(b)
    for k in blocks[0]:
        if scanned:
            w[f"Transformer/encoderblock/{k}"] = np.stack([b[k] for b in blocks])
        else:
            w.update({f"Transformer/encoderblock_{i}/{k}": b[k] for i, b in enumerate(blocks)})
    w["Transformer/encoder_norm/scale"], w["Transformer/encoder_norm/bias"] = sd["norm.weight"], sd["norm.bias"]
    if "attn_pool.latent" in sd:
        mp = "MAPHead_0/"
        w[mp + "probe"] = sd["attn_pool.latent"]
        ap = {k[len("attn_pool."):]: v for k, v in sd.items() if k.startswith("attn_pool.")}
        attn(w, mp + "MultiHeadDotProductAttention_0/", ap["q.weight"], ap["kv.weight"], ap["kv.bias"],
             ap["q.bias"], ap["proj.weight"], ap["proj.bias"])
        w[mp + "LayerNorm_0/scale"], w[mp + "LayerNorm_0/bias"] = ap["norm.weight"], ap["norm.bias"]
        mlp(w, mp + "MlpBlock_0/", "attn_pool.mlp.")
    if "head.weight" in sd:
        w["head/kernel"], w["head/bias"] = sd["head.weight"].T, sd["head.bias"]
    return {prefix + k: v for k, v in w.items()}


TIMM_COMMON = dict(img_size=24, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


@pytest.fixture(scope="module")
def classic():
    model = ViT(num_classes=5, **SHAPE)
    return model, _params(model, seed=1)


@pytest.fixture(scope="module")
def siglip_tower():
    model = ClipImageTower(num_classes=6, pool="gap", attn_pool=True, activation="gelu_tanh", **SHAPE)
    return model, _params(model, seed=2)


# ------------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("layout", ["vit", "big_vision"])
def test_export_loads_in_timms_own_npz_loader_with_the_same_logits(classic, tmp_path, layout):
    model, params = classic
    bv.write_npz(tmp_path, bv.to_npz(params, model, layout), bv.npz_config(model, layout))
    net = tv.VisionTransformer(**bv.npz_config(model, layout)["timm_model_args"]).eval()
    tv._load_weights(net, str(tmp_path / "model.npz"))
    x = _images()
    err = np.abs(_timm_logits(net, x) - _vitjax_logits(model, params, x)).max()
    assert err <= TOL, (layout, err)


def test_a_map_pooled_siglip_tower_exports_to_timms_loader(siglip_tower, tmp_path):
    model, params = siglip_tower
    export = exporter(model, "npz")                      # the registry's converter, as the CLI uses it
    cfg = export.config()
    assert cfg["layout"] == "big_vision" and cfg["timm_model_args"]["global_pool"] == "map"
    export.writer.write_export(tmp_path, export.state_dict(params), cfg)
    net = tv.VisionTransformer(**cfg["timm_model_args"]).eval()
    tv._load_weights(net, str(tmp_path / "model.npz"))
    x = _images()
    assert np.abs(_timm_logits(net, x) - _vitjax_logits(model, params, x)).max() <= TOL


def test_gap_deit_and_ln_pre_models_have_no_npz_layout():
    with pytest.raises(ValueError, match=r"^vitjax's pool='gap' normalises the averaged tokens"):
        bv.to_npz({}, ViT(num_classes=5, pool="gap", **SHAPE))
    with pytest.raises(ValueError, match=r"^a distilled \(DeiT\) ViT has a distillation token"):
        bv.to_npz({}, ViT(num_classes=5, distilled=True, **SHAPE))
    tower = ClipImageTower(num_classes=0, pool="gap", pre_norm=True, **SHAPE)
    why = export_blockers(tower, "npz")                   # what the trainer checks at start-up: all at once
    assert [w.split(" ")[:3] for w in why] == [["the", "image", "tower's"],
                                               ["vitjax's", "pool='gap'", "normalises"]]


# ------------------------------------------------------------------------------------------- import


def test_a_timm_vit_in_the_augreg_layout_imports_with_timms_logits(tmp_path):
    net = _timm_net(seed=3, num_classes=5, **TIMM_COMMON)
    np.savez(tmp_path / "augreg.npz", **_timm_to_npz(net, layout="vit"))
    model = ViT(num_classes=5, **SHAPE)
    params = import_weights(tmp_path / "augreg.npz", model)        # format told by the keys
    x = _images()
    assert np.abs(_vitjax_logits(model, params, x) - _timm_logits(net, x)).max() <= TOL


def test_a_scanned_siglip_checkpoint_gives_its_image_tower(tmp_path):
    net = _timm_net(seed=4, num_classes=6, class_token=False, global_pool="map", act_layer="gelu_tanh",
                    **TIMM_COMMON)
    w = _timm_to_npz(net, layout="big_vision", prefix="params/img/", scanned=True)
    w["params/txt/Embed_0/embedding"] = np.zeros((10, 32), np.float32)   # the text tower: not read
    w["params/t"] = np.zeros((1,), np.float32)
    np.savez(tmp_path / "siglip.npz", **w)
    tower = ClipImageTower(num_classes=6, pool="gap", attn_pool=True, activation="gelu_tanh", **SHAPE)
    params = import_weights(tmp_path / "siglip.npz", tower)
    x = _images()
    assert np.abs(_vitjax_logits(tower, params, x) - _timm_logits(net, x)).max() <= TOL


def test_round_trip_through_both_layouts_is_exact(classic):
    model, params = classic
    for layout in ("vit", "big_vision"):
        back = bv.from_npz(bv.to_npz(params, model, layout), model)
        x = _images()
        assert np.abs(_vitjax_logits(model, back, x) - _vitjax_logits(model, params, x)).max() <= 1e-5


def test_a_bigger_position_grid_is_resized_and_the_head_can_be_dropped(classic):
    model, params = classic
    big = ViT(num_classes=7, **{**SHAPE, "image_size": 32})
    w = bv.to_npz(params, model)
    out = bv.from_npz(w, big, drop_head=True)
    assert out["pos_embedding"].shape == (1, 1 + 16, 32) and "head" not in out


# ---------------------------------------------------------------------------------------- bad files


def test_a_mismatched_tensor_is_named_with_both_shapes(classic):
    model, params = classic
    w = bv.to_npz(params, model)
    w["Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel"] = np.zeros((32, 48), np.float32)
    with pytest.raises(ValueError) as e:
        bv.from_npz(w, model)
    assert str(e.value) == (
        "shape mismatch for 'Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel': the checkpoint has "
        "(32, 48), the vitjax model expects (32, 64) (vitjax 'encoder/block1/mlp/fc1/kernel')")


def test_a_missing_tensor_and_a_foreign_file_are_named(classic):
    model, params = classic
    w = {"params/" + k: v for k, v in bv.to_npz(params, model).items()}
    del w["params/Transformer/encoderblock_0/LayerNorm_2/bias"]
    with pytest.raises(ValueError) as e:
        bv.from_npz(w, model)
    assert str(e.value) == ("missing tensor 'params/Transformer/encoderblock_0/LayerNorm_2/bias' in the npz "
                            "checkpoint (vitjax 'encoder/block0/norm2/bias', expected shape (32,))")
    w = bv.to_npz(params, model)
    with pytest.raises(ValueError, match=r"^shape mismatch for 'head/bias': the checkpoint has \(5,\), the "
                                         r"vitjax model expects \(3,\) \(num_classes=3; pass drop_head=True"):
        bv.from_npz(w, ViT(num_classes=3, **SHAPE))
    with pytest.raises(ValueError, match=r"^missing tensor 'cls' .* \(the checkpoint has no class token"):
        tower = ClipImageTower(num_classes=5, pool="gap", attn_pool=True, **SHAPE)
        bv.from_npz(bv.to_npz(_params(tower), tower), model)
    with pytest.raises(ValueError, match=r"^not a big_vision / vision_transformer ViT checkpoint"):
        bv.from_npz({"foo/bar": np.zeros(3)}, model)
