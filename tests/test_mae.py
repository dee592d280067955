"""MAE: masking, targets, HF ViTMAE parity, encoder export, sharding, training with probes, and the
MAE <-> classifier initialisation rules."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vitjax import sharding as sh
from vitjax.config import ConfigError, set_key
from vitjax.models.mae import MAE, mae_loss, patchify, pixel_targets, random_masking, unpatchify

TINY = dict(image_size=16, patch_size=4, in_channels=3, width=64, depth=2, num_heads=4, mlp_dim=128,
            decoder_width=32, decoder_depth=2, decoder_heads=4, decoder_mlp_dim=64)


def _params(model, seed=0):
    """Random parameters in init's shapes: every leaf ~ N(0, 0.05), LayerNorm scales ~ 1 + N(0, 0.1)
    (zero biases and unit scales would let a wrong mapping of them go unseen). ``eval_shape``: no
    compile of init's RNG."""
    s = model.image_size
    shapes = jax.eval_shape(model.init, {"params": jax.random.key(seed), "masking": jax.random.key(1)},
                            jax.ShapeDtypeStruct((1, s, s, model.in_channels), jnp.float32))
    rng = np.random.default_rng(seed)

    def fill(path, a):
        r = rng.normal(size=a.shape).astype(np.float32)
        return 1.0 + 0.1 * r if jax.tree_util.keystr(path).endswith("['scale']") else 0.05 * r
    return jax.tree_util.tree_map_with_path(fill, nn.meta.unbox(shapes)["params"])


_APPLY = {}


def _apply(model, params, x, **kw):
    """Jitted apply, one compile per (model, method): eager flax dispatches op by op, which costs
    minutes on a loaded 2-core machine."""
    method = kw.pop("method", None)
    key = (model, method)
    if key not in _APPLY:
        _APPLY[key] = jax.jit(lambda p, x, **k: model.apply({"params": p}, x, method=method, **k))
    return _APPLY[key](params, x, **kw)


def _images(model, n=2, seed=3):
    s = model.image_size
    return np.random.default_rng(seed).normal(size=(n, s, s, model.in_channels)).astype(np.float32)


def test_random_masking_keeps_k_and_restores_order():
    noise = jax.random.uniform(jax.random.key(0), (3, 16))
    keep, mask, restore = jax.jit(lambda n: random_masking(n, 0.75))(noise)
    assert keep.shape == (3, 4) and mask.shape == (3, 16) and restore.shape == (3, 16)
    np.testing.assert_array_equal(np.asarray(mask).sum(1), [12, 12, 12])
    # Kept = the 4 lowest-noise patches, and exactly those are unmasked.
    np.testing.assert_array_equal(np.sort(np.asarray(keep), 1), np.sort(np.argsort(np.asarray(noise), 1)[:, :4], 1))
    for b in range(3):
        assert set(np.flatnonzero(np.asarray(mask[b]) == 0)) == set(np.asarray(keep[b]).tolist())
    # ids_restore undoes the shuffle: shuffled positions gathered back give 0..L-1.
    shuffled = np.argsort(np.asarray(noise), 1)
    np.testing.assert_array_equal(np.take_along_axis(shuffled, np.asarray(restore), 1), np.tile(np.arange(16), (3, 1)))


