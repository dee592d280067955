"""vitjax.models.attention: the entry point, its implementations and their exactness.

Sparse patterns equal dense attention under their explicit mask (values and gradients, fp32);
linear attention's causal prefix-sum form equals its quadratic form; Performer's error falls with
the feature count; BigBird equals HF ``BigBirdModel``'s block-sparse attention given the same random
blocks; the choice of implementation, its errors and the config plumbing read as documented.
"""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitjax.config import apply_overrides, load_config_file
from vitjax.models import build_model, create_model
from vitjax.models import attention as A
from vitjax.models import attention_linear, attention_sparse
from vitjax.models.attention_core import AttentionOptions

from conftest import REPO

pytestmark = pytest.mark.usefixtures("fast_compiles")

B, T, H, D = 2, 37, 3, 8          # T not a multiple of the block: the padding path runs
OPTS = AttentionOptions(window=5, global_tokens=2, random_blocks=1, block_size=8, dilation=2)


def _qkv(t=T, h=H, seed=0, scale=1.0):
    r = np.random.default_rng(seed)
    return [jnp.asarray(r.normal(size=(B, t, h, D)) * scale, jnp.float32) for _ in range(3)]


def _values_and_grads(f, q, k, v):
    # One compiled program (rather than op-by-op dispatch, which compiles every small op once).
    return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums=(0, 1, 2)))(q, k, v)


def _max_diff(a, b):
    return max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("pattern", attention_sparse.PATTERNS)
def test_sparse_pattern_equals_dense_attention_with_its_mask(pattern, causal):
    q, k, v = _qkv()
    keys = jnp.asarray(np.random.default_rng(1).random((B, 1, 1, T)) > 0.2)     # a padding mask too
    mask = jnp.asarray(A.pattern_mask(pattern, T, OPTS, H, causal=causal)) & keys
    assert 0.1 < float(mask.mean()) < 0.95                                      # sparse, not empty
    sparse = _values_and_grads(lambda *a: A.attend(*a, impl=pattern, options=OPTS, causal=causal, mask=keys),
                               q, k, v)
    dense = _values_and_grads(lambda *a: A.attend(*a, impl="xla", mask=mask), q, k, v)
    assert _max_diff(sparse, dense) <= 1e-5


def test_xla_matches_jax_attention_including_grouped_heads_and_decoding_offsets():
    q, k, v = _qkv()
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    assert _max_diff(A.attend(q, k, v, impl="xla", causal=True), ref) <= 1e-6
    kv1 = k[:, :, :1], v[:, :, :1]                                              # 3 query heads, 1 kv head
    assert _max_diff(A.attend(q, *kv1, impl="xla"), jax.nn.dot_product_attention(q, *kv1)) <= 1e-6
    full = A.attend(q, k, v, causal=True)
    # Cached decoding: the last query alone at offset T-1; per-row offsets [B] pick different rows.
    assert _max_diff(A.attend(q[:, -1:], k, v, causal=True, query_offset=T - 1), full[:, -1:]) <= 1e-6
    rows = A.attend(jnp.stack([q[0, 3:5], q[1, 10:12]]), k, v, causal=True, query_offset=jnp.array([3, 10]))
    assert _max_diff(rows, jnp.stack([full[0, 3:5], full[1, 10:12]])) <= 1e-6


@pytest.mark.parametrize("kind", attention_linear.KINDS)
def test_linear_attention_prefix_sum_form_equals_its_quadratic_form(kind):
    q, k, v = _qkv()
    for causal in (False, True):
        fast = A.attend(q, k, v, impl=kind, causal=causal, options=OPTS)
        slow = attention_linear.quadratic_form(q, k, v, kind=kind, options=OPTS, causal=causal)
        assert _max_diff(fast, slow) <= 1e-5, causal


def test_performer_error_falls_as_features_grow():
    q, k, v = _qkv(t=64, scale=0.5)
    exact = A.attend(q, k, v, impl="xla")
    err = [float(jnp.abs(A.attend(q, k, v, impl="performer", options=dict(features=m, seed=0)) - exact).mean())
           for m in (64, 256, 1024)]
    assert err[0] > err[1] > err[2], err


