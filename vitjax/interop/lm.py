"""Decoder LMs (``vitjax.models.lm.LM``) <-> Hugging Face ``GPT2LMHeadModel``, ``LlamaForCausalLM`` and
``ImageGPTForCausalImageModeling``.

    state = to_hf(params, model); write_export(out, state, hf_config(model))
    transformers.AutoModelForCausalLM.from_pretrained(out)     # same logits (GPT-2 / Llama layouts)
    params = from_hf(hf_model.state_dict(), model)              # the architecture is told by the key names

Which HF architecture a model exports to follows its options (``hf_architecture``): learned
positions + LayerNorm + tanh GELU + biases = GPT-2 (tied head or not); rotary + RMSNorm + SwiGLU without
biases = Llama; learned positions + RMSNorm + quick_gelu + an untied head over vocab - 1 tokens =
ImageGPT. Any other combination has no HF twin and is a ValueError naming the mismatching options.

Layouts (D width, N heads, K kv heads, hd head dim, M mlp, V vocab; ``block_{i}`` / ``h.{i}`` /
``layers.{i}``):

    vitjax                         GPT-2 / ImageGPT (Conv1D: weight [in, out])   Llama (Linear: [out, in])
    embed/embedding [V, D]         transformer.wte.weight                        model.embed_tokens.weight
    pos_embedding [L, D]           transformer.wpe.weight                        (rotary: none)
    query|key|value kernel [D,*,hd] attn.c_attn.weight [D, 3D] (q;k;v columns)   self_attn.{q,k,v}_proj.weight
    out kernel [N, hd, D]          attn.c_proj.weight [D, D]                     self_attn.o_proj.weight
    fc1 / fc2 kernel               mlp.c_fc / mlp.c_proj .weight                 mlp.gate_proj/up_proj/down_proj
      (swiglu: gate, up, down)
    norm1 / norm2 / final_norm     ln_1 / ln_2 / transformer.ln_f                input_layernorm /
                                                                                 post_attention_layernorm / model.norm
    head/kernel [D, V]             lm_head.weight [V, D] (GPT-2: tied, absent)   lm_head.weight

Registered as ``(LM, "hf")`` (``python -m vitjax.export --format hf``, ``import_weights``).
"""
from __future__ import annotations

import jax
import numpy as np

from vitjax.interop.registry import register_converter
from vitjax.interop.state_dict import export_shapes, f32, flat_params, need, params_tree, unwrap_state_dict
from vitjax.models.lm import LM
from vitjax.param_tree import first_mismatch

ARCHS = ("GPT2LMHeadModel", "LlamaForCausalLM", "ImageGPTForCausalImageModeling")
_GPT2 = dict(positions="learned", norm="layernorm", mlp="gelu", use_bias=True, head_bias=False)
_LLAMA = dict(positions="rotary", norm="rmsnorm", mlp="swiglu", use_bias=False, head_bias=False)
_IGPT = dict(positions="learned", norm="rmsnorm", mlp="quick_gelu", use_bias=True, tie_embeddings=False,
             head_bias=False)


