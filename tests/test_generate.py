"""Cached generation (``vitjax.generation``): greedy decoding equals HF ``generate(do_sample=False)``
token for token (GPT-2 and Llama, batched prompts of different lengths, compared row by row); stop
tokens, sampling filters against HF's warpers, the decoder protocol on its own, prefix embeddings;
DP / FSDP / FSDP x TP give one device's loss and tokens; and the bad-input messages."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import vitjax
from vitjax import param_tree
from vitjax import sharding as sh
from vitjax.generation import check_vocab, filter_logits, generate
from vitjax.interop import lm as ilm
from vitjax.models.registry import model_param_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("fast_compiles")
V, L, NEW = 97, 64, 32
LENGTHS = np.array([9, 4, 6])


def random_params(model, seed=0):
    """Params in the model's shapes filled on the host (no init compile)."""
    rng = np.random.RandomState(seed)
    shapes = param_tree.flatten(model_param_shapes(model))
    return param_tree.unflatten({k: (float(k.endswith("scale")) + 0.05 * rng.standard_normal(s.shape))
                                 .astype(np.float32) for k, s in shapes.items()})


def _pair(name):
    torch.manual_seed(1)
    T = transformers
    if name == "gpt2":
        net = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=L, vocab_size=V,
                                             bos_token_id=None, eos_token_id=None))
        model = vitjax.create_model("gpt2_tiny", vocab_size=V, max_len=L)
    else:
        net = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, intermediate_size=172, vocab_size=V,
                                               max_position_embeddings=L, bos_token_id=None, eos_token_id=None,
                                               pad_token_id=None))
        model = vitjax.create_model("llama_tiny", vocab_size=V, max_len=L)
    with torch.no_grad():   # larger weights than the init: sharper logits, so greedy choices are not near-ties
        for p in net.parameters():
            p.mul_(3.0)
    net.eval()
    return net, model, ilm.from_hf(net.state_dict(), model)


@pytest.fixture(scope="module")
def pairs():
    return {name: _pair(name) for name in ("gpt2", "llama")}


def _prompts():
    return np.random.RandomState(0).randint(0, V, (len(LENGTHS), LENGTHS.max())).astype(np.int32)


@pytest.mark.parametrize("name", ("gpt2", "llama"))
def test_greedy_generate_equals_hf_row_by_row(pairs, name):
    net, model, params = pairs[name]
    prompts = _prompts()
    out = generate(model, params, prompts, LENGTHS, max_new_tokens=NEW)
    assert out.tokens.shape == (3, NEW) and out.tokens.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(out.lengths), [NEW] * 3)
    for b, n in enumerate(LENGTHS):
        with torch.no_grad():
            ref = net.generate(torch.tensor(prompts[b:b + 1, :n]), attention_mask=torch.ones(1, n, dtype=torch.long),
                               max_new_tokens=NEW, do_sample=False)[0, n:].numpy()
        np.testing.assert_array_equal(np.asarray(out.tokens[b]), ref, err_msg=f"row {b} (prompt length {n})")


def test_stop_tokens_pad_the_rest_and_prefix_embeddings_generate_the_same(pairs):
    _, model, params = pairs["gpt2"]
    prompts = _prompts()
    free = np.asarray(generate(model, params, prompts, LENGTHS, max_new_tokens=NEW).tokens)
    stop = int(free[0, 3])                                 # row 0 stops at its 4th token (or earlier)
    out = generate(model, params, prompts, LENGTHS, max_new_tokens=NEW, stop_tokens=(stop,), pad_id=-1)
    toks = np.asarray(out.tokens)
    for b in range(3):
        hits = np.flatnonzero(free[b] == stop)
        n = hits[0] + 1 if hits.size else NEW
        assert int(out.lengths[b]) == n and bool(out.finished[b]) == bool(hits.size)
        np.testing.assert_array_equal(toks[b, :n], free[b, :n])
        assert (toks[b, n:] == -1).all()
    assert int(out.lengths[0]) <= 4
    # The same prompts given as input embeddings (prefix-embedding decoders) give the same tokens.
    table = np.asarray(params["embed"]["embedding"])
    emb = generate(model, params, table[prompts], LENGTHS, max_new_tokens=NEW)
    np.testing.assert_array_equal(np.asarray(emb.tokens), free)


