"""The CLIP/SigLIP model (vitjax.models.clip), the "clip" objective and its evaluations, and a short
training run through the real trainer on the digit-caption source with a sharded loss."""
from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax.objectives import create_objective
from vitjax.evals.zeroshot import recall_at_k
from vitjax.models.clip import LogitScale

TINY = dict(variant=None, embed_dim=16, image_size=16, patch_size=4, in_channels=1,
            vision_width=32, vision_depth=1, vision_heads=4, vision_mlp_dim=64,
            text_vocab_size=259, text_context_length=12, text_width=32, text_depth=1, text_heads=4,
            text_mlp_dim=64, text_pool="eos", eos_id=2)


def _init(model, seed=0):
    """The parameter tree from ``jax.eval_shape(model.init)``, filled with random values (compiling
    init's RNG ops costs far more than these tests on 2 shared cores); norms ~1, logit scale log 1/0.07."""
    x = jax.ShapeDtypeStruct((2, model.image_size, model.image_size, model.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((2, model.text_context_length), jnp.int32)
    abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(seed), x, t))["params"]
    flat, tdef = jax.tree_util.tree_flatten_with_path(abstract)
    leaves = []
    for i, (path, leaf) in enumerate(flat):
        key = jax.tree_util.keystr(path)
        r = np.random.default_rng(seed * 1000 + i).normal(size=leaf.shape).astype(np.float32)
        if "['logits']" in key:
            leaves.append(jnp.float32(math.log(1 / 0.07) if key.endswith("['scale']") else -10.0))
        else:
            leaves.append(jnp.asarray(1.0 + 0.1 * r if key.endswith("['scale']") else 0.1 * r))
    return jax.tree_util.tree_unflatten(tdef, leaves)


def _apply(model, params, *args, method=None):
    return jax.jit(lambda p, *a: model.apply({"params": p}, *a, method=method))(params, *args)


def _images(model, n=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(
        size=(n, model.image_size, model.image_size, model.in_channels)), jnp.float32)


def test_outputs_are_unit_vectors_with_clip_scale():
    model = vitjax.create_model("clip", **TINY)
    params = _init(model)
    tokens = jnp.asarray([[1, 70, 80, 2, 0, 0, 0, 0, 0, 0, 0, 0]] * 3, jnp.int32)
    out = _apply(model, params, _images(model), tokens)
    assert out["img"].shape == out["txt"].shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out["img"], axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out["txt"], axis=1), 1.0, atol=1e-5)
    assert abs(float(out["scale"]) - 1 / 0.07) < 1e-4 and out["bias"] is None
    assert "ln_pre" in params["img"] and params["logits"]["scale"].shape == ()
    # initialised at log(1/0.07), stored as the log, clamped at 100
    head = LogitScale()
    init = head.init(jax.random.key(0))["params"]
    assert abs(float(nn.meta.unbox(init)["scale"]) - math.log(1 / 0.07)) < 1e-6
    assert abs(float(head.apply({"params": {"scale": jnp.float32(math.log(1000.0))}})[0]) - 100.0) < 1e-3
    siglip = nn.meta.unbox(LogitScale(math.log(10.0), -10.0).init(jax.random.key(0))["params"])
    assert abs(float(siglip["scale"]) - math.log(10.0)) < 1e-6 and float(siglip["bias"]) == -10.0


def test_siglip_defaults_and_map_pool():
    model = vitjax.create_model("siglip", **{**TINY, "text_pool": "last"})
    assert model.vision_pool == "map" and not model.text_causal
    params = _init(model)
    assert "map_probe" in params["img"] and "cls" not in params["img"] and "ln_pre" not in params["img"]
    assert (model.logit_scale_init, model.logit_bias_init) == (math.log(10.0), -10.0)
    z = _apply(model, params, _images(model), method="encode_image")
    assert z.shape == (3, 16) and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("pool,eot", [("eos", 2), ("argmax", 258)])
