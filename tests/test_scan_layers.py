"""Scanned layers (``model.scan_layers=True``, ``vitjax.models.scan``): the scanned network equals the
unrolled one (values and gradients), the layouts convert losslessly (params, optimizer state,
checkpoints, exports), and what XLA under-reports for loops (FLOPs, collectives) is corrected."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from vitjax.interop.registry import exporter, import_state_dict
from vitjax.models import scan
from vitjax.models.clip import CLIP
from vitjax.models.lm import LM
from vitjax.models.mae import MAE
from vitjax.models.perceiver import Perceiver, PerceiverAR
from vitjax.models.vit import ViT
from vitjax.param_tree import strip_boxes
from vitjax.training.checkpoint import Checkpointer
from vitjax.training.dry_run import executed_collectives
from vitjax.training.flops import compiled_flops
from vitjax.training.step import TrainState
from vitjax.generation import generate

pytestmark = pytest.mark.usefixtures("fast_compiles")


def _max_diff(a, b):
    return max(float(jnp.abs(jnp.asarray(x) - jnp.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a),
                                                                                   jax.tree.leaves(b)))


def _both(model, *inputs, **kw):
    """(unscanned model, its params, scanned model, its params): the scanned model's init, split."""
    scanned = model.clone(scan_layers=True)
    boxed = scanned.init(jax.random.key(0), *inputs, **kw)["params"]
    p_scan = strip_boxes(boxed)
    return model, scan.unscan_tree(p_scan), scanned, p_scan, boxed


@pytest.fixture(scope="module")
def vit_pair():
    model = ViT(num_classes=5, image_size=16, patch_size=8, width=32, depth=3, num_heads=2, mlp_dim=64,
                head_zero_init=False, drop_path=0.2, remat="full")
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    return (x,) + _both(model, x)


