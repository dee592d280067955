"""The decoder LM family against Hugging Face (fp32, random weights, tiny shapes): GPT-2, Llama with
grouped-query attention and ImageGPT logits both ways <= 1e-4, hidden states per layer, the KV-cache
path against the full forward, and the errors a user can cause."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vitjax
from vitjax import param_tree
from vitjax.interop import lm as ilm
from vitjax.interop.registry import exporter, import_weights
from vitjax.interop.state_dict import write_export
from vitjax.models.registry import model_param_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V, L = 97, 64
pytestmark = pytest.mark.usefixtures("fast_compiles")


def random_params(model, seed=0):
    """Params in the model's shapes filled on the host (no init compile): norm scales near 1, the
    rest small normal values."""
    rng = np.random.RandomState(seed)
    shapes = param_tree.flatten(model_param_shapes(model))
    return param_tree.unflatten({k: (float(k.endswith("scale")) + 0.05 * rng.standard_normal(s.shape))
                                        .astype(np.float32) for k, s in shapes.items()})


def _hf(name):
    torch.manual_seed(0)
    T = transformers
    if name == "gpt2":
        net = T.GPT2LMHeadModel(T.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=L, vocab_size=V,
                                             bos_token_id=None, eos_token_id=None))
    elif name == "llama":
        net = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, intermediate_size=172, vocab_size=V,
                                               max_position_embeddings=L, rope_parameters={"rope_type": "default",
                                                                                          "rope_theta": 500.0},
                                               bos_token_id=None, eos_token_id=None, pad_token_id=None))
    else:
        net = T.ImageGPTForCausalImageModeling(T.ImageGPTConfig(n_embd=64, n_layer=2, n_head=4, n_positions=L,
                                                                vocab_size=17))
    with torch.no_grad():                       # move norms and biases off their 1/0 initial values
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net.eval()


def _model(name):
    if name == "gpt2":
        return vitjax.create_model("gpt2_tiny", vocab_size=V, max_len=L)
    if name == "llama":
        return vitjax.create_model("llama_tiny", vocab_size=V, max_len=L, rope_theta=500.0)
    return vitjax.create_model("igpt_tiny", max_len=L)


FAMILIES = ("gpt2", "llama", "igpt")


@pytest.fixture(scope="module")
def pairs():
    return {name: (_hf(name), _model(name)) for name in FAMILIES}


def _tokens(name, b=2, t=20, seed=0):
    return np.random.RandomState(seed).randint(0, 16 if name == "igpt" else V, (b, t))


def _hf_logits(net, tokens):
    with torch.no_grad():
        return net(torch.tensor(tokens)).logits.numpy()


@pytest.mark.parametrize("name", FAMILIES)
def test_hf_to_vitjax_logits(pairs, name):
    net, model = pairs[name]
    params = ilm.from_hf(net.state_dict(), model)
    x = _tokens(name)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(x)))
    ref = _hf_logits(net, x)
    assert ours.shape == ref.shape == (2, 20, 16 if name == "igpt" else V)
    assert np.abs(ours - ref).max() <= 1e-4


@pytest.mark.parametrize("name", FAMILIES)
def test_vitjax_to_hf_logits(pairs, name, tmp_path):
    """Random vitjax weights -> the registered export (state dict + config.json) -> from_pretrained."""
    _, model = pairs[name]
    x = _tokens(name, seed=1)
    params = random_params(model, seed=3)
    export = exporter(model, "hf")
    write_export(tmp_path, export.state_dict(params), export.config())
    arch = json.loads((tmp_path / "config.json").read_text())["architectures"][0]
    assert arch == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM",
                    "igpt": "ImageGPTForCausalImageModeling"}[name]
    net = getattr(transformers, arch).from_pretrained(str(tmp_path)).eval()
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(x)))
    assert np.abs(ours - _hf_logits(net, x)).max() <= 1e-4
    # ... and back through import_weights (the registered loader) to the same tree.
    back = import_weights(tmp_path, model)
    assert param_tree.first_mismatch(params, back) is None
    np.testing.assert_array_equal(back["block_1"]["key"]["kernel"], params["block_1"]["key"]["kernel"])


@pytest.mark.parametrize("name", ("gpt2", "llama"))
def test_hidden_states_after_each_layer_match_hf(pairs, name):
    """``return_layer=k`` is HF's ``hidden_states[k]`` (after k blocks, before the final norm)."""
    net, model = pairs[name]
    params = ilm.from_hf(net.state_dict(), model)
    x = _tokens(name, t=9)
    with torch.no_grad():
        ref = net(torch.tensor(x), output_hidden_states=True).hidden_states
    for k in (0, 1):
        ours = np.asarray(jax.jit(functools.partial(model.apply, return_layer=k))({"params": params}, x))
        assert ours.shape == (2, 9, 64)
        assert np.abs(ours - ref[k].numpy()).max() <= 1e-4