def test_filters_keep_the_tokens_hf_warpers_keep():
    logits = np.random.RandomState(0).standard_normal((4, 50)).astype(np.float32) * 3
    T = transformers
    for top_k, top_p in ((5, 1.0), (0, 0.9), (0, 0.3), (10, 0.8)):
        ref = torch.tensor(logits)
        if top_k:
            ref = T.TopKLogitsWarper(top_k)(None, ref)
        if top_p < 1:
            ref = T.TopPLogitsWarper(top_p)(None, ref)
        ours = np.asarray(filter_logits(jnp.asarray(logits), top_k, top_p))
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(ref.numpy()), err_msg=f"{top_k=} {top_p=}")


def test_sampling_is_seeded_and_top_k_1_is_greedy(pairs):
    _, model, params = pairs["llama"]
    prompts = _prompts()
    run = functools.partial(generate, model, params, prompts, LENGTHS, max_new_tokens=NEW)
    greedy = np.asarray(run().tokens)
    np.testing.assert_array_equal(np.asarray(run(temperature=5.0, top_k=1, rng=jax.random.key(3)).tokens), greedy)
    a = np.asarray(run(temperature=2.0, rng=jax.random.key(1)).tokens)
    np.testing.assert_array_equal(np.asarray(run(temperature=2.0, rng=jax.random.key(1)).tokens), a)
    assert (np.asarray(run(temperature=2.0, rng=jax.random.key(2)).tokens) != a).mean() > 0.5


def test_logprobs_are_the_models_likelihood_and_best_of_keeps_the_likeliest(pairs):
    _, model, params = pairs["gpt2"]
    prompts = _prompts()
    out = generate(model, params, prompts, LENGTHS, max_new_tokens=12, temperature=1.5, rng=jax.random.key(4),
                   stop_tokens=(5, 7), pad_id=-1)
    for b, n in enumerate(LENGTHS):     # teacher-forced log-likelihood of prompt + continuation
        m = int(out.lengths[b])
        seq = np.concatenate([prompts[b, :n], np.asarray(out.tokens[b, :m])])[None]
        logp = jax.nn.log_softmax(model.apply({"params": params}, seq)[0, n - 1:-1].astype(jnp.float32), -1)
        ref = float(jnp.take_along_axis(logp, seq[0, n:, None], -1).sum())
        np.testing.assert_allclose(float(out.logprobs[b]), ref, rtol=1e-4, atol=1e-4, err_msg=f"row {b}")
    # best_of=4 samples rows b*4..b*4+3 with the same key and keeps the highest logprob per token.
    cands = generate(model, params, np.repeat(prompts, 4, 0), np.repeat(LENGTHS, 4), max_new_tokens=12,
                     temperature=1.5, rng=jax.random.key(4))
    best = generate(model, params, prompts, LENGTHS, max_new_tokens=12, temperature=1.5, rng=jax.random.key(4),
                    best_of=4)
    per_token = np.asarray(cands.logprobs).reshape(3, 4) / 12
    assert len(set(map(tuple, np.asarray(cands.tokens)))) == 12          # the candidates differ
    pick = np.arange(3) * 4 + per_token.argmax(1)
    np.testing.assert_array_equal(np.asarray(best.tokens), np.asarray(cands.tokens)[pick])
    np.testing.assert_allclose(np.asarray(best.logprobs), per_token.max(1) * 12, rtol=1e-6)
    with pytest.raises(ValueError, match="best_of=4 must be >= 1, and > 1 only when sampling"):
        generate(model, params, prompts, LENGTHS, max_new_tokens=4, best_of=4)