def test_vit_scanned_equals_unrolled_values_and_gradients(vit_pair):
    x, m0, p0, m1, p1, boxed = vit_pair
    assert sorted(p1["encoder"]) == ["block0-2"] and sorted(p0["encoder"]) == ["block0", "block1", "block2"]
    assert p1["encoder"]["block0-2"]["attn"]["query"]["kernel"].shape == (3, 32, 2, 16)
    # the stacked axis carries the logical name the rules table replicates
    spec = nn.get_partition_spec(boxed)["encoder"]["block0-2"]["attn"]["query"]["kernel"]
    assert tuple(spec) == ("layers", "embed", "heads", "kv")
    assert _max_diff(m0.apply({"params": p0}, x), m1.apply({"params": p1}, x)) < 1e-5

    def grads(m, p):
        return jax.grad(lambda q: jnp.sum(m.apply({"params": q}, x) ** 2))(p)
    g0, g1 = grads(m0, p0), grads(m1, p1)
    assert _max_diff(scan.to_layout(g0, p1), g1) < 1e-5
    # drop-path per layer runs inside the scan (traced rates): finite, and a different network in training
    y = m1.apply({"params": p1}, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert bool(jnp.isfinite(y).all()) and _max_diff(y, m1.apply({"params": p1}, x)) > 1e-3


def test_layouts_convert_losslessly_through_optimizer_state_and_shardings(vit_pair):
    _, _, p0, _, p1, _ = vit_pair
    assert _max_diff(scan.to_layout(p0, p1), p1) == 0.0 and _max_diff(scan.unscan_tree(p1), p0) == 0.0
    assert scan.unscan_tree(p0) is not None and scan.stack_names(p1) == {"block0-2"}
    # Adam's moments sit in optax namedtuples: converted wherever they hold parameter dicts
    opt0 = optax.adamw(1e-3).init(p0)
    opt1 = scan.to_layout(opt0, p1)
    assert _max_diff(opt1, optax.adamw(1e-3).init(p1)) == 0.0
    assert type(opt1[0]) is type(opt0[0])
    # abstract shapes keep their shardings, gaining/losing a replicated leading dim
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("fsdp",))
    sds = jax.ShapeDtypeStruct((32, 2, 16), jnp.float32,
                               sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp")))
    stacked = scan.scan_tree({"block0": {"k": sds}, "block1": {"k": sds}}, {"block0-1"})["block0-1"]["k"]
    assert stacked.shape == (2, 32, 2, 16) and tuple(stacked.sharding.spec) == (None, "fsdp")
    back = scan.unscan_tree({"block0-1": {"k": stacked}})
    assert tuple(back["block1"]["k"].sharding.spec) == ("fsdp",)


def test_blocks_of_different_shapes_are_one_clear_error():
    tree = {"stage2_block0": {"w": np.zeros((4, 4))}, "stage2_block1": {"w": np.zeros((4, 8))}}
    with pytest.raises(ValueError) as e:
        scan.scan_tree(tree, {"stage2_block0-1"})
    assert str(e.value).startswith("cannot stack stage2_block0-1['w']: layer 1 has shape (4, 8) but layer 0 has (4, 4)")
    with pytest.raises(ValueError) as e:
        scan.check_uniform("stage 2", [("window", 7), ("window", 7), ("window", 4)])
    assert str(e.value) == (
        "model.scan_layers=True cannot scan stage 2: its block 2 is built with ('window', 4) but block 0 with "
        "('window', 7) (layers of different shapes); set --config.model.scan_layers=False for this model")


def test_timm_export_and_import_of_a_scanned_vit_equal_the_unrolled_ones(vit_pair):
    x, m0, p0, m1, p1, _ = vit_pair
    s0, s1 = exporter(m0, "timm").state_dict(p0), exporter(m1, "timm").state_dict(p1)
    assert sorted(s0) == sorted(s1) and max(float(np.abs(np.asarray(s0[k]) - np.asarray(s1[k])).max()) for k in s0) == 0
    back = import_state_dict({k: np.asarray(v) for k, v in s0.items()}, m1)
    assert scan.stack_names(back) == {"block0-2"} and _max_diff(back, p1) == 0.0


@pytest.mark.parametrize("family", ["mae", "clip", "perceiver", "perceiver_ar"])
def test_other_families_scanned_equal_unrolled(family):
    if family == "mae":
        model = MAE(image_size=16, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64, decoder_width=16,
                    decoder_depth=2, decoder_heads=2, decoder_mlp_dim=32)
        inputs = (jax.random.normal(jax.random.key(1), (2, 16, 16, 3)),)
        kw = dict(rngs={"masking": jax.random.key(3)})
    elif family == "clip":
        model = CLIP(embed_dim=16, image_size=16, patch_size=8, vision_width=32, vision_depth=2, vision_heads=2,
                     vision_mlp_dim=64, text_vocab_size=50, text_context_length=8, text_width=32, text_depth=2,
                     text_heads=2, text_mlp_dim=64, eos_id=49)
        inputs = (jax.random.normal(jax.random.key(1), (2, 16, 16, 3)),
                  jax.random.randint(jax.random.key(2), (2, 8), 0, 50))
        kw = {}
    elif family == "perceiver":   # the shared latent tower runs twice: one scanned stack, called twice
        model = Perceiver(num_classes=3, image_size=8, in_channels=1, num_latents=4, latent_dim=16, num_blocks=2,
                          num_self_attends_per_block=3, num_cross_attends=1, num_self_heads=2, num_bands=2)
        inputs = (jax.random.normal(jax.random.key(1), (2, 8, 8, 1)),)
        kw = {}
    else:
        model = PerceiverAR(vocab_size=11, max_len=12, num_latents=4, width=16, depth=3, num_heads=2)
        inputs = (jax.random.randint(jax.random.key(1), (2, 12), 0, 11),)
        kw = {}
    m0, p0, m1, p1, _ = _both(model, *inputs, **{k: v for k, v in kw.items() if k != "rngs"})
    assert scan.stack_names(p1) and not scan.stack_names(p0)
    assert _max_diff(m0.apply({"params": p0}, *inputs, **kw), m1.apply({"params": p1}, *inputs, **kw)) < 1e-5


def test_scanned_lm_generates_the_same_tokens_and_mid_layer_features():
    m0 = LM(vocab_size=40, max_len=24, width=32, depth=3, num_heads=4, num_kv_heads=2, mlp="swiglu",
            norm="rmsnorm", positions="rotary", use_bias=False, tie_embeddings=False)
    toks = jax.random.randint(jax.random.key(1), (2, 10), 0, 40)
    m0, p0, m1, p1, _ = _both(m0, toks)
    assert "block_0-2" in p1 and "block_2" in p0
    assert _max_diff(m0.apply({"params": p0}, toks), m1.apply({"params": p1}, toks)) < 1e-5
    assert _max_diff(m0.apply({"params": p0}, toks, return_layer=2),
                     m1.apply({"params": p1}, toks, return_layer=2)) < 1e-5
    prompts, lengths = np.array([[3, 4, 5, 0], [7, 8, 9, 10]], np.int32), np.array([3, 4])
    g0 = generate(m0, p0, prompts, lengths, max_new_tokens=6)
    g1 = generate(m1, p1, prompts, lengths, max_new_tokens=6)    # the KV cache is the scan's carry
    np.testing.assert_array_equal(np.asarray(g0.tokens), np.asarray(g1.tokens))


def test_checkpoint_saved_scanned_restores_unscanned_and_the_reverse(vit_pair, tmp_path, caplog):
    """A train state (params, Adam's moments, a DINO-style teacher in ``extra``) saved in one layout
    resumes in the other: converted, into the target's shardings, with one log line."""
    _, _, p0, _, p1, _ = vit_pair
    tx = optax.adamw(1e-3)
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def state(params):
        grads = jax.tree.map(lambda a: 0.1 * a + 0.01, params)
        opt = tx.update(grads, tx.init(params), params)[1]          # non-zero moments
        return TrainState(step=jnp.asarray(3, jnp.int32), params=params, opt_state=opt,
                          extra={"teacher": jax.tree.map(lambda a: a * 2, params)})

    def abstract(st):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), st)

    for saved, target, layout in ((p1, p0, "scanned"), (p0, p1, "unscanned")):
        wd = tmp_path / layout
        ck = Checkpointer(str(wd), async_save=False)
        ck.save(3, state(saved))
        ck.wait()
        with caplog.at_level(logging.WARNING, logger="vitjax"):
            step, restored = Checkpointer(str(wd), async_save=False).resume(abstract(state(target)))
        other = "unscanned" if layout == "scanned" else "scanned"
        assert any(f"was saved with {layout} layers; converted to this model's {other} layout" in r.message
                   for r in caplog.records)
        assert step == 3 and _max_diff(restored, state(target)) < 1e-6
        assert scan.same_layout(restored.params, target) and scan.same_layout(restored.opt_state, target)
        assert restored.params["head"]["kernel"].sharding == dev