def test_text_tower_reads_the_end_token_and_ignores_padding(pool, eot):
    model = vitjax.create_model("clip", **{**TINY, "text_pool": pool})
    params = _init(model, seed=1)
    enc_jit = jax.jit(lambda p, t: model.apply({"params": p}, t, method="encode_text"))
    enc = lambda t: np.asarray(enc_jit(params, jnp.asarray(t, jnp.int32)))  # noqa: E731
    a = enc([[1, 40, 50, eot, 0, 0, 0, 0, 0, 0, 0, 0]])
    b = enc([[1, 40, 50, eot, 9, 9, 9, 9, 9, 9, 9, 9] if pool == "eos" else
              [1, 40, 50, eot, 0, 0, 0, 0, 0, 0, 5, 0]])
    c = enc([[1, 40, 51, eot, 0, 0, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(a, b, atol=1e-6)        # causal: what follows the end token is unseen
    assert np.max(np.abs(a - c)) > 1e-4                 # the text before it matters
    with pytest.raises(ValueError, match="exceed the text tower's context_length=12"):
        jax.eval_shape(lambda t: model.apply({"params": params}, t, method="encode_text"),
                       jnp.ones((1, 13), jnp.int32))


def test_registered_sizes_match_open_clip_parameter_counts():
    names = vitjax.list_models("clip_*")
    assert {"clip_b32", "clip_b16", "clip_l14", "clip_b32_quickgelu"} <= set(names)
    model = vitjax.create_model("clip_b32_quickgelu")
    assert (model.activation, model.embed_dim, model.text_width, model.patch_size) == ("quick_gelu", 512, 512, 32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)),
                            jnp.zeros((1, 77), jnp.int32))
    n = sum(a.size for a in jax.tree.leaves(nn.meta.unbox(shapes)))
    # open_clip ViT-B-32: 151,277,313; vitjax adds the 768 patch-embedding biases (see export.clip)
    assert n == 151_277_313 + 768


def test_objective_bad_input_errors():
    model = vitjax.create_model("clip", **{**TINY, "text_vocab_size": 300})
    obj = create_objective(dict(name="clip", tokenizer="bytes", context_length=12))
    with pytest.raises(ValueError, match=r"vocabulary of 259 tokens.*text_vocab_size=300"):
        obj.example_batch(model, 8)
    with pytest.raises(ValueError, match="class_names is empty"):
        create_objective(dict(name="clip", tokenizer="bytes", zeroshot=dict(class_names=[], templates=["{}"])))
    with pytest.raises(ValueError, match="lack the"):
        create_objective(dict(name="clip", zeroshot=dict(class_names=["a"], templates=["a photo"])))
    ok = vitjax.create_model("clip", **TINY)
    with pytest.raises(ValueError, match="logit_bias_init"):
        create_objective(dict(name="clip", loss="sigmoid", tokenizer="bytes", context_length=12)).example_batch(ok, 8)
    with pytest.raises(ValueError, match="eos_id=2 but the tokenizer's end token is 49407"):
        create_objective(dict(name="clip", tokenizer="clip", context_length=12)).example_batch(
            vitjax.create_model("clip", **{**TINY, "text_vocab_size": 49408}), 8)


def test_lit_frozen_params_mask():
    params = {"img": {"cls": 0, "encoder": {"w": 1}}, "img_proj": {"kernel": 2}, "txt": {"w": 3},
              "logits": {"scale": 4}}
    mask = create_objective(dict(name="clip", tokenizer="bytes", lock_image=True)).frozen_params(params)
    assert mask == {"img": {"cls": True, "encoder": {"w": True}}, "img_proj": {"kernel": False},
                    "txt": {"w": False}, "logits": {"scale": False}}


def test_image_tower_module_holds_params_img_and_is_a_plain_vit():
    """What LiT's initialisation relies on: a pretrained ViT loads into ``params["img"]``."""
    model = vitjax.create_model("clip", **{**TINY, "vision_pre_norm": False})
    params = _init(model)
    tower = model.image_tower_module()
    x = _images(model)
    feats = jax.jit(lambda p, a: tower.apply({"params": p}, a))(params["img"], x)
    z = feats @ params["img_proj"]["kernel"]
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    np.testing.assert_allclose(_apply(model, params, x, method="encode_image"), z, atol=1e-5)
    vit = vitjax.create_model("vit", variant=None, num_classes=0, image_size=16, patch_size=4, in_channels=1,
                              width=32, depth=1, num_heads=4, mlp_dim=64)
    vit_tree = jax.eval_shape(vit.init, jax.random.key(0), jnp.zeros((1, 16, 16, 1)))["params"]
    same = jax.tree.map(lambda a, b: a.shape == b.shape, nn.meta.unbox(vit_tree), params["img"])
    assert all(jax.tree.leaves(same))


def test_recall_at_k():
    z = np.eye(4, dtype=np.float32)
    keys = z[[0, 2, 1, 3]]          # queries 1 and 2 find their key second
    keys[1] = 0.9 * z[2] + 0.1 * z[1]
    keys[2] = 0.9 * z[1] + 0.1 * z[2]
    r = recall_at_k(z, keys, ks=(1, 2))
    assert r == {1: 0.5, 2: 1.0}


def test_train_on_digit_captions_sharded_logs_zeroshot_and_retrieval(tmp_path):
    """The demo config shrunk to a few steps on a (data=2, fsdp=4) mesh: the sharded loss runs inside
    the trainer's step, and the evaluations land in metrics.jsonl. With LiT's lock_image the image
    tower must come out of training unchanged (no gradient, and no weight decay either: the trainer
    routes it to optax.set_to_zero) while the text tower moves."""
    from vitjax.config import load_config_file, set_key
    from vitjax.training.trainer import Trainer
    c = load_config_file("configs/clip_digits.py")
    for k, v in {"model.vision_width": "32", "model.vision_depth": "1", "model.vision_mlp_dim": "64",
                 "model.text_width": "32", "model.text_depth": "1", "model.text_mlp_dim": "64",
                 "input.batch_size": "32", "input.eval_batch_size": "120", "train.total_steps": "2",
                 "train.log_every_steps": "1", "train.eval_every_steps": "2", "optim.warmup_steps": "1",
                 "train.checkpoint_every_steps": "2", "train.tensorboard": "False",
                 "mesh.data": "2", "mesh.fsdp": "4", "objective.lock_image": "True",
                 "optim.weight_decay": "0.1"}.items():
        set_key(c, k, v)
    # one eval batch per evaluation: the 120 first held-out digits
    for section in ("zeroshot", "retrieval"):
        c.objective[section]["max_examples"] = 120
    c.objective.probe.update(max_train_examples=240, max_test_examples=120, linear_epochs=5,
                             linear_batch_size=120, methods=["linear", "knn"])
    tr = Trainer(c, str(tmp_path))
    final = tr.train()
    for key in ("eval/zeroshot_top1", "eval/zeroshot_top5", "eval/i2t_r1", "eval/i2t_r5", "eval/i2t_r10",
                "eval/t2i_r1", "eval/t2i_r10", "eval/loss", "eval/probe_linear_top1", "eval/probe_knn_top1"):
        assert key in final and np.isfinite(final[key]), key
    assert 0.0 <= final["eval/i2t_r1"] <= final["eval/i2t_r5"] <= final["eval/i2t_r10"] <= 1.0
    recs = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train = [r for r in recs if "train/loss" in r]
    assert train and all(np.isfinite(r["train/loss"]) for r in train)
    assert "train/i2t_top1" in train[-1] and abs(train[-1]["train/logit_scale"] - 1 / 0.07) < 0.5
    start, end = jax.device_get(tr.init_state().params), jax.device_get(tr.state.params)
    moved = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in  # noqa: E731
                             zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert moved(start["img"], end["img"]) == 0.0
    assert moved(start["txt"], end["txt"]) > 0 and moved(start["img_proj"], end["img_proj"]) > 0


def test_lit_initialises_the_image_tower_from_a_pretrained_vit(tmp_path):
    """config.init.target='img': a timm ViT file becomes params['img'] (the rest keeps its init);
    a tower with OpenAI's ln_pre cannot take a plain ViT and says what to change."""
    pytest.importorskip("torch")
    from flax import linen as nn
    from vitjax.config import load_config_file, set_key
    from vitjax.interop import vit as vx
    from vitjax.training.trainer import Trainer
    c = load_config_file("configs/clip_digits.py")
    for k, v in {"model.vision_width": "32", "model.vision_depth": "1", "model.vision_mlp_dim": "64",
                 "model.text_width": "32", "model.text_depth": "1", "model.text_mlp_dim": "64",
                 "model.vision_pre_norm": "False", "init.target": "img"}.items():
        set_key(c, k, v)
    c.model.layernorm_eps = 1e-6          # timm ViTs use 1e-6
    tr = Trainer(c, str(tmp_path / "run"))
    tr.setup_state()
    state = tr.init_state()
    tower = tr.model.image_tower_module()
    x = jax.ShapeDtypeStruct((1, tower.image_size, tower.image_size, tower.in_channels), jnp.float32)
    shapes = nn.meta.unbox(jax.eval_shape(tower.init, jax.random.key(0), x))["params"]
    vit_params = jax.tree.map(lambda a: np.random.default_rng(0).normal(size=a.shape).astype(np.float32), shapes)
    vx.write_export(tmp_path / "vit", vx.to_timm(vit_params, tower), vx.timm_config(tower))
    set_key(c, "init.path", str(tmp_path / "vit" / "model.safetensors"))
    merged = tr.load_init_params(state.params)
    np.testing.assert_allclose(np.asarray(merged["img"]["patch_embed"]["kernel"]), vit_params["patch_embed"]["kernel"],
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(merged["txt"]["token_embed"]["embedding"]),
                                  np.asarray(state.params["txt"]["token_embed"]["embedding"]))
