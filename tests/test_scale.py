"""Large-run machinery: gradient accumulation, dry-run memory/collectives, tensor-parallel
collective placement, start-up errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax import sharding as sh
from vitjax.config import ConfigError
from vitjax.param_tree import strip_boxes
from vitjax.training.metrics import read_metrics
from vitjax.training.dry_run import count_collectives, format_dry_run
from vitjax.training.trainer import Trainer


def _run(cfg, workdir, devices):
    t = Trainer(cfg, str(workdir), devices=devices)
    t.train()
    return t, [r["train/loss"] for r in read_metrics(str(workdir)) if "train/loss" in r]


def test_gradient_accumulation_equals_full_batch(tmp_path, tiny_config):
    """4 micro-batches of 4 == one batch of 16: same losses and the same updates. SGD makes the update
    linear in the gradient (Adam's m/sqrt(v) would amplify float noise in near-zero gradients)."""
    kw = {"train.total_steps": 4, "train.eval_every_steps": 0, "train.checkpoint_every_steps": 0,
          "train.tensorboard": False, "model.drop_path": 0.0, "mesh.data": 2, "mesh.fsdp": 2,
          "optim.name": "sgd", "optim.lr": 0.5, "model.head_zero_init": False}
    full, l_full = _run(tiny_config(**kw), tmp_path / "full", jax.devices()[:4])
    cfg = tiny_config(**kw)
    with cfg.unlocked():
        cfg.train.micro_batch_size = 4
    acc, l_acc = _run(cfg, tmp_path / "acc", jax.devices()[:4])
    assert acc.num_micro == 4
    np.testing.assert_allclose(l_acc, l_full, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.device_get(acc.state.params)), jax.tree.leaves(jax.device_get(full.state.params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_micro_batch_must_divide_batch(tiny_config):
    cfg = tiny_config()
    with cfg.unlocked():
        cfg.train.micro_batch_size = 5
    with pytest.raises(ConfigError, match="train.micro_batch_size=5 must divide input.batch_size=16"):
        Trainer(cfg, "/tmp/unused", devices=jax.devices()[:1])


def test_startup_errors_name_the_numbers(tiny_config):
    with pytest.raises(ConfigError, match="multiplies to 6 but there are 8 devices"):
        Trainer(tiny_config(**{"mesh.data": 3, "mesh.fsdp": 2}), "/tmp/unused")
    with pytest.raises(ConfigError, match="input.batch_size=12 is not divisible by the 8 ways"):
        Trainer(tiny_config(**{"input.batch_size": 12}), "/tmp/unused")


def test_fsdp_cuts_params_and_optimizer_per_device(tiny_config):
    """Per-device parameter + optimizer bytes from the shardings: FSDP over 8 <= 1/7 of DP."""
    sizes = {}
    for name, mesh in {"dp": (8, 1, 1), "fsdp": (1, 8, 1), "fsdp_tp": (1, 4, 2)}.items():
        cfg = tiny_config(**{"model.width": 256, "model.mlp_dim": 1024, "model.num_heads": 8,
                             "mesh.data": mesh[0], "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})
        abstract = Trainer(cfg, "/tmp/unused").setup_state()
        sizes[name] = sum(int(np.prod(a.sharding.shard_shape(a.shape))) * 4
                          for a in jax.tree.leaves((abstract.params, abstract.opt_state)))
    assert sizes["fsdp"] <= sizes["dp"] / 7
    assert sizes["fsdp_tp"] <= sizes["dp"] / 7


def test_dry_run_reports_memory_and_collectives(tiny_config):
    cfg = tiny_config(**{"mesh.data": 2, "mesh.fsdp": 4, "input.data.name": "not_prepared_anywhere"})
    report = Trainer(cfg, "/tmp/unused", load_data=False).dry_run()   # reads no data
    assert report["devices"] == 8 and report["bytes_params"] > 0 and report["bytes_optimizer"] > 0
    assert report["bytes_temporaries"] is not None and report["bytes_temporaries"] > 0
    assert report["collectives"]["all-gather"] > 0 or report["collectives"]["all-reduce"] > 0
    text = format_dry_run(report)
    assert "per-device memory:" in text and "collectives per step:" in text


def test_tensor_parallel_forward_has_one_all_reduce_per_block_half():
    """Megatron layout: heads and MLP hidden split over `tensor`, so each attention and each MLP
    ends in exactly one all-reduce, and nothing else communicates in the forward pass."""
    depth = 3
    mesh = sh.make_mesh({"tensor": 2, "data": 4})
    m = vitjax.create_model("vit", variant=None, num_classes=10, image_size=16, patch_size=4, width=64,
                            depth=depth, num_heads=4, mlp_dim=128)
    x = jax.ShapeDtypeStruct((8, 16, 16, 3), jnp.float32)
    with jax.set_mesh(mesh), nn.logical_axis_rules(sh.DEFAULT_RULES):
        boxed = jax.eval_shape(m.init, jax.random.key(0), x)["params"]
        shardings = sh.logical_shardings(boxed, mesh, sh.DEFAULT_RULES)
        params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              strip_boxes(boxed), shardings)
        xs = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh.activation_sharding(
            mesh, sh.DEFAULT_RULES, ("act_batch", None, None, None)))
        compiled = jax.jit(lambda p, x: m.apply({"params": p}, x)).lower(params, xs).compile()
    counts = count_collectives(compiled.as_text())
    assert counts == {"all-reduce": 2 * depth, "all-gather": 0, "reduce-scatter": 0, "all-to-all": 0,
                      "collective-permute": 0}