def test_flops_of_a_scanned_step_count_every_layer():
    x = jnp.ones((2, 16, 32))
    from vitjax.models.transformer import Encoder
    flops = {}
    for s in (False, True):
        e = Encoder(4, 2, 64, scan_layers=s, remat="full")
        v = e.init(jax.random.key(0), x)
        traced = jax.jit(jax.grad(lambda v: jnp.sum(e.apply(v, x)))).trace(v)
        compiled = traced.lower().compile()
        flops[s] = (compiled_flops(compiled), compiled_flops(compiled, traced.jaxpr))
    assert flops[True][0] < 0.3 * flops[False][0]                 # XLA alone counts the loop body once
    assert abs(flops[True][1] / flops[False][1] - 1) < 0.05       # scaled by the scan's length


def test_collectives_inside_a_loop_count_once_per_iteration():
    hlo = "\n".join([
        "HloModule m",
        "%body.1 (p: f32[]) -> f32[] {",
        "  %ag = f32[8] all-gather(f32[1] %x), dimensions={0}",
        "  %ar = f32[] all-reduce(f32[] %y), to_apply=%add",
        "}",
        "%cond.1 (p: f32[]) -> pred[] {",
        "  %c = pred[] constant(true)",
        "}",
        "ENTRY %main (a: f32[]) -> f32[] {",
        "  %w = f32[] while(f32[] %a), condition=%cond.1, body=%body.1, "
        'backend_config={"known_trip_count":{"n":"40"}}',
        "  %ag2 = f32[8] all-gather-start(f32[1] %z), dimensions={0}",
        "}",
    ])
    counts = executed_collectives(hlo)
    assert counts["all-gather"] == 41 and counts["all-reduce"] == 40 and counts["reduce-scatter"] == 0


def test_layer_decay_of_a_scanned_stack_is_per_layer(vit_pair):
    from ml_collections import ConfigDict
    from vitjax.training.optim import layer_decay_scales, make_optimizer
    _, _, p0, _, p1, _ = vit_pair
    s0, s1 = layer_decay_scales(p0, 0.5), layer_decay_scales(p1, 0.5)
    assert s1["head"]["kernel"] == s0["head"]["kernel"] == 1.0 and s1["patch_embed"]["kernel"] == 0.0625
    np.testing.assert_allclose(np.asarray(s1["encoder"]["block0-2"]["mlp"]["fc1"]["kernel"]).ravel(),
                               [s0["encoder"][f"block{i}"]["mlp"]["fc1"]["kernel"] for i in range(3)])
    cfg = ConfigDict(dict(name="sgd", lr=1.0, momentum=0.0, weight_decay=0.0, warmup_steps=0, schedule="constant",
                          layer_decay=0.5))
    tx, _ = make_optimizer(cfg, 10)
    ones = jax.tree.map(jnp.ones_like, p1)
    upd, _ = tx.update(ones, tx.init(ones), ones)
    np.testing.assert_allclose(upd["encoder"]["block0-2"]["attn"]["query"]["kernel"][:, 0, 0, 0], [-0.125, -0.25, -0.5])
