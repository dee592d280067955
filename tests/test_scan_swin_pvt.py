"""Scanned layers (``scan_layers=True``) for Swin and PVT v2: each stage's blocks as one
``nn.scan``. The scanned model computes the unscanned one's logits and gradients (fp32, eval mode,
<= 1e-5) from the same weights in the other layout; its parameters carry the leading ``layers`` axis;
the timm export is the unscanned one's state dict and timm runs it; timm weights import into it;
Swin's window kernel (interpret mode) runs inside the scan; blocks built differently are refused.

Train mode with drop-path is not compared: the scan splits the dropout rng per layer, so the
scanned and unscanned models draw different drop masks from the same rng.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec

import vitjax
from vitjax.interop import registry
from vitjax.models import scan
from vitjax.models.pvt import PVT
from vitjax.models.swin import Swin

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from tests.test_export_swin import _perturb_torch  # noqa: E402

# Tiny programs compiled once each: XLA's CPU optimisation passes would dominate their compile time.
pytestmark = pytest.mark.usefixtures("fast_compiles")

# Tiny twins of timm models, one stage each (every stage adds seconds of compile). Swin: 12px, patch 2
# -> a 6x6 map padded to 8x8 for window 4 with shift 2: a W-MSA and an SW-MSA layer in one stack.
# PVT v2: two blocks with spatial reduction 2.
SWIN_ARCH = dict(num_classes=5, patch_size=2, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4)
PVT_ARCH = dict(num_classes=5, embed_dims=(8,), depths=(2,), num_heads=(1,), mlp_ratios=(2,), sr_ratios=(2,))
SWIN_PX, PVT_PX = 12, 32


def _key(seed):
    # RBG keys: XLA compiles RngBitGenerator-based initialisers ~10x faster than threefry on CPU.
    return jax.random.key(seed, impl="rbg")


def _model(family, **kw):
    if family == "swin":
        return vitjax.create_model("swin", variant=None, image_size=SWIN_PX, drop_path=0.1, **SWIN_ARCH, **kw)
    return vitjax.create_model("pvt_v2", variant=None, image_size=PVT_PX, drop_path=0.1, **PVT_ARCH, **kw)


def _timm_net(family):
    if family == "swin":
        net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=SWIN_PX,
                                drop_path_rate=0.0, **SWIN_ARCH)
    else:
        net = timm.create_model("pvt_v2_b0", pretrained=False, drop_path_rate=0.0, **PVT_ARCH)
    return _perturb_torch(net, 0)


def _torch_logits(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)).numpy()


class Case:
    """One family: its scanned and unscanned models, random weights in both layouts, and one compiled
    program giving both models' (logits, gradients) from the scanned weights (one program compiles
    faster than two)."""

    def __init__(self, family):
        self.family = family
        self.scanned = _model(family, scan_layers=True)
        self.flat = self.scanned.clone(scan_layers=False)
        s = self.scanned.image_size
        rng = np.random.RandomState(0)
        self.images = jnp.asarray(rng.randn(2, s, s, 3).astype(np.float32))
        # Shapes only (nothing compiled); random values everywhere, norm scales too.
        self.boxed = jax.eval_shape(self.scanned.init, _key(0), self.images)
        shapes = nn.meta.unbox(self.boxed)["params"]
        self.params = jax.tree.map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32), shapes)
        self.flat_params = scan.unscan_tree(self.params)
        weights = jnp.asarray(rng.randn(2, 5).astype(np.float32))

        def logits_and_grads(model, p, x):
            def loss(p):
                logits = model.apply({"params": p}, x)
                return jnp.sum(logits * weights), logits
            (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(p)
            return logits, grads

        self._both = jax.jit(lambda p, x: (logits_and_grads(self.scanned, p, x),
                                           logits_and_grads(self.flat, scan.unscan_tree(p), x)))

    def both(self, params=None):
        """-> ((logits, gradients) of the scanned model, the same of the unscanned one) at the scanned
        ``params`` (default: the random ones), as numpy (eager jax ops would compile per shape)."""
        return jax.device_get(self._both(self.params if params is None else params, self.images))


@pytest.fixture(scope="module")
def cases():
    """family -> its Case, built (and compiled) once for the module."""
    made = {}

    def get(family):
        if family not in made:
            made[family] = Case(family)
        return made[family]
    return get


FAMILIES = ["swin", "pvt"]


@pytest.mark.parametrize("family", FAMILIES)
def test_scanned_equals_unscanned_logits_and_gradients(family, cases):
    case = cases(family)
    (logits, grads), (ref_logits, ref_grads) = case.both()
    assert np.abs(ref_logits).max() > 0.1
    assert np.abs(logits - ref_logits).max() <= 1e-5
    grads = scan.to_layout(grads, ref_grads)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
    worst = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)))
    scale = max(np.abs(g).max() for g in jax.tree.leaves(ref_grads))
    assert scale > 0.1 and worst <= 1e-5, (worst, scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_stacks_have_the_layers_axis_and_unscanned_names_are_unchanged(family, cases):
    case = cases(family)
    params = nn.meta.unbox(case.boxed)["params"]
    specs = nn.get_partition_spec(case.boxed)["params"]
    depths = case.scanned.depths
    stacks = {f"stage{s}_block0-{d - 1}" for s, d in enumerate(depths)}
    assert stacks <= set(params) and not any(f"stage{s}_block0" in params for s in range(len(depths)))
    flat = nn.meta.unbox(jax.eval_shape(case.flat.init, _key(0), case.images))["params"]
    for s, d in enumerate(depths):
        name = f"stage{s}_block0-{d - 1}"
        for (path, leaf), spec, ref in zip(jax.tree_util.tree_leaves_with_path(params[name]),
                                           jax.tree.leaves(specs[name], is_leaf=lambda x: isinstance(x, PartitionSpec)),
                                           jax.tree.leaves(flat[f"stage{s}_block0"])):
            assert leaf.shape == (d,) + ref.shape, path
            assert spec[0] == "layers", (name, path, spec)
    # The unscanned model's parameter tree is exactly the scanned one's split into blocks.
    assert jax.tree.map(lambda a: a.shape, scan.unscan_tree(params)) == jax.tree.map(lambda a: a.shape, flat)


@pytest.mark.parametrize("family", FAMILIES)
def test_timm_export_of_scanned_equals_unscanned_and_runs_in_timm(family, cases):
    c = cases(family)
    sd = registry.exporter(c.scanned, "timm").state_dict(c.params)
    ref = registry.exporter(c.flat, "timm").state_dict(c.flat_params)
    assert sorted(sd) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(np.asarray(sd[k]), np.asarray(ref[k]), err_msg=k)
    net = _timm_net(family)
    missing = net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}, strict=False)
    # timm's Swin keeps its relative-position index and shift masks as buffers, not exported.
    assert not missing.unexpected_keys
    assert all("relative_position_index" in k or "attn_mask" in k for k in missing.missing_keys)
    (logits, _), _ = c.both()
    assert np.abs(_torch_logits(net.eval(), c.images) - logits).max() <= 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_timm_import_into_scanned_model(family, cases):
    c = cases(family)
    net = _timm_net(family)
    params = registry.import_state_dict(net.state_dict(), c.scanned)
    assert scan.stack_names(params) == scan.stack_names(c.params)
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, c.params)
    (logits, _), _ = c.both(params)
    ref = _torch_logits(net, c.images)
    assert np.abs(ref).max() > 0.1 and np.abs(logits - ref).max() <= 1e-4


def test_swin_scanned_pallas_interpret_and_unshifted_stage_match_unscanned_reference():
    # The window-attention kernel (interpret mode) inside the scan: stage 0's unshifted layer gets the
    # zeroed shift mask, its shifted one the real mask; stage 1 (3x3 map) shrinks the window to the
    # map, so neither of its layers is shifted.
    kw = dict(SWIN_ARCH, depths=(2, 2), num_heads=(2, 2))
    ms = vitjax.create_model("swin", variant=None, image_size=SWIN_PX, scan_layers=True, attention_impl="pallas",
                             attention_interpret=True, **kw)
    mu = vitjax.create_model("swin", variant=None, image_size=SWIN_PX, attention_impl="reference", **kw)
    assert [g[2] for g in ms.geometry] == [2, 0]
    x = jnp.asarray(np.random.RandomState(1).randn(2, SWIN_PX, SWIN_PX, 3).astype(np.float32))
    shapes = nn.meta.unbox(jax.eval_shape(ms.init, _key(0), x))["params"]
    rng = np.random.default_rng(2)
    params = jax.tree.map(lambda a: (0.3 * rng.standard_normal(a.shape)).astype(np.float32), shapes)
    out = np.asarray(jax.jit(lambda p: ms.apply({"params": p}, x))(params))
    ref = np.asarray(jax.jit(lambda p: mu.apply({"params": p}, x))(scan.unscan_tree(params)))
    assert np.abs(ref).max() > 0.1 and np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("cls,heads", [(Swin, (4, 2)), (PVT, (2, 1))])
def test_blocks_built_differently_cannot_be_scanned(cls, heads, monkeypatch):
    model = _model("swin" if cls is Swin else "pvt", scan_layers=True)
    original = cls._block_kwargs

    def differing(self, s, b):   # stage 0's second block built with twice the heads
        kw = original(self, s, b)
        return {**kw, "num_heads": kw["num_heads"] * 2} if (s, b) == (0, 1) else kw

    monkeypatch.setattr(cls, "_block_kwargs", differing)
    s = model.image_size
    with pytest.raises(ValueError) as err:
        jax.eval_shape(model.init, _key(0), jnp.zeros((1, s, s, 3)))
    assert re.fullmatch(rf"model.scan_layers=True cannot scan stage 0 \(blocks stage0_block0..1\): its block 1 is "
                        rf"built with \{{'num_heads': {heads[0]}, .*\}} but block 0 with \{{'num_heads': {heads[1]}, "
                        rf".*\}} \(layers of different shapes\); set --config.model.scan_layers=False for this model",
                        err.value.args[0]), err.value.args[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_remat_inside_and_outside_the_scan_changes_nothing_but_the_program(family, cases):
    """model.remat on Swin and PVT: the rematerialised model (scanned and unscanned) computes the same
    logits and gradients, and its program really recomputes (a remat primitive is in it; none without)."""
    case = cases(family)
    remat_scanned = case.scanned.clone(remat="save_attn_mlp_out")
    remat_flat = case.flat.clone(remat="full")

    def grads(model, p):
        return jax.grad(lambda p: jnp.sum(model.apply({"params": p}, case.images, train=False) ** 2))(p)

    flat_params = scan.unscan_tree(case.params)
    for model, params, remat in ((remat_scanned, case.params, True), (remat_flat, flat_params, True),
                                 (case.flat, flat_params, False)):
        assert ("remat" in str(jax.make_jaxpr(lambda p: grads(model, p))(params))) == remat
    both = jax.jit(lambda p: (grads(remat_scanned, p), grads(remat_flat, scan.unscan_tree(p)),
                              grads(case.flat, scan.unscan_tree(p))))
    g_scan, g_flat, ref = jax.device_get(both(case.params))
    g_scan = scan.to_layout(g_scan, ref)
    scale = max(np.abs(g).max() for g in jax.tree.leaves(ref))
    for g in (g_scan, g_flat):
        worst = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref)))
        assert scale > 0.1 and worst <= 1e-5 * scale, (worst, scale)
    with pytest.raises(ValueError, match="unknown remat policy 'sometimes'; choose one of"):
        case.flat.clone(remat="sometimes").init(_key(0), case.images)
