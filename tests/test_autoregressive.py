"""The next-token objective (dense decoders and Perceiver AR's latent windows), its probe features,
Perceiver AR's cached decoding, and the iGPT / Perceiver AR configs end to end (tiny)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from conftest import shrink_config
from vitjax.generation import generate
from vitjax.models import create_model
from vitjax.objectives import create_objective
from vitjax.objectives.autoregressive import window_ends

pytestmark = pytest.mark.usefixtures("fast_compiles")

T = 24            # model positions; sequences carry a start token, so tokens are [B, T + 1]
V = 10


def objective(**kw):
    return create_objective(dict(dict(name="next_token", seq_len=T + 1, vocab_size=V, probe=()), **kw))


@pytest.fixture(scope="module")
def lm():
    model = create_model("lm", vocab_size=V, head_vocab_size=V - 1, max_len=T, width=16, depth=2, num_heads=2,
                         norm="rmsnorm", mlp="quick_gelu", tie_embeddings=False)
    tokens = jax.random.randint(jax.random.key(1), (3, T + 1), 0, V - 1).at[:, 0].set(V - 1)
    params = nn.meta.unbox(model.init(jax.random.key(0), tokens[:, :-1])["params"])
    return model, params, tokens


@pytest.fixture(scope="module")
def par():
    model = create_model("perceiver_ar", vocab_size=V, max_len=T, num_latents=8, width=16, depth=2, num_heads=2)
    tokens = jax.random.randint(jax.random.key(2), (2, T + 1), 0, V)
    params = nn.meta.unbox(model.init(jax.random.key(0), tokens[:, :-1])["params"])
    return model, params, tokens


def test_window_ends_cover_every_position_once():
    assert window_ends(128, 16) == [16, 32, 48, 64, 80, 96, 112, 128]
    assert window_ends(20, 8) == [8, 16, 20] and window_ends(8, 8) == [8]


def test_dense_loss_is_mean_token_cross_entropy_in_nats_and_bits(lm):
    model, params, tokens = lm
    obj = objective()
    loss, metrics, _ = obj.loss(model, params, {}, {"tokens": tokens}, jax.random.key(0), train=False)
    logits = model.apply({"params": params}, tokens[:, :-1])
    want = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(metrics["bits_per_pixel"], want / math.log(2), rtol=1e-6)
    # Eval: sums over the real examples' tokens, divided by the loop.
    mask = jnp.array([True, False, True])
    m = obj.eval_metrics(model, params, {"tokens": tokens, "mask": mask})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    assert float(m["bits_per_pixel"][1]) == 2 * T
    np.testing.assert_allclose(m["bits_per_pixel"][0] / m["bits_per_pixel"][1],
                               (ce[0].sum() + ce[2].sum()) / (2 * T) / math.log(2), rtol=1e-6)
    # pad_id targets do not count (text padding).
    padded = tokens.at[:, -5:].set(0)
    m = objective(pad_id=0).eval_metrics(model, params, {"tokens": padded, "mask": jnp.ones(3, bool)})
    assert float(m["loss"][1]) == float(jnp.sum(padded[:, 1:] != 0))


def test_perceiver_ar_windows_predict_every_position_causally(par):
    model, params, tokens = par
    obj = objective()
    ce, w = obj.token_losses(model, params, tokens)
    assert ce.shape == (2, T) and float(w.sum()) == 2 * T
    # Positions 16..23 come from the latents of the whole sequence, 8..15 from the prefix of 16.
    for end in (T, 16):
        logits = model.apply({"params": params}, tokens[:, :end])
        want = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, end - 7:end + 1])
        np.testing.assert_allclose(ce[:, end - 8:end], want, rtol=1e-5, atol=1e-6)
    # No prediction sees its target or a later token: changing token j (the target of position
    # j - 1) moves no loss before position j - 1.
    j = 13
    ce2, _ = obj.token_losses(model, params, tokens.at[:, j].set((tokens[:, j] + 1) % V))
    np.testing.assert_array_equal(ce2[:, :j - 1], ce[:, :j - 1])
    assert float(jnp.abs(ce2[:, j:] - ce[:, j:]).max()) > 1e-4


def test_probe_features_are_a_middle_layer_average(lm, par, caplog):
    model, params, tokens = lm
    obj = objective(probe=("linear",), num_classes=10)
    assert obj.default_evals()["linear"]["type"] == "linear_probe"
    with caplog.at_level("INFO", logger="vitjax"):
        feats = obj.feature_fn(model)(params, tokens)
    assert "probing the average-pooled output of block_0 (layer 1 of 2)" in caplog.text
    want = model.apply({"params": params}, tokens[:, :-1], return_layer=1).mean(axis=1)
    np.testing.assert_allclose(feats, want, rtol=1e-6)
    # A model without return_layer: its block output captured by name.
    pmodel, pparams, ptokens = par
    feats = objective(probe_block="self_attend{}", probe_layer=2).feature_fn(pmodel)(pparams, ptokens)
    assert feats.shape == (2, 16)
    with pytest.raises(ValueError, match=r"^objective.probe_layer=3 must be between 1 and the model's depth 2$"):
        objective(probe_layer=3).feature_fn(model)


def test_probe_layers_concatenate_several_blocks_average_pooled_outputs(lm, par, caplog):
    model, params, tokens = lm
    obj = objective(probe=("linear",), probe_layers=[1, 2], num_classes=10)
    with caplog.at_level("INFO", logger="vitjax"):
        feats = obj.feature_fn(model)(params, tokens)
    assert "probing the average-pooled outputs of block_0, block_1 (layers 1, 2 of 2), concatenated" in caplog.text
    want = [model.apply({"params": params}, tokens[:, :-1], return_layer=k).mean(axis=1) for k in (1, 2)]
    assert feats.shape == (3, 32)
    np.testing.assert_allclose(feats, jnp.concatenate(want, axis=-1), rtol=1e-6)
    # Captured by name from a model without return_layer: the same as probing each layer alone.
    pmodel, pparams, ptokens = par
    both = objective(probe_block="self_attend{}", probe_layers=[2, 1]).feature_fn(pmodel)(pparams, ptokens)
    one = [objective(probe_block="self_attend{}", probe_layer=k).feature_fn(pmodel)(pparams, ptokens) for k in (2, 1)]
    np.testing.assert_allclose(both, jnp.concatenate(one, axis=-1), rtol=1e-6)
    with pytest.raises(ValueError, match=r"^objective.probe_layers=\[1, 3\] must be between 1 and the model's "
                                         r"depth 2$"):
        objective(probe=("linear",), probe_layers=[1, 3]).check_model(model)     # at start-up
    with pytest.raises(ValueError, match=r"^objective.probe_layers=\[1, 2\] and probe_layer=2: set one of them"):
        objective(probe_layers=[1, 2], probe_layer=2)


def test_igpt_translation_augmentation_shifts_the_digit_before_its_pixel_tokens():
    """configs/igpt_digits.py's train ops move the digit by dx in -1..1 columns (rows stay), background
    (token 0) filling the uncovered column, then tokenise it; its eval ops leave held-out digits as they are."""
    from vitjax.data.ops import apply_ops, build_ops
    from vitjax.data.translate import translate

    c = shrink_config("igpt_digits.py", {}, {})
    image = (np.arange(64, dtype=np.int64).reshape(8, 8, 1) % 17 * 255 // 16).astype(np.uint8)  # palette greys
    levels = np.arange(64).reshape(8, 8) % 17

    class Offsets:   # the (dy, dx) that random_translate draws, checked against its ranges
        def __init__(self, dx):
            self.calls = iter([((0, 1), 0), ((-1, 2), dx)])

        def integers(self, low, high):
            (want, value) = next(self.calls)
            assert (low, high) == want
            return value

    train_ops, eval_ops = build_ops(list(c.input.train_ops)), build_ops(list(c.input.eval_ops))
    for dx in (-1, 1):
        want = np.zeros((8, 8), np.int64)
        if dx < 0:
            want[:, :-1] = levels[:, 1:]               # left one column
        else:
            want[:, 1:] = levels[:, :-1]               # right one column
        tokens = apply_ops({"image": image}, train_ops, Offsets(dx))["tokens"]
        np.testing.assert_array_equal(tokens, np.concatenate([[17], want.ravel()]))
    np.testing.assert_array_equal(apply_ops({"image": image}, eval_ops, None)["tokens"],
                                  np.concatenate([[17], levels.ravel()]))
    # Both axes (down 2, left 1), and a shift past the edge leaves only background.
    img = np.arange(1, 13, dtype=np.uint8).reshape(3, 4)
    np.testing.assert_array_equal(translate(img, 2, -1), [[0, 0, 0, 0], [0, 0, 0, 0], [2, 3, 4, 0]])
    np.testing.assert_array_equal(translate(img, 0, 4, fill=7), np.full((3, 4), 7))
    with pytest.raises(ValueError, match=r"^random_translate: max_dy=-1 and max_dx=1 must be >= 0$"):
        build_ops([dict(op="random_translate", max_dy=-1, max_dx=1)])


def test_model_and_batch_mismatches_are_one_clear_line(lm):
    model, _, _ = lm
    with pytest.raises(ValueError) as e:
        objective(vocab_size=300).check_model(model)
    assert str(e.value) == ("the data's vocabulary has 300 tokens (objective.vocab_size) but model.vocab_size=10: "
                            "set --config.model.vocab_size=300")
    with pytest.raises(ValueError) as e:
        objective().check_batch(model, {"tokens": np.zeros((2, 65), np.int32)})
    assert str(e.value) == ("the data give 'tokens' of shape (65,) per example but objective.seq_len=25: set "
                            "--config.objective.seq_len=65 (and the model's max_len to it minus 1)")


def test_perceiver_ar_cached_decoding_equals_the_uncached_model(par):
    model, params, tokens = par
    last = jax.jit(lambda t: model.apply({"params": params}, t)[:, -1])    # uncached: the whole prefix
    prefill = jax.jit(lambda *a: model.apply({"params": params}, *a, method="prefill"))
    step = jax.jit(lambda *a: model.apply({"params": params}, *a, method="decode_step"))
    lengths = jnp.array([9, 11])
    logits, cache = prefill(tokens[:, :11], lengths, model.init_cache(2, T))
    errs = [jnp.abs(logits[b] - last(tokens[:, :int(lengths[b])])[b]).max() for b in range(2)]
    pos = lengths
    for _ in range(3):
        logits, cache = step(tokens[jnp.arange(2), pos], pos, cache)
        errs += [jnp.abs(logits[b] - last(tokens[:, :int(pos[b]) + 1])[b]).max() for b in range(2)]
        pos = pos + 1
    assert max(float(e) for e in errs) <= 1e-5
    # generate (greedy, cached) equals greedy decoding by re-running the whole prefix.
    out = generate(model, params, tokens[:, :10], max_new_tokens=3)
    seq = tokens[:, :10]
    for _ in range(3):
        seq = jnp.concatenate([seq, jnp.argmax(last(seq), axis=-1)[:, None].astype(seq.dtype)], axis=1)
    np.testing.assert_array_equal(out.tokens, seq[:, 10:])
    with pytest.raises(ValueError, match=r"cache of length 30 is longer than the model's max_len=24"):
        model.init_cache(1, 30)


def test_igpt_config_trains_and_probes_end_to_end(tmp_path):
    from vitjax.training.trainer import Trainer

    c = shrink_config("igpt_digits.py", {
        "model.width": 16, "model.depth": 2, "model.num_heads": 2, "model.mlp_dim": 32, "input.batch_size": 16,
        "input.eval_batch_size": 120, "train.total_steps": 2, "train.eval_every_steps": 2,
        "train.checkpoint_every_steps": 2, "train.log_every_steps": 1, "optim.warmup_steps": 0,
        "train.tensorboard": False, "objective.linear_epochs": 2, "objective.probe_layers": "[1, 2]",
        "input.eval_data.split": "test",
    }, {})
    summary = Trainer(c, str(tmp_path / "igpt")).train()
    final = summary.final_metrics
    assert 3.5 < final["eval/bits_per_pixel"] < 4.3          # ~log2(17) = 4.09 bits before training
    assert 0.0 <= final["eval/linear_top1"] <= 1.0