def test_patchify_matches_the_reference_order_and_inverts():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    # MAE/HF: NCHW -> reshape (n, c, h, p, w, q) -> einsum nchpwq->nhwpqc.
    nchw = x.transpose(0, 3, 1, 2).reshape(2, 3, 2, 4, 2, 4)
    ref = np.einsum("nchpwq->nhwpqc", nchw).reshape(2, 4, 48)
    np.testing.assert_array_equal(np.asarray(patchify(x, 4)), ref)
    np.testing.assert_array_equal(np.asarray(unpatchify(patchify(x, 4), 4, 3)), x)
    t = np.asarray(pixel_targets(x, 4, True))
    np.testing.assert_allclose(t.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(t.var(-1, ddof=1), 1, atol=1e-4)      # unbiased, as the reference code


def test_hf_vitmae_parity_both_directions(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from vitjax.interop import mae as mx
    from vitjax.interop import vit as vx

    model = MAE(**TINY)
    params = _params(model)
    x = _images(model)
    noise = np.random.default_rng(5).uniform(size=(2, model.num_patches)).astype(np.float32)
    out = _apply(model, params, x, noise=jnp.asarray(noise))
    loss = float(mae_loss(out["pred"], pixel_targets(x, 4, True), out["mask"]))

    vx.write_export(tmp_path, mx.to_hf(params, model), mx.hf_config(model))
    net, info = transformers.ViTMAEForPreTraining.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    net.eval()
    with torch.no_grad():
        o = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), noise=torch.from_numpy(noise))
    assert abs(float(o.loss) - loss) < 1e-4 * max(1.0, abs(loss)), (float(o.loss), loss)
    assert np.abs(np.asarray(out["pred"])).max() > 0.05
    np.testing.assert_allclose(o.logits.numpy(), np.asarray(out["pred"]), atol=1e-4)
    np.testing.assert_array_equal(o.mask.numpy(), np.asarray(out["mask"]))

    # HF -> vitjax: a freshly initialised HF model (its own random weights, v5 in-memory names).
    torch.manual_seed(0)
    ref = transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**{
        k: v for k, v in mx.hf_config(model).items() if k not in ("architectures", "model_type", "dtype")})).eval()
    # transformers v5 leaves a fresh model's fixed sin-cos tables unset (zeros); pretrained MAE
    # checkpoints hold them, so put them in as a real checkpoint would have them.
    exported = mx.to_hf(params, model)
    with torch.no_grad():
        ref.vit.embeddings.position_embeddings.copy_(torch.from_numpy(exported["vit.embeddings.position_embeddings"]))
        ref.decoder.decoder_pos_embed.copy_(torch.from_numpy(exported["decoder.decoder_pos_embed"]))
    back = mx.from_hf(ref.state_dict(), model)
    mine = _apply(model, jax.tree.map(jnp.asarray, back), x, noise=jnp.asarray(noise))
    with torch.no_grad():
        o2 = ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), noise=torch.from_numpy(noise))
    np.testing.assert_allclose(o2.logits.numpy(), np.asarray(mine["pred"]), atol=1e-4)

    with pytest.raises(ValueError, match="decoder_depth=1"):
        mx.from_hf(ref.state_dict(), MAE(**dict(TINY, decoder_depth=1)))
    with torch.no_grad():
        ref.decoder.decoder_pos_embed.zero_()
    with pytest.raises(ValueError, match="decoder_pos_embed' is not MAE's fixed 2-D sin-cos table"):
        mx.from_hf(ref.state_dict(), model)


def test_encoder_exports_as_a_timm_vit_backbone(tmp_path):
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    import torch
    from vitjax.interop import mae as mx
    from vitjax.interop import vit as vx

    model = MAE(**TINY)
    params = _params(model, seed=1)
    x = _images(model)
    enc = mx.encoder_model(model)
    vx.write_export(tmp_path, vx.to_timm(mx.encoder_params(params), enc), vx.timm_config(enc))
    net = eval(vx.timm_load_snippet(tmp_path), {"timm": timm}).eval()
    with torch.no_grad():
        theirs = net.forward_features(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))[:, 0].numpy()
    ours = np.asarray(_apply(model, params, x, method=MAE.features))
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


@pytest.mark.parametrize("ratio,msg", [(1.0, "must be in \\(0, 1\\)"), (0.0, "must be in \\(0, 1\\)"),
                                       (0.97, "leaves no visible patch")])
def test_bad_mask_ratio_is_a_config_error(ratio, msg, tmp_path):
    with pytest.raises(ValueError, match=msg):
        MAE(**dict(TINY, mask_ratio=ratio))
    from vitjax.training.trainer import Trainer
    cfg = _tiny_mae_config()
    set_key(cfg, "model.mask_ratio", str(ratio))
    with pytest.raises(ConfigError, match=msg):
        Trainer(cfg, str(tmp_path), load_data=False)