def test_bigbird_equals_hf_block_sparse_attention_with_the_same_random_blocks():
    torch = pytest.importorskip("torch")
    from transformers import BigBirdConfig, BigBirdModel

    cfg = BigBirdConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, attention_type="block_sparse",
                        block_size=4, num_random_blocks=2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    # train(): HF draws random blocks only in training mode (seeded by the layer index); no dropout here.
    hf = BigBirdModel(cfg).train().encoder.layer[0].attention.self
    plans = []
    draw = hf._bigbird_block_rand_mask_with_head
    hf._bigbird_block_rand_mask_with_head = lambda *a, **kw: plans.append(draw(*a, **kw)) or plans[-1]
    t = 64
    x = torch.randn(2, t, 16)
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(
        torch.ones(2, t), cfg.block_size)
    with torch.no_grad():
        want = hf(x, band_mask=band, from_mask=from_mask, to_mask=to_mask, from_blocked_mask=blocked,
                  to_blocked_mask=blocked)[0].numpy()
    plan = np.stack(plans[0])                                                   # [H, nb - 2, r]
    assert plan.shape == (2, t // 4 - 2, 2) and plan.any()

    def proj(lin):
        y = x.numpy() @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
        return jnp.asarray(y.reshape(2, t, 2, 8))

    got = attention_sparse.sparse_attention(
        proj(hf.query), proj(hf.key), proj(hf.value), pattern="bigbird",
        options=AttentionOptions(block_size=4, random_blocks=2), random_blocks=plan)
    assert np.abs(np.asarray(got).reshape(2, t, 16) - want).max() <= 1e-4


def test_bigbird_random_blocks_avoid_window_and_globals():
    plan = attention_sparse.bigbird_random_blocks(10, 2, 3, seed=0)
    assert plan.shape == (2, 8, 3)
    for i in range(1, 9):
        row = plan[:, i - 1]
        assert not np.isin(row, [0, 9, i - 1, i, i + 1]).any()
        assert all(len(set(r)) == 3 for r in row)
    assert not np.array_equal(plan, attention_sparse.bigbird_random_blocks(10, 2, 3, seed=1))


@pytest.mark.parametrize("impl", ["xla", "band", "linear"])
def test_a_fully_masked_query_row_gives_zeros_and_finite_gradients(impl):
    q, k, v = _qkv()
    if impl == "linear":
        mask = jnp.zeros((B, 1, 1, T), bool).at[1].set(True)                    # example 0: no key at all
        dead = (0, slice(None))
    else:
        mask = jnp.ones((B, 1, T, T), bool).at[:, :, 4].set(False)              # query 4 sees nothing
        dead = (slice(None), 4)
    out = A.attend(q, k, v, impl=impl, mask=mask, options=OPTS)
    assert float(jnp.abs(out[dead]).max()) == 0.0
    grads = jax.grad(lambda *a: A.attend(*a, impl=impl, mask=mask, options=OPTS).sum(), argnums=(0, 1, 2))(q, k, v)
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


def test_auto_explicit_and_unknown_implementations(caplog):
    q, k, v = _qkv()
    assert A.resolve("auto", q, k) == "xla"                                      # this CPU
    assert A.resolve("auto", q, k, platform="tpu") == "xla"                      # short: XLA on TPU too
    long_q = jax.ShapeDtypeStruct((1, 2048, 2, 64), jnp.float32)
    assert A.resolve("auto", long_q, long_q, platform="tpu") == "pallas"         # splash from 1,024 tokens
    with caplog.at_level(logging.INFO, logger="vitjax"):
        assert A.resolve("auto", long_q, long_q, mask=jnp.ones((1, 1, 1, 2048), bool), platform="tpu") == "xla"
    assert "not using pallas on tpu: the Pallas flash kernels here take no explicit mask" in caplog.text
    with pytest.raises(ValueError) as e:
        A.attend(q, k, v, impl="cudnn")
    assert str(e.value) == ("attention implementation 'cudnn' is not available on platform 'cpu'; available here: "
                            "['xla', 'band', 'dilated', 'block_local', 'bigbird', 'linear', 'performer'] (or 'auto')")
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'; choose one of"):
        A.attend(q, k, v, impl="flash")
    with pytest.raises(ValueError, match="linear attention has no probability matrix to apply dropout to"):
        A.attend(q, k, v, impl="linear", dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0), deterministic=False)


def test_a_window_longer_than_the_sequence_is_clamped_and_logged(caplog):
    q, k, v = _qkv(t=20)
    with caplog.at_level(logging.INFO, logger="vitjax"):
        out = A.attend(q, k, v, impl="band", options=dict(window=500, block_size=8))
    assert "attention band: window 500 reaches past the sequence of 20 tokens; clamped to 19" in caplog.text
    assert _max_diff(out, A.attend(q, k, v, impl="xla")) <= 1e-6


def test_pallas_kernels_are_wired_right_in_the_interpreter():
    """Unmeasured on this CPU-only machine: the GPU (Triton) and TPU (splash) kernels run here only in
    the Pallas interpreter, which checks the padding and segment-id wiring, not speed."""
    q, k, v = (x[:1, :, :2] for x in _qkv(t=40))
    assert _max_diff(A._flash_gpu(q, k, v, causal=True, interpret=True), A.attend(q, k, v, causal=True)) <= 1e-5
    assert _max_diff(A._splash(q, k, v, causal=False, interpret=True), A.attend(q, k, v)) <= 1e-5


