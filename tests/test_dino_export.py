"""DINO after training: the backbone exports to timm ``VisionTransformer`` / HF ``ViTModel`` and imports
back with the same features (fp32, <= 1e-4), the class-token attention maps equal timm's last-block
attention probabilities (<= 1e-5), ``load_workdir(weights="teacher")`` returns the EMA teacher of a
real run, and the export CLI writes the teacher's backbone by default (``--student``: the student's).

Every parameter is random (N(0, 0.05), LayerNorm scales 1 + N(0, 0.1)) so a wrong mapping of a norm,
bias or token cannot go unseen.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from vitjax.evals.attention import cls_attention_maps
from vitjax.interop import vit as vx
from vitjax.interop.dino import dino_backbone
from vitjax.interop.registry import exporter
from vitjax.models.dino import DINO
from vitjax.models.vit import ViT

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from tests.test_export_vit import _randomize_jax, _randomize_torch  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_compiles")
torch.set_num_threads(1)

TINY = dict(image_size=32, patch_size=8, in_channels=3, width=64, depth=2, num_heads=4, mlp_dim=128,
            out_dim=128, head_hidden_dim=64, head_bottleneck_dim=32, drop_path=0.0)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


_FEATURES = {}


def _features(model, params, x):
    if model not in _FEATURES:
        _FEATURES[model] = jax.jit(lambda p, x: model.apply({"params": p}, x, method=DINO.features))
    return np.asarray(_FEATURES[model](params, jnp.asarray(x)))


def _check(a, b, tol):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(b).max() > 0.1, "features too small for a meaningful comparison"
    diff = float(np.abs(a - b).max())
    assert diff <= tol, diff


@pytest.fixture(scope="module")
def tiny():
    model = DINO(**TINY)
    s = model.image_size
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))
    params = _randomize_jax(nn.meta.unbox(shapes)["params"], seed=1)
    x = np.random.default_rng(2).normal(size=(2, s, s, 3)).astype(np.float32)
    return model, params, x, _features(model, params, x)


def _timm_net(model, params):
    """The CLI's timm export of ``params``, loaded strictly into a VisionTransformer built from the
    exported config."""
    to_fn, cfg_fn, _, kind, _ = exporter(model, "timm", False)
    cfg = cfg_fn()
    assert kind == "timm" and cfg["num_classes"] == 0 and cfg["model_args"]["num_classes"] == 0
    net = VisionTransformer(**cfg["model_args"]).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in to_fn(params).items()}, strict=True)
    return net, cfg


# ------------------------------------------------------------------------------------ export parity
def test_backbone_to_timm_and_back(tiny):
    model, params, x, want = tiny
    net, cfg = _timm_net(model, params)
    with torch.no_grad():
        _check(net(_nchw(x)).numpy(), want, 1e-4)               # num_classes=0: the normed class token

    # timm random weights -> vitjax: the imported tree is the DINO backbone's, features equal timm's.
    ref = _randomize_torch(VisionTransformer(**cfg["model_args"]), 7)
    with torch.no_grad():
        theirs = ref(_nchw(x)).numpy()
    vit, _ = dino_backbone(model, None)
    imported = vx.from_timm(ref.state_dict(), vit)
    assert jax.tree.structure(imported) == jax.tree.structure(params["backbone"])
    _check(_features(model, dict(params, backbone=imported), x), theirs, 1e-4)


def test_backbone_to_hf_vitmodel_and_back(tiny, tmp_path):
    model, params, x, want = tiny
    to_fn, cfg_fn, writer, kind, _ = exporter(model, "hf", False)
    assert kind == "hf_vitmodel"
    sd = to_fn(params)
    assert "embeddings.cls_token" in sd and not any(k.startswith("vit.") for k in sd)
    writer.write_export(tmp_path, sd, cfg_fn())
    net, info = transformers.ViTModel.from_pretrained(str(tmp_path), add_pooling_layer=False,
                                                      output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with torch.no_grad():
        out = net.eval()(pixel_values=_nchw(x))
    # ViTModel's last_hidden_state is already after the final LayerNorm: its class token is the feature.
    _check(out.last_hidden_state[:, 0].numpy(), want, 1e-4)

    # HF random weights (a ViTModel with its pooler, which the import ignores) -> vitjax.
    ref = _randomize_torch(transformers.ViTModel(transformers.ViTConfig(**{
        k: v for k, v in cfg_fn().items() if k not in ("architectures", "model_type", "dtype")})), 8)
    with torch.no_grad():
        theirs = ref(pixel_values=_nchw(x)).last_hidden_state[:, 0].numpy()
    imported = vx.from_hf(ref.state_dict(), dino_backbone(model, None)[0])
    _check(_features(model, dict(params, backbone=imported), x), theirs, 1e-4)


def test_dino_s16_exports_as_timm_vit_small_dino_layout():
    """ViT-S/16 DINO -> timm vit_small_patch16_224 whose keys and shapes are those of timm's
    ``vit_small_patch16_224.dino`` (num_classes=0, no head); shapes only, nothing computed."""
    model = DINO(image_size=224, patch_size=16)
    _, cfg_fn, _, _, _ = exporter(model, "timm", False)
    cfg = cfg_fn()
    assert cfg["architecture"] == "vit_small_patch16_224" and cfg["num_classes"] == 0
    ref = timm.create_model("vit_small_patch16_224.dino", pretrained=False)
    assert ref.num_classes == 0
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert vx.timm_shapes(dino_backbone(model, None)[0]) == theirs


# ------------------------------------------------------------------------------------ attention maps
def test_cls_attention_maps_equal_timm_attention(tiny):
    model, params, x, _ = tiny
    net, _ = _timm_net(model, params)
    for blk in net.blocks:
        blk.attn.fused_attn = False
    probs = {}
    hook = net.blocks[-1].attn.attn_drop.register_forward_hook(lambda m, i, o: probs.update(p=o.detach()))
    with torch.no_grad():
        net(_nchw(x))
    hook.remove()
    g = model.image_size // model.patch_size
    theirs = probs["p"][:, :, 0, 1:].numpy().reshape(2, model.num_heads, g, g)
    ours = np.asarray(cls_attention_maps(model, params, x))
    assert ours.shape == (2, 4, 4, 4)
    assert np.abs(ours - theirs).max() <= 1e-5, np.abs(ours - theirs).max()
    # Not uniform (a map that ignores the inputs would be 1/17 everywhere) and a sub-distribution.
    assert ours.std() > 1e-3 and np.all(ours.sum((2, 3)) < 1.0)
    # The DINO model and its backbone ViT (with params["backbone"]) give the same maps.
    vit = ViT(**model.backbone_config())
    np.testing.assert_array_equal(np.asarray(cls_attention_maps(vit, params["backbone"], x)), ours)
    with pytest.raises(ValueError, match="needs a class token"):
        cls_attention_maps(vit.clone(pool="gap"), params["backbone"], x)


# ------------------------------------------------------------------------------- a real (3-step) run
def _tiny_dino_config():
    from conftest import make_tiny_dino_config
    # Uncapped kNN bank: the probe CLI below embeds the whole training split too.
    return make_tiny_dino_config(2, **{"model.drop_path": 0.1, "objective.probe": '["knn"]',
                                       "objective.probe_train_examples": None, "train.total_steps": 3,
                                       "train.eval_every_steps": 3, "train.checkpoint_every_steps": 3,
                                       "optim.warmup_steps": 1})


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    from vitjax.training.trainer import Trainer
    wd = tmp_path_factory.mktemp("dino")
    t = Trainer(_tiny_dino_config(), str(wd))
    final = t.train()
    return wd, jax.device_get(t.state.params), jax.device_get(t.state.extra["teacher"]), final


def _max_diff(a, b):
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a),
                                                                                   jax.tree.leaves(b)))


def test_load_workdir_teacher(dino_run, tmp_path, tiny_config):
    import vitjax
    from vitjax.training.checkpoint import Checkpointer
    from vitjax.training.workdir import load_workdir
    from vitjax.training.trainer import TrainState
    wd, student, teacher, _ = dino_run
    _, model, loaded_student = load_workdir(str(wd))
    _, _, loaded_teacher = vitjax.load(str(wd), weights="teacher")
    assert isinstance(model, DINO)
    assert jax.tree.structure(loaded_teacher) == jax.tree.structure(teacher)
    assert _max_diff(loaded_teacher, teacher) <= 1e-6
    assert _max_diff(loaded_student, student) <= 1e-6
    assert _max_diff(loaded_teacher, student) > 1e-4          # 3 EMA steps: the teacher lags the student
    leaf = jax.tree.leaves(loaded_teacher)[0]
    assert isinstance(leaf, jax.Array) and leaf.sharding.device_set == {jax.devices()[0]}

    # A classifier workdir (a checkpoint with extra={}) has no teacher.
    from vitjax import config as config_lib
    from vitjax.models.registry import model_param_shapes
    from vitjax.models import build_model
    cfg = tiny_config()
    other = tmp_path / "vit"
    other.mkdir()
    (other / "config.json").write_text(config_lib.to_json(cfg))
    vit = build_model(cfg)
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), model_param_shapes(vit))
    ck = Checkpointer(str(other), async_save=False)
    ck.save(1, TrainState(step=np.int32(1), params=params, opt_state={}, extra={}))
    ck.close()
    assert jax.tree.structure(load_workdir(str(other))[2]) == jax.tree.structure(params)
    with pytest.raises(ValueError, match=rf"{other}.*only DINO runs have a teacher.*weights='params'"):
        load_workdir(str(other), weights="teacher")
    from vitjax.export import main
    assert main(["--workdir", str(other), "--format", "timm", "--out", str(tmp_path / "x"), "--student"]) == 2
    with pytest.raises(ValueError, match="choose one of"):
        load_workdir(str(wd), weights="ema")


def test_export_cli_writes_the_teachers_backbone(dino_run, tmp_path, capsys):
    from safetensors.numpy import load_file
    from vitjax.training.workdir import workdir_model
    from vitjax.export import main
    wd, student, teacher, _ = dino_run
    vit = dino_backbone(workdir_model(str(wd))[1], None)[0]
    assert main(["--workdir", str(wd), "--format", "timm", "--out", str(tmp_path / "t")]) == 0
    assert "load with: timm.create_model('local-dir:" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["num_classes"] == 0 and cfg["pretrained_cfg"]["mean"] == [0.5]       # the run's normalize op
    sd = load_file(str(tmp_path / "t" / "model.safetensors"))
    net = VisionTransformer(**cfg["model_args"])
    net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    want = vx.to_timm(teacher["backbone"], vit)
    assert sd.keys() == want.keys() and all(np.array_equal(sd[k], want[k]) for k in sd)
    net = eval(vx.timm_load_snippet(tmp_path / "t"), {"timm": timm})        # the printed hint loads too
    assert net.num_classes == 0 and np.array_equal(net.cls_token.detach().numpy(), sd["cls_token"])
    assert main(["--workdir", str(wd), "--format", "timm", "--out", str(tmp_path / "s"), "--student"]) == 0
    sd = load_file(str(tmp_path / "s" / "model.safetensors"))
    want = vx.to_timm(student["backbone"], vit)
    assert all(np.array_equal(sd[k], want[k]) for k in sd)
    assert not np.array_equal(sd["blocks.0.attn.qkv.weight"],
                              vx.to_timm(teacher["backbone"], vit)["blocks.0.attn.qkv.weight"])
    assert main(["--workdir", str(wd), "--format", "hf", "--out", str(tmp_path / "h")]) == 0
    assert "transformers.ViTModel.from_pretrained(" in capsys.readouterr().out
    net, info = transformers.ViTModel.from_pretrained(str(tmp_path / "h"), add_pooling_layer=False,
                                                      output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info


def test_probe_cli_scores_the_teacher_as_training_did(dino_run, tmp_path):
    """The run's eval/knn_top1 scored the teacher (objective.eval_teacher); the probe CLI's default
    (the teacher, loaded from the checkpoint) reproduces it with the same kNN settings."""
    from vitjax.probe import main
    wd, _, _, final = dino_run
    out = tmp_path / "probe.json"
    assert main(["--workdir", str(wd), "--methods", "knn", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["params"].endswith("(DINO teacher)") and res["test_examples"] == 360
    assert res["knn_top1"] == pytest.approx(final["eval/knn_top1"], abs=1e-6)


def test_probe_cli_caps_the_training_features_of_an_objective(dino_run, tmp_path):
    """--max_train_examples caps the kNN bank also where the objective embeds the features itself
    (DINO's teacher backbone), not only for plain classifiers."""
    from vitjax.probe import main
    wd = dino_run[0]
    out = tmp_path / "probe.json"
    assert main(["--workdir", str(wd), "--methods", "knn", "--max_train_examples", "240",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["train_examples"] == 240 and res["test_examples"] == 360