def test_sharded_loss_and_grads_match_one_device():
    """Masking (argsort/gather per row) and the loss shard along the batch axes: the same numbers on a
    data=4 x fsdp=2 mesh as on one device."""
    model = MAE(**dict(TINY, depth=1, decoder_depth=1))
    params = _params(model, seed=2)
    x = _images(model, n=8)

    def loss_fn(p, images):
        out = model.apply({"params": p}, images, rngs={"masking": jax.random.key(7)})
        return mae_loss(out["pred"], pixel_targets(images, 4, True), out["mask"])

    ref_l, ref_g = jax.jit(jax.value_and_grad(loss_fn))(params, x)
    mesh = sh.make_mesh({"data": 4, "fsdp": 2}, jax.devices()[:8])
    rules = sh.DEFAULT_RULES
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(model.init, {"params": jax.random.key(0), "masking": jax.random.key(1)}, x[:1])
        p_sh = sh.logical_shardings(boxed["params"], mesh, rules)
        x_sh = sh.activation_sharding(mesh, rules, ("act_batch", None, None, None))
        f = jax.jit(jax.value_and_grad(loss_fn), in_shardings=(p_sh, x_sh))
        l, g = f(jax.device_put(params, p_sh), jax.device_put(x, x_sh))
    assert abs(float(l) - float(ref_l)) < 1e-5 * abs(float(ref_l))
    # Relative to the largest gradient: key biases have exactly-zero true gradients (softmax ignores
    # them), so their leaves hold only rounding noise of either run.
    g, ref_g = jax.device_get(g), jax.device_get(ref_g)
    scale = max(float(np.abs(b).max()) for b in jax.tree.leaves(ref_g))
    err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), g, ref_g))) / scale
    assert err < 1e-5, err


def _tiny_mae_config(**over):
    from conftest import shrink_config
    return shrink_config("mae_digits.py", {
        "model.width": 32, "model.depth": 1, "model.num_heads": 4, "model.mlp_dim": 64,
        "model.decoder_width": 32, "model.decoder_depth": 1, "model.decoder_heads": 4,
        "model.decoder_mlp_dim": 64, "input.batch_size": 16, "input.eval_batch_size": 40,
        "train.total_steps": 12, "train.eval_every_steps": 12, "train.checkpoint_every_steps": 12,
        "train.log_every_steps": 4, "train.tensorboard": False, "optim.warmup_steps": 2,
        "objective.linear_epochs": 5, "objective.probe": '["knn", "linear", "ncm"]'}, over)


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory):
    from vitjax.training.trainer import Trainer
    wd = tmp_path_factory.mktemp("mae")
    t = Trainer(_tiny_mae_config(), str(wd))
    final = t.train()
    return wd, t, final


def test_training_logs_reconstruction_and_probes(mae_run):
    wd, _, final = mae_run
    assert set(final) == {"eval/loss", "eval/knn_top1", "eval/linear_top1", "eval/ncm_top1"}
    for k in ("eval/knn_top1", "eval/linear_top1", "eval/ncm_top1"):
        assert 0.1 < final[k] <= 1.0, final        # 10 classes: chance is 0.1
    records = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    train_losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert train_losses[-1] < train_losses[0]
    assert any("eval/knn_top1" in r for r in records)