def test_cached_prefill_and_decode_equal_full_forward(pairs):
    """Right-padded prompts of lengths 9 and 5: prefill logits at each row's last token, then one
    decode step per row at its own position, equal the full forward of the unpadded sequences."""
    net, model = pairs["llama"]
    params = ilm.from_hf(net.state_dict(), model)
    x = _tokens("llama", t=9)
    lengths = np.array([9, 5])
    cache = model.init_cache(2, 12)
    assert cache["k"].shape == (2, 2, 12, 2, 16)            # [depth, B, S, kv_heads, head_dim]
    logits, cache = jax.jit(functools.partial(model.apply, method="prefill"))({"params": params}, x, lengths, cache)
    nxt = np.array([7, 11])
    step, _ = jax.jit(functools.partial(model.apply, method="decode_step"))({"params": params}, nxt, lengths, cache)
    for b in range(2):
        seq = np.concatenate([x[b, :lengths[b]], nxt[b:b + 1]])[None]
        full = np.asarray(jax.jit(model.apply)({"params": params}, seq))[0]
        assert np.abs(np.asarray(logits[b]) - full[-2]).max() <= 1e-5
        assert np.abs(np.asarray(step[b]) - full[-1]).max() <= 1e-5


def test_bf16_compute_keeps_fp32_params_and_is_close():
    model = vitjax.create_model("llama_tiny", dtype="bfloat16")
    x = _tokens("llama", t=8)
    params = random_params(model)
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    lo = jax.jit(model.apply)({"params": params}, x)
    hi = jax.jit(model.clone(dtype=jnp.float32).apply)({"params": params}, x)
    assert lo.dtype == jnp.bfloat16
    assert float(jnp.abs(lo.astype(jnp.float32) - hi).max()) < 0.1


def test_gpt2_small_has_124m_parameters():
    model = vitjax.create_model("gpt2_small")
    n = sum(int(np.prod(s)) for s in ilm.export_shapes(ilm.to_hf, model).values())
    assert n == 124_439_808                                  # HF GPT2LMHeadModel("gpt2"), lm_head tied


def test_import_of_another_shape_names_the_first_tensor(pairs):
    net, _ = pairs["gpt2"]
    with pytest.raises(ValueError, match=r"parameter 'transformer.h.0.attn.c_attn.bias' has shape \(192,\) in "
                                         r"the checkpoint but \(288,\) in the model"):
        ilm.from_hf(net.state_dict(), vitjax.create_model("gpt2_tiny", vocab_size=V, max_len=L, width=96))
    with pytest.raises(ValueError, match="the checkpoint is a LlamaForCausalLM but this LM's options make it a "
                                         "GPT2LMHeadModel"):
        ilm.from_hf(pairs["llama"][0].state_dict(), _model("gpt2"))


def test_bad_options_are_one_clear_error():
    with pytest.raises(ValueError, match=r"lm norm='batchnorm'; choose one of \['layernorm', 'rmsnorm'\]"):
        vitjax.create_model("lm", norm="batchnorm")
    with pytest.raises(ValueError, match="num_heads=4 is not a multiple of num_kv_heads=3"):
        vitjax.create_model("llama_tiny", num_kv_heads=3)
    with pytest.raises(ValueError, match="no Hugging Face twin; the nearest, GPT2LMHeadModel, differs in: "
                                         "positions='rotary'"):
        ilm.hf_architecture(vitjax.create_model("gpt2_tiny", positions="rotary"))
    with pytest.raises(ValueError, match="a KV cache of length 300 is longer than the model's max_len=256"):
        vitjax.create_model("gpt2_tiny").init_cache(1, 300)
