"""Gradient caching (vitjax.training.gradcache): CLIP/SigLIP with micro-batches give the full-batch
loss and gradients, on one device and with the sharded loss on a (data, fsdp) mesh."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import vitjax
from vitjax import sharding as sh
from vitjax.objectives import create_objective
from vitjax.objectives.base import RunInfo
from vitjax.training.batches import mesh_context
from vitjax.training.gradcache import supports_gradient_caching
from vitjax.training.step import StepFn

pytestmark = pytest.mark.usefixtures("fast_compiles")

B, T = 16, 12
TINY = dict(variant=None, embed_dim=8, image_size=8, patch_size=4, in_channels=1, vision_width=16,
            vision_depth=1, vision_heads=2, vision_mlp_dim=32, text_vocab_size=259, text_context_length=T,
            text_width=16, text_depth=1, text_heads=2, text_mlp_dim=32, text_pool="eos", eos_id=2)


def _params(model):
    """Random params shaped as ``model.init``'s (no init compile); logit scale 1/0.07, bias -10."""
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    t = jax.ShapeDtypeStruct((2, T), jnp.int32)
    abstract = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), x, t))["params"]
    flat, tdef = jax.tree_util.tree_flatten_with_path(abstract)
    rng = np.random.default_rng(0)
    leaves = []
    for path, leaf in flat:
        key = jax.tree_util.keystr(path)
        if "['logits']" in key:
            leaves.append(np.float32(math.log(1 / 0.07) if key.endswith("['scale']") else -10.0))
        else:
            leaves.append((0.2 * rng.normal(size=leaf.shape)).astype(np.float32))
    return jax.tree_util.tree_unflatten(tdef, leaves)


def _loss_and_grads(model, objective, run, num_micro, params, batch):
    fn = StepFn(model, objective, None, None, run, num_micro, 0, "threefry2x32")
    with mesh_context(run.mesh, run.rules):
        out = jax.jit(lambda p, b: fn.loss_and_grads(p, b, jax.random.key(0)))(params, batch)
    loss, metrics, _, grads = jax.device_get(out)
    return float(loss), metrics, grads


@pytest.mark.parametrize("loss,devices", [("sigmoid", 1), ("softmax", 4)])
def test_four_micro_batches_equal_the_full_batch_step(loss, devices):
    model = vitjax.create_model("clip" if loss == "softmax" else "siglip", **TINY)
    objective = create_objective(dict(name="clip", loss=loss, tokenizer="bytes", context_length=T))
    assert supports_gradient_caching(objective)
    mesh = sh.make_mesh({"data": 2, "fsdp": devices // 2} if devices > 1 else {}, jax.devices()[:devices])
    run = RunInfo(mesh=mesh, rules=sh.DEFAULT_RULES, steps_per_epoch=1, total_steps=1, batch_size=B,
                  eval_batch_size=B)
    params = _params(model)
    rng = np.random.default_rng(1)
    batch = {"image": rng.normal(size=(B, 8, 8, 1)).astype(np.float32),
             "tokens": rng.integers(3, 200, size=(B, T)).astype(np.int32)}
    batch["tokens"][:, -1] = 2     # the end token the text tower pools at
    full_loss, full_m, full_g = _loss_and_grads(model, objective, run, 1, params, batch)
    loss4, m4, g4 = _loss_and_grads(model, objective, run, 4, params, batch)
    # the loss of the whole batch (contrasted across micro-batches); plain accumulation, which averaged
    # each micro-batch contrasted with its own 4 texts, was off by 0.4% (sigmoid) to 10%
    assert abs(loss4 - full_loss) <= 1e-5 * abs(full_loss), (loss4, full_loss)
    for k in full_m:
        np.testing.assert_allclose(m4[k], full_m[k], rtol=1e-5, err_msg=k)
    flat_full = jax.tree_util.tree_leaves_with_path(full_g)
    flat_4 = jax.tree.leaves(g4)
    assert len(flat_full) == len(flat_4)
    norm = lambda t: float(np.sqrt(sum(np.sum(np.square(x)) for x in t)))  # noqa: E731
    total = norm([a for _, a in flat_full])
    rel_total = norm([b - a for (_, a), b in zip(flat_full, flat_4)]) / total
    print(f"{loss}: loss rel. diff {abs(loss4 - full_loss) / abs(full_loss):.2e}, gradient rel. diff {rel_total:.2e}")
    assert rel_total <= 1e-5
    # and leaf by leaf (float32 summation order differs; a leaf whose true gradient is ~0, a key bias,
    # is measured against the total)
    for (path, a), b in zip(flat_full, flat_4):
        rel = np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-3 * total)
        assert rel <= 1e-4, (jax.tree_util.keystr(path), rel)