def test_classifier_and_mae_checkpoints_do_not_mix_without_encoder_only(mae_run, tmp_path, tiny_config):
    from vitjax.training.trainer import Trainer
    wd, mae_trainer, _ = mae_run
    one = {"train.total_steps": 1, "train.eval_every_steps": 1, "train.checkpoint_every_steps": 1,
           "optim.warmup_steps": 0, "optim.lr": 0.0, "model.pool": "gap", "model.posemb": "sincos2d",
           "model.depth": 1}
    cfg = tiny_config(**one)
    set_key(cfg, "init.path", str(wd))
    with pytest.raises(ValueError, match=r"is an MAE checkpoint.*'decoder_pred'.*lacks \[[^]]*'head'.*encoder_only=True"):
        Trainer(cfg, str(tmp_path / "ft")).train()
    set_key(cfg, "init.encoder_only", "True")
    t = Trainer(cfg, str(tmp_path / "ft2"))
    t.train()
    enc = jax.device_get(mae_trainer.state.params["encoder"])
    np.testing.assert_allclose(jax.device_get(t.state.params["patch_embed"]["kernel"]), enc["patch_embed"]["kernel"])
    np.testing.assert_allclose(jax.device_get(t.state.params["encoder"]["block0"]["attn"]["query"]["kernel"]),
                               enc["encoder"]["block0"]["attn"]["query"]["kernel"])

    # The reverse: a classifier's workdir as the start of an MAE.
    cls_wd = tmp_path / "ft2"
    m = _tiny_mae_config(**{"train.total_steps": 1, "train.eval_every_steps": 1,
                            "train.checkpoint_every_steps": 1, "optim.warmup_steps": 0, "optim.lr": 0.0,
                            "objective.probe": "[]"})
    set_key(m, "init.path", str(cls_wd))
    with pytest.raises(ValueError, match=r"is a ViT classifier checkpoint but the model is an MAE.*'head'"):
        Trainer(m, str(tmp_path / "m1")).train()
    set_key(m, "init.encoder_only", "True")
    tm = Trainer(m, str(tmp_path / "m2"))
    tm.train()
    np.testing.assert_allclose(jax.device_get(tm.state.params["encoder"]["patch_embed"]["kernel"]),
                               jax.device_get(t.state.params["patch_embed"]["kernel"]))


def test_layer_decay_scales_updates_per_block():
    import optax
    from ml_collections import ConfigDict
    from vitjax.training.optim import layer_decay_scales, make_optimizer
    from vitjax.models.vit import ViT
    vit = ViT(num_classes=3, image_size=8, patch_size=4, in_channels=1, width=8, depth=3, num_heads=2, mlp_dim=16)
    p = nn.meta.unbox(jax.eval_shape(vit.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1))))["params"]
    s = layer_decay_scales(p, 0.5)
    assert s["head"]["kernel"] == 1.0 and s["encoder_norm"]["scale"] == 1.0
    assert s["encoder"]["block2"]["mlp"]["fc1"]["kernel"] == 0.5
    assert s["encoder"]["block0"]["attn"]["query"]["kernel"] == 0.125
    assert s["patch_embed"]["kernel"] == 0.0625 and s["pos_embedding"] == 0.0625
    ones = jax.tree.map(lambda a: jnp.ones(a.shape), p)
    cfg = ConfigDict(dict(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, warmup_steps=0, schedule="constant",
                          layer_decay=0.5))
    tx, _ = make_optimizer(cfg, 10)
    upd, _ = tx.update(ones, tx.init(ones), ones)
    np.testing.assert_allclose(upd["encoder"]["block0"]["attn"]["query"]["kernel"], -0.125)
    np.testing.assert_allclose(upd["head"]["kernel"], -1.0)
    with pytest.raises(ConfigError, match="layer_decay"):
        make_optimizer(ConfigDict(dict(cfg, layer_decay=1.5)), 10)
    del optax


def test_export_cli_writes_whole_mae_and_encoder(mae_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("timm")
    from vitjax.export import main
    wd, _, _ = mae_run
    assert main(["--workdir", str(wd), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    net, info = transformers.ViTMAEForPreTraining.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert net.config.decoder_num_hidden_layers == 1 and net.config.mask_ratio == 0.75
    assert main(["--workdir", str(wd), "--format", "timm", "--out", str(tmp_path / "timm")]) == 0
    cfg = json.load(open(tmp_path / "timm" / "config.json"))
    assert cfg["num_classes"] == 0 and cfg["architecture"].startswith("vit_")
