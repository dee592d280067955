"""DeiT distillation: the teacher lives in the train state (sharded, checkpointed, never updated), the
loss terms are the paper's, and a teacher that does not fit the student is refused at start-up."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from vitjax.config import ConfigError, set_key
from vitjax.interop import vit as vx
from vitjax.models.vit import ViT
from vitjax.objectives.distillation import Distillation

TEACHER = dict(num_classes=10, image_size=16, patch_size=4, in_channels=1, width=32, depth=1, num_heads=2,
               mlp_dim=64, pool="token", layernorm_eps=1e-6)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    """A random ViT written as timm weights (the import path a PyTorch teacher takes)."""
    pytest.importorskip("torch")
    model = ViT(**TEACHER)
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16, 16, 1))))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (0.3 * rng.normal(size=a.shape)).astype(np.float32), shapes)
    d = tmp_path_factory.mktemp("teacher")
    vx.write_export(d, vx.to_timm(params, model), vx.timm_config(model))
    return d / "model.safetensors", params


def _config(tiny_config, teacher, **over):
    c = tiny_config(**{"model.pool": "token", "train.total_steps": 4, "train.eval_every_steps": 4,
                       "train.checkpoint_every_steps": 2, **over})
    c.model.name = "deit"
    c.objective = dict(name="distillation", teacher=str(teacher), kind="hard", tau=3.0, alpha=0.5,
                       label_smoothing=0.0, teacher_model=dict(name="vit", variant=None, **TEACHER))
    return c


def test_teacher_in_state_sharded_checkpointed_and_frozen(teacher_file, tmp_path, tiny_config):
    from vitjax.training.trainer import Trainer
    path, t_params = teacher_file
    c = _config(tiny_config, path)
    set_key(c, "mesh.data", "2")
    set_key(c, "mesh.fsdp", "4")
    tr = Trainer(c, str(tmp_path / "run"))
    final = tr.train()
    assert 0.0 <= final["eval/top1"] <= 1.0
    extra = jax.device_get(tr.state.extra["teacher"])
    np.testing.assert_allclose(extra["encoder"]["block0"]["mlp"]["fc1"]["kernel"],
                               t_params["encoder"]["block0"]["mlp"]["fc1"]["kernel"], rtol=1e-6)
    # FSDP: the teacher's embed dims are split like the student's parameters.
    sh = tr.state.extra["teacher"]["encoder"]["block0"]["mlp"]["fc1"]["kernel"].sharding
    assert sh.spec[0] == "fsdp"
    rec = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    train = [r for r in rec if "train/distill_loss" in r]
    assert train and all(np.isfinite(r["train/distill_loss"]) for r in train)
    # Resuming restores the teacher from the checkpoint (the state's "extra" item).
    set_key(c, "train.total_steps", "6")
    tr2 = Trainer(c, str(tmp_path / "run"))
    tr2.train()
    np.testing.assert_allclose(jax.device_get(tr2.state.extra["teacher"]["head"]["kernel"]),
                               t_params["head"]["kernel"], rtol=1e-6)


def test_hard_and_soft_terms_are_the_papers():
    obj = Distillation.__new__(Distillation)
    obj.kind, obj.tau = "hard", 3.0
    s = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5)), jnp.float32)
    t = jnp.asarray(np.random.default_rng(2).normal(size=(4, 5)), jnp.float32)
    hard = float(obj._distill_term(s, t))
    np.testing.assert_allclose(hard, float(optax.softmax_cross_entropy_with_integer_labels(s, t.argmax(-1)).mean()),
                               rtol=1e-6)
    obj.kind = "soft"
    pt, ps = jax.nn.softmax(t / 3.0), jax.nn.softmax(s / 3.0)
    kl = np.sum(np.asarray(pt) * (np.log(np.asarray(pt)) - np.log(np.asarray(ps))), -1).mean() * 9.0
    np.testing.assert_allclose(float(obj._distill_term(s, t)), kl, rtol=1e-5)
    assert float(obj._distill_term(t, t)) < 1e-6          # a student equal to the teacher: KL = 0


@pytest.mark.parametrize("over,msg", [
    ({"model.num_classes": 7}, r"predicts 10 classes but the student has num_classes=7"),
    ({"model.image_size": 32}, r"takes 16x16 images with 1 channels but the student's data are 32x32"),
])
def test_teacher_that_does_not_fit_is_refused_at_start_up(teacher_file, tmp_path, tiny_config, over, msg):
    from vitjax.training.trainer import Trainer
    c = _config(tiny_config, teacher_file[0], **over)
    with pytest.raises(ConfigError, match=msg):
        Trainer(c, str(tmp_path))


def test_student_without_distillation_token_is_refused(teacher_file, tmp_path, tiny_config):
    from vitjax.training.trainer import Trainer
    c = _config(tiny_config, teacher_file[0])
    c.model.name = "vit"
    with pytest.raises(ConfigError, match="needs a student with a distillation token"):
        Trainer(c, str(tmp_path))