def hf_architecture(model: LM) -> str:
    """The HF class name whose layout ``model``'s options reproduce; ValueError when none does."""
    def misses(want: dict) -> list[str]:
        return [f"{k}={getattr(model, k)!r} (needs {v!r})" for k, v in want.items() if getattr(model, k) != v]

    igpt = misses(_IGPT) + ([] if model.num_logits == model.vocab_size - 1 else
                            [f"head_vocab_size={model.head_vocab_size} (needs vocab_size - 1)"])
    candidates = {"GPT2LMHeadModel": misses(_GPT2) + ([] if model.kv_heads == model.num_heads else
                                                      [f"num_kv_heads={model.num_kv_heads} (needs num_heads)"]),
                  "LlamaForCausalLM": misses(_LLAMA) + ([] if model.num_logits == model.vocab_size else
                                                        [f"head_vocab_size={model.head_vocab_size}"]),
                  "ImageGPTForCausalImageModeling": igpt + ([] if model.kv_heads == model.num_heads else
                                                            [f"num_kv_heads={model.num_kv_heads}"])}
    for arch, missing in candidates.items():
        if not missing:
            if arch != "LlamaForCausalLM" and model.head_dim not in (None, model.width // model.num_heads):
                raise ValueError(f"{arch} has head_dim = width / num_heads; this LM has head_dim={model.head_dim}")
            return arch
    nearest = min(candidates, key=lambda a: len(candidates[a]))
    raise ValueError(f"this LM has no Hugging Face twin; the nearest, {nearest}, differs in: "
                     f"{', '.join(candidates[nearest])}")


# ---------------------------------------------------------------------------------------------- export


def _gpt2_blocks(f: dict, model: LM, out: dict, prefix: str) -> None:
    d, n, hd = model.width, model.num_heads, model.dim_per_head
    for i in range(model.depth):
        b, t = f"block_{i}/", f"{prefix}h.{i}."
        qkv = [need(f, b + f"{x}/kernel").reshape(d, n * hd) for x in ("query", "key", "value")]
        out[t + "attn.c_attn.weight"] = np.concatenate(qkv, axis=1)
        out[t + "attn.c_attn.bias"] = np.concatenate([f[b + f"{x}/bias"].reshape(-1) for x in ("query", "key", "value")])
        out[t + "attn.c_proj.weight"] = f[b + "out/kernel"].reshape(n * hd, d)
        out[t + "attn.c_proj.bias"] = f[b + "out/bias"]
        out[t + "mlp.c_fc.weight"], out[t + "mlp.c_fc.bias"] = f[b + "fc1/kernel"], f[b + "fc1/bias"]
        out[t + "mlp.c_proj.weight"], out[t + "mlp.c_proj.bias"] = f[b + "fc2/kernel"], f[b + "fc2/bias"]
        for src, dst in (("norm1", "ln_1"), ("norm2", "ln_2")):
            out[t + dst + ".weight"] = f[b + src + "/scale"]
            if model.norm == "layernorm":
                out[t + dst + ".bias"] = f[b + src + "/bias"]


def to_hf(params, model: LM) -> dict[str, np.ndarray]:
    """vitjax LM params -> the state dict of ``hf_architecture(model)`` (float32 numpy)."""
    arch = hf_architecture(model)
    f = flat_params(params)
    out: dict[str, np.ndarray] = {}
    d = model.width
    if arch == "LlamaForCausalLM":
        n, k, hd = model.num_heads, model.kv_heads, model.dim_per_head
        out["model.embed_tokens.weight"] = need(f, "embed/embedding")
        for i in range(model.depth):
            b, t = f"block_{i}/", f"model.layers.{i}."
            out[t + "self_attn.q_proj.weight"] = need(f, b + "query/kernel").reshape(d, n * hd).T
            out[t + "self_attn.k_proj.weight"] = f[b + "key/kernel"].reshape(d, k * hd).T
            out[t + "self_attn.v_proj.weight"] = f[b + "value/kernel"].reshape(d, k * hd).T
            out[t + "self_attn.o_proj.weight"] = f[b + "out/kernel"].reshape(n * hd, d).T
            for src, dst in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                out[t + f"mlp.{dst}.weight"] = f[b + src + "/kernel"].T
            out[t + "input_layernorm.weight"] = f[b + "norm1/scale"]
            out[t + "post_attention_layernorm.weight"] = f[b + "norm2/scale"]
        out["model.norm.weight"] = f["final_norm/scale"]
        out["lm_head.weight"] = (f["embed/embedding"] if model.tie_embeddings else need(f, "head/kernel").T)
    else:
        out["transformer.wte.weight"] = need(f, "embed/embedding")
        out["transformer.wpe.weight"] = need(f, "pos_embedding")
        _gpt2_blocks(f, model, out, "transformer.")
        out["transformer.ln_f.weight"] = f["final_norm/scale"]
        if model.norm == "layernorm":
            out["transformer.ln_f.bias"] = f["final_norm/bias"]
        if not model.tie_embeddings:            # GPT-2's lm_head is the tied wte: HF re-ties it on load
            out["lm_head.weight"] = need(f, "head/kernel").T
    return {k: f32(v) for k, v in out.items()}


def hf_config(model: LM) -> dict:
    """config.json of ``to_hf``'s weights (GPT2Config / LlamaConfig / ImageGPTConfig fields)."""
    arch = hf_architecture(model)
    mlp = model.mlp_dim or 4 * model.width
    if arch == "LlamaForCausalLM":
        return dict(architectures=[arch], model_type="llama", vocab_size=model.vocab_size, hidden_size=model.width,
                    intermediate_size=mlp, num_hidden_layers=model.depth, num_attention_heads=model.num_heads,
                    num_key_value_heads=model.kv_heads, head_dim=model.dim_per_head, hidden_act="silu",
                    max_position_embeddings=model.max_len, rms_norm_eps=model.norm_eps,
                    rope_parameters={"rope_type": "default", "rope_theta": float(model.rope_theta)},
                    attention_bias=False, mlp_bias=False, tie_word_embeddings=bool(model.tie_embeddings),
                    bos_token_id=None, eos_token_id=None, pad_token_id=None)
    common = dict(vocab_size=model.vocab_size, n_positions=model.max_len, n_embd=model.width, n_layer=model.depth,
                  n_head=model.num_heads, n_inner=mlp, layer_norm_epsilon=model.norm_eps, resid_pdrop=0.0,
                  embd_pdrop=0.0, attn_pdrop=0.0, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                  reorder_and_upcast_attn=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if arch == "GPT2LMHeadModel":
        return dict(architectures=[arch], model_type="gpt2", activation_function="gelu_new",
                    tie_word_embeddings=bool(model.tie_embeddings), **common)
    return dict(architectures=[arch], model_type="imagegpt", activation_function="quick_gelu",
                tie_word_embeddings=False, **common)


# ---------------------------------------------------------------------------------------------- import


def detect_architecture(state_dict) -> str:
    """The HF class a causal-LM state dict belongs to, from its key names (ValueError if none)."""
    keys = set(unwrap_state_dict(state_dict))
    if "model.embed_tokens.weight" in keys:
        return "LlamaForCausalLM"
    if "transformer.wte.weight" in keys:
        # ImageGPT's norms have no bias; GPT-2's LayerNorm has one.
        return "GPT2LMHeadModel" if "transformer.ln_f.bias" in keys else "ImageGPTForCausalImageModeling"
    raise ValueError(f"not a GPT2LMHeadModel, LlamaForCausalLM or ImageGPTForCausalImageModeling state dict: "
                     f"neither 'transformer.wte.weight' nor 'model.embed_tokens.weight' among its keys "
                     f"(first keys: {sorted(keys)[:5]})")


def _check_shapes(sd: dict, model: LM, arch: str) -> None:
    """ValueError naming the first tensor whose presence or shape differs from what ``model`` exports."""
    expected = {k: jax.ShapeDtypeStruct(s, np.float32) for k, s in export_shapes(to_hf, model).items()}
    got = {k: jax.ShapeDtypeStruct(v.shape, np.float32) for k, v in sd.items()}
    if arch == "GPT2LMHeadModel" and model.tie_embeddings:
        got.pop("lm_head.weight", None)     # the tied copy of wte
    problem = first_mismatch(expected, got)
    if problem:
        raise ValueError(f"this {arch} checkpoint does not fit the model (width={model.width}, depth={model.depth}, "
                         f"num_heads={model.num_heads}, vocab_size={model.vocab_size}, max_len={model.max_len}): "
                         f"{problem}")


def from_hf(state_dict, model: LM) -> dict:
    """A ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` / ``ImageGPTForCausalImageModeling`` state dict ->
    vitjax params of ``model`` (numpy tree). The architecture must be ``model``'s own
    (``hf_architecture``); a tensor of another shape is a ValueError naming it and both shapes."""
    sd = {k: v for k, v in unwrap_state_dict(state_dict).items() if not k.endswith(".attn.bias")
          and not k.endswith(".attn.masked_bias")}
    arch, want = detect_architecture(sd), hf_architecture(model)
    if arch != want:
        raise ValueError(f"the checkpoint is a {arch} but this LM's options make it a {want}; build the model "
                         f"with the checkpoint's layout")
    _check_shapes(sd, model, arch)
    d, n, k, hd = model.width, model.num_heads, model.kv_heads, model.dim_per_head
    f: dict[str, np.ndarray] = {}
    if arch == "LlamaForCausalLM":
        f["embed/embedding"] = sd["model.embed_tokens.weight"]
        for i in range(model.depth):
            b, t = f"block_{i}/", f"model.layers.{i}."
            f[b + "query/kernel"] = sd[t + "self_attn.q_proj.weight"].T.reshape(d, n, hd)
            f[b + "key/kernel"] = sd[t + "self_attn.k_proj.weight"].T.reshape(d, k, hd)
            f[b + "value/kernel"] = sd[t + "self_attn.v_proj.weight"].T.reshape(d, k, hd)
            f[b + "out/kernel"] = sd[t + "self_attn.o_proj.weight"].T.reshape(n, hd, d)
            for dst, src in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                f[b + dst + "/kernel"] = sd[t + f"mlp.{src}.weight"].T
            f[b + "norm1/scale"] = sd[t + "input_layernorm.weight"]
            f[b + "norm2/scale"] = sd[t + "post_attention_layernorm.weight"]
        f["final_norm/scale"] = sd["model.norm.weight"]
        if not model.tie_embeddings:
            f["head/kernel"] = sd["lm_head.weight"].T
    else:
        f["embed/embedding"], f["pos_embedding"] = sd["transformer.wte.weight"], sd["transformer.wpe.weight"]
        for i in range(model.depth):
            b, t = f"block_{i}/", f"transformer.h.{i}."
            w, bias = sd[t + "attn.c_attn.weight"], sd[t + "attn.c_attn.bias"]
            for j, x in enumerate(("query", "key", "value")):
                f[b + f"{x}/kernel"] = w[:, j * d:(j + 1) * d].reshape(d, n, hd)
                f[b + f"{x}/bias"] = bias[j * d:(j + 1) * d].reshape(n, hd)
            f[b + "out/kernel"] = sd[t + "attn.c_proj.weight"].reshape(n, hd, d)
            f[b + "out/bias"] = sd[t + "attn.c_proj.bias"]
            f[b + "fc1/kernel"], f[b + "fc1/bias"] = sd[t + "mlp.c_fc.weight"], sd[t + "mlp.c_fc.bias"]
            f[b + "fc2/kernel"], f[b + "fc2/bias"] = sd[t + "mlp.c_proj.weight"], sd[t + "mlp.c_proj.bias"]
            for dst, src in (("norm1", "ln_1"), ("norm2", "ln_2")):
                f[b + dst + "/scale"] = sd[t + src + ".weight"]
                if model.norm == "layernorm":
                    f[b + dst + "/bias"] = sd[t + src + ".bias"]
        f["final_norm/scale"] = sd["transformer.ln_f.weight"]
        if model.norm == "layernorm":
            f["final_norm/bias"] = sd["transformer.ln_f.bias"]
        if not model.tie_embeddings:
            f["head/kernel"] = sd["lm_head.weight"].T
    return params_tree(f, model)


register_converter(LM, "hf", kind="hf_lm", export=to_hf, config=hf_config, load=from_hf, drop_head=False)

__all__ = ["ARCHS", "hf_architecture", "to_hf", "hf_config", "detect_architecture", "from_hf"]