def test_consensus_keeps_the_candidate_nearest_the_others():
    from vitjax.generation import Generated, pick_best
    cands = np.array([[1, 1, 1], [1, 1, 2], [1, 2, 2], [9, 9, 9]] * 2, np.int32)
    out = Generated(jnp.asarray(cands), jnp.full((8,), 3), jnp.zeros((8,), bool), jnp.arange(8.0))
    # Positions that differ: 6, 5, 6, 9 -> candidate 1; by value (token t worth t), squared: 195, 179, 165, ...
    np.testing.assert_array_equal(np.asarray(pick_best(out, 4, "consensus").tokens), cands[[1, 5]])
    np.testing.assert_array_equal(np.asarray(pick_best(out, 4, "consensus", np.arange(10)).tokens), cands[[2, 6]])
    np.testing.assert_array_equal(np.asarray(pick_best(out, 4).tokens), cands[[3, 7]])      # likeliest
    with pytest.raises(ValueError, match="select='mode': choose 'likelihood' or 'consensus'"):
        pick_best(out, 4, "mode")


class _CountingDecoder:
    """A decoder with no network: it predicts (previous token + position) mod 10, so the protocol's
    per-row positions are visible in the output."""

    def init_cache(self, batch_size, length):
        return {"last": jnp.zeros((batch_size,), jnp.int32)}

    def _logits(self, token, position):
        return jax.nn.one_hot((token + position) % 10, 10) * 10.0

    def prefill(self, params, inputs, lengths, cache):
        last = jnp.take_along_axis(inputs, (lengths - 1)[:, None], axis=1)[:, 0]
        return self._logits(last, lengths - 1), {"last": last}

    def decode_step(self, params, tokens, positions, cache):
        return self._logits(tokens, positions), {"last": tokens}

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _CountingDecoder)


def test_generate_needs_only_the_protocol():
    prompts = np.array([[3, 1, 0], [5, 0, 0]], np.int32)
    out = generate(_CountingDecoder(), None, prompts, [2, 1], max_new_tokens=4, stop_tokens=(9,), pad_id=-1)
    # row 0: last 1 at pos 1 -> 2 (pos 2) -> 4 (pos 3) -> 7 (pos 4) -> 1; row 1: 5 -> 5 -> 6 -> 8 -> 1
    np.testing.assert_array_equal(np.asarray(out.tokens), [[2, 4, 7, 1], [5, 6, 8, 1]])


