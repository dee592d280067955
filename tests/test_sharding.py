"""Mesh construction and parallelism chosen by config: DP, FSDP and FSDP x TP give the losses of
one device, and FSDP really shards every large parameter."""
import math

import jax
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax import sharding as sh
from vitjax.training.metrics import read_metrics
from vitjax.training.trainer import Trainer


def test_mesh_shape_fill_and_errors():
    assert sh.mesh_shape({"data": -1}, 8) == (8, 1, 1)
    assert sh.mesh_shape({"data": 2, "fsdp": -1}, 8) == (2, 4, 1)
    assert sh.mesh_shape({"fsdp": 4, "tensor": 2}, 8) == (1, 4, 2)
    with pytest.raises(ValueError, match="multiplies to 6 but there are 8 devices"):
        sh.mesh_shape({"data": 3, "fsdp": 2}, 8)
    with pytest.raises(ValueError, match="fixed axes multiply to 3, which does not divide the 8"):
        sh.mesh_shape({"data": -1, "fsdp": 3}, 8)
    with pytest.raises(ValueError, match="unknown axes \\['model'\\]"):
        sh.mesh_shape({"model": 2}, 8)


def test_make_mesh_uses_auto_axes():
    mesh = sh.make_mesh({"data": 2, "fsdp": 4})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_fsdp_shards_every_large_vit_b_parameter():
    """ViT-B/16 on an fsdp=8 mesh: every parameter with >= 2^14 elements is split 8 ways."""
    mesh = sh.make_mesh({"fsdp": 8})
    model = vitjax.create_model("vit_b16", num_classes=1000)
    boxed = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32))
    shardings = sh.logical_shardings(boxed["params"], mesh, sh.DEFAULT_RULES)
    values = nn.meta.unbox(boxed["params"])
    checked = 0
    for s, v in zip(jax.tree.leaves(shardings), jax.tree.leaves(values)):
        if math.prod(v.shape) >= 2 ** 14:
            shard = s.shard_shape(v.shape)
            assert math.prod(shard) * 8 == math.prod(v.shape), (v.shape, s.spec)
            checked += 1
    assert checked > 70


def test_indivisible_dims_fall_back_to_replication():
    mesh = sh.make_mesh({"tensor": 8})
    spec = sh._fit_spec(jax.sharding.PartitionSpec("tensor", None), (10, 4), mesh)
    assert spec == jax.sharding.PartitionSpec(None, None)


def _losses(cfg, workdir, devices=None):
    Trainer(cfg, str(workdir), devices=devices).train()
    return np.array([r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r])


@pytest.fixture(scope="module")
def single_device_losses(tmp_path_factory):
    from conftest import make_tiny_config
    cfg = make_tiny_config(**{"train.total_steps": 10, "train.eval_every_steps": 0,
                              "train.checkpoint_every_steps": 0, "train.tensorboard": False,
                              "model.mlp_dim": 256, "model.width": 64})
    return _losses(cfg, tmp_path_factory.mktemp("one"), devices=jax.devices()[:1])


@pytest.mark.parametrize("mesh", [dict(data=8, fsdp=1, tensor=1), dict(data=2, fsdp=4, tensor=1),
                                  dict(data=1, fsdp=4, tensor=2)], ids=["dp8", "fsdp2x4", "fsdp4xtp2"])
def test_parallel_losses_equal_single_device(mesh, single_device_losses, tmp_path, tiny_config):
    cfg = tiny_config(**{"train.total_steps": 10, "train.eval_every_steps": 0,
                         "train.checkpoint_every_steps": 0, "train.tensorboard": False,
                         "model.mlp_dim": 256, "model.width": 64,
                         "mesh.data": mesh["data"], "mesh.fsdp": mesh["fsdp"], "mesh.tensor": mesh["tensor"]})
    trainer = Trainer(cfg, str(tmp_path))
    trainer.train()
    losses = np.array([r["train/loss"] for r in read_metrics(str(tmp_path)) if "train/loss" in r])
    assert len(losses) == 10
    np.testing.assert_allclose(losses, single_device_losses, rtol=1e-5)
    if mesh["fsdp"] > 1:
        for path, arr in jax.tree_util.tree_flatten_with_path(trainer.state.params)[0]:
            if arr.size >= 2 ** 14:
                assert "fsdp" in str(arr.sharding.spec), (jax.tree_util.keystr(path), arr.sharding.spec)
                assert arr.addressable_shards[0].data.size * mesh["fsdp"] * (mesh["tensor"] if "tensor" in str(arr.sharding.spec) else 1) == arr.size
    if mesh["tensor"] > 1:
        q = trainer.state.params["encoder"]["block0"]["attn"]["query"]["kernel"]
        assert q.sharding.spec[1] == "tensor"