def test_model_attention_reaches_every_family_and_swin_refuses_it():
    def build(config, *args):
        return build_model(apply_overrides(load_config_file(str(REPO / "configs" / config)), list(args)))

    vit = build("vit_digits.py", "--config.model.attention=band", "--config.model.attention_options.window=3")
    assert (vit.attention, vit.attention_options.window) == ("band", 3)
    for config in ("mae_digits.py", "clip_digits.py", "dino_digits.py", "perceiver_digits.py"):
        assert build(config, "--config.model.attention=linear").attention == "linear", config
    with pytest.raises(ValueError, match="do not apply to the 'swin' model, which has its own attention"):
        build("swin_digits.py", "--config.model.attention=band")
    # A ViT whose band covers every token computes exactly what dense attention does.
    kw = dict(num_classes=3, image_size=8, patch_size=2, width=16, depth=1, num_heads=2, mlp_dim=16)
    dense, band = create_model("vit", variant=None, **kw), create_model(
        "vit", variant=None, attention="band", attention_options=dict(window=64, global_tokens=1), **kw)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    params = dense.init(jax.random.PRNGKey(0), x)
    assert _max_diff(band.apply(params, x), dense.apply(params, x)) <= 1e-5


@pytest.mark.parametrize("impl", ["xla", "band"])
def test_attention_dropout_is_seeded_and_off_when_deterministic(impl):
    q, k, v = _qkv()
    run = lambda seed, det: A.attend(q, k, v, impl=impl, options=OPTS, dropout_rate=0.5,  # noqa: E731
                                     dropout_rng=jax.random.PRNGKey(seed), deterministic=det)
    plain = A.attend(q, k, v, impl=impl, options=OPTS)
    assert _max_diff(run(0, True), plain) == 0.0
    assert _max_diff(run(0, False), run(0, False)) == 0.0
    assert _max_diff(run(0, False), plain) > 0.05 and _max_diff(run(0, False), run(1, False)) > 0.05


def test_a_jax_without_the_flash_kernels_or_a_lowering_loses_only_pallas(monkeypatch, caplog):
    """jax.experimental moves between releases: a module missing there costs `pallas` on that platform,
    with the reason; `auto` falls back to xla / the reference, explicit requests raise it."""
    from vitjax.kernels import dispatch
    missing = "jax.experimental.pallas.ops.tpu.splash_attention does not import on jax 9.9 (ImportError: gone)"
    monkeypatch.setitem(dispatch._modules, A.FLASH["tpu"], (None, missing))
    long_q = jax.ShapeDtypeStruct((1, 2048, 2, 64), jnp.float32)
    assert "pallas" not in A.available("tpu") and "pallas" in A.available("gpu")
    with caplog.at_level(logging.INFO, logger="vitjax"):
        assert A.resolve("auto", long_q, long_q, platform="tpu") == "xla"
    assert f"attention auto: not using splash on tpu: {missing}; using xla" in caplog.text
    with pytest.raises(ValueError) as e:
        A.resolve("pallas", long_q, long_q, platform="tpu")
    assert str(e.value) == (f"attention implementation 'pallas' is not available on platform 'tpu' ({missing}); "
                            "available here: ['xla', 'band', 'dilated', 'block_local', 'bigbird', 'linear', "
                            "'performer'] (or 'auto')")
    # the Pallas kernels' GPU lowering (Triton) missing: auto takes the jnp reference, explicit raises
    gone = "jax.experimental.pallas.triton does not import on jax 9.9 (ImportError: gone)"
    monkeypatch.setitem(dispatch._modules, dispatch.LOWERING["gpu"], (None, gone))
    assert "pallas" not in A.available("gpu")
    with caplog.at_level(logging.WARNING, logger="vitjax"):
        assert dispatch.resolve("window-attention", "auto", None, "gpu") == ("reference", False)
    assert f"window-attention kernel: using the jnp reference on gpu: {gone}" in caplog.text
    with pytest.raises(ValueError) as e:
        dispatch.resolve("window-attention", "pallas", None, "gpu")
    assert str(e.value) == (f"the Pallas window-attention kernel cannot compile on gpu: {gone}; use "
                            "implementation='reference' (or 'auto', which falls back to it)")
    assert dispatch.resolve("window-attention", "pallas", True, "gpu") == ("pallas", True)   # interpreter needs none
    assert dispatch.optional_module("jax.experimental.no_such_module")[1].startswith(
        "jax.experimental.no_such_module does not import on jax ")