def test_bad_input_messages(pairs):
    _, model, params = pairs["gpt2"]
    prompts = _prompts()
    run = functools.partial(generate, model, params, prompts, LENGTHS, max_new_tokens=4)
    with pytest.raises(ValueError, match="the prompt has 9 tokens but the KV cache holds 8 positions"):
        run(cache_len=8)
    with pytest.raises(ValueError, match="a KV cache of length 72 is longer than the model's max_len=64"):
        generate(model, params, prompts, LENGTHS, max_new_tokens=64)
    for kw, msg in ((dict(top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"), (dict(top_p=1.5), "top_p=1.5"),
                    (dict(top_k=-1), "top_k=-1 must be a whole number >= 0"),
                    (dict(temperature=-0.5), "temperature=-0.5 must be >= 0")):
        with pytest.raises(ValueError, match=msg):
            run(**kw)
    with pytest.raises(ValueError, match="the tokenizer has 259 tokens but the model's vocabulary has 97"):
        check_vocab(259, 97)


def test_sharded_loss_and_generation_equal_one_device():
    """Llama-shaped (GQA) decoder, fp32: the mean next-token cross-entropy on DP, FSDP and FSDP x TP
    meshes of 8 simulated devices equals one device's (<= 1e-5 relative), and greedy generation on
    the DP and FSDP x TP meshes gives the same tokens."""
    model = vitjax.create_model("llama_tiny", vocab_size=128, max_len=L, width=64, num_heads=4, num_kv_heads=2)
    tokens = np.random.RandomState(0).randint(0, 128, (8, 24)).astype(np.int32)
    boxed = param_tree.abstract_variables(model, tokens)["params"]          # shapes with logical axes
    params = jax.tree.map(lambda a: a * 20.0, random_params(model))          # sharper logits: no near-ties

    def loss(p, x):
        logits = model.apply({"params": p}, x[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), x[:, 1:]).mean()

    prompts, lengths = tokens[:, :10], np.array([10, 3, 7, 5, 10, 2, 8, 6])
    ref_loss = float(jax.jit(loss)(params, tokens))
    ref_tokens = np.asarray(generate(model, params, prompts, lengths, max_new_tokens=12).tokens)
    rules = sh.DEFAULT_RULES
    for spec in (dict(data=8), dict(data=2, fsdp=4), dict(fsdp=4, tensor=2)):
        mesh = sh.make_mesh(spec)
        shardings = sh.logical_shardings(boxed, mesh, rules)
        sharded = jax.device_put(params, shardings)
        if spec.get("tensor"):      # kv heads, the vocabulary (embedding and head) split over tensor
            assert sharded["block_0"]["key"]["kernel"].sharding.spec[1] == "tensor"
            assert tuple(sharded["embed"]["embedding"].sharding.spec) == ("tensor", "fsdp")
            assert tuple(sharded["head"]["kernel"].sharding.spec) == ("fsdp", "tensor")
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            batch = jax.device_put(tokens, sh.activation_sharding(mesh, rules, ("act_batch", None)))
            got = float(jax.jit(loss)(sharded, batch))
        assert abs(got - ref_loss) <= 1e-5 * abs(ref_loss), (spec, got, ref_loss)
        if spec.get("data") != 2:         # generation on DP and on FSDP x TP (FSDP alone adds nothing new)
            out = generate(model, sharded, prompts, lengths, max_new_tokens=12, mesh=mesh, rules=rules)
            np.testing.assert_array_equal(np.asarray(out.tokens), ref_tokens, err_msg=str(spec))


def _workdir(path, config, seed=0):
    """A workdir holding ``config`` and random weights of its model (no training run)."""
    from types import SimpleNamespace

    from vitjax.config import to_json
    from vitjax.models import build_model
    from vitjax.training.checkpoint import Checkpointer

    model = build_model(config)
    params = random_params(model, seed)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(to_json(config))
    ckpt = Checkpointer(str(path), async_save=False)
    ckpt.save(1, SimpleNamespace(params=params, step=1, opt_state={}, extra={}))
    ckpt.close()
    return model


def test_cli_completes_held_out_digits_and_continues_text(tmp_path, capsys):
    from PIL import Image

    from conftest import shrink_config
    from vitjax.data.pixel_tokens import image_to_tokens
    from vitjax.data.sources import get_source
    from vitjax.generate import main

    cfg = shrink_config("igpt_digits.py", {"model.width": 32, "model.depth": 1, "model.mlp_dim": 64}, {})
    _workdir(tmp_path / "igpt", cfg)
    out = tmp_path / "grid.png"
    assert main(["--workdir", str(tmp_path / "igpt"), "--num_samples", "3", "--prompt_rows", "4",
                 "--best_of", "2", "--select", "consensus", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 9 * 8 - 8, 3 * 9 * 8 - 8)       # 2 rows of 3 8x8 images, 8x upscaled, 1-px gaps
    digits = get_source("digits", "test")
    for i in range(3):                                         # the completions keep the prompt rows
        top = grid[9 * 8:9 * 8 + 32:8, i * 72:i * 72 + 64:8]
        want = np.asarray(cfg.data.palette, np.uint8)[image_to_tokens(digits[i]["image"], cfg.data.palette)]
        np.testing.assert_array_equal(top, want.reshape(8, 8)[:4])

    text = cfg.copy_and_resolve_references()
    text.model = dict(name="lm", vocab_size=259, max_len=32, width=32, depth=1, num_heads=2)
    text.data = dict(tokenizer="bytes")
    _workdir(tmp_path / "text", text)
    assert main(["--workdir", str(tmp_path / "text"), "--prompt", "ab", "--max_new_tokens", "5",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("ab")
    assert main(["--workdir", str(tmp_path / "text"), "--prompt", "ab", "--temperature", "0", "--best_of", "3"]) == 2
    assert "error: best_of=3 must be >= 1, and > 1 only when sampling" in capsys.readouterr().err
    assert main(["--workdir", str(tmp_path / "text"), "--prompt", "ab", "--tokenizer", "clip"]) == 2
    assert ("error: the tokenizer has 49408 tokens but the model's vocabulary has 259"
            in capsys.readouterr().err)
