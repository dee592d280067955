"""Decoder-only language models (the ``lm`` family): one pre-norm causal transformer whose options
cover GPT-2, Llama and ImageGPT, with a static-size KV cache for ``vitjax.generation``.

    model = vitjax.create_model("gpt2_small")                       # 124M (Radford et al. 2019)
    model = vitjax.create_model("lm", norm="rmsnorm", positions="rotary", mlp="swiglu", use_bias=False,
                                num_heads=8, num_kv_heads=2, tie_embeddings=False)    # Llama-style, GQA
    logits = model.apply({"params": p}, tokens)                     # tokens [B, T] -> [B, T, V]
    feats = model.apply({"params": p}, tokens, return_layer=4)      # after 4 blocks: [B, T, D]

The three reference layouts (``vitjax.interop.lm`` converts each to and from Hugging Face):

| | GPT-2 | Llama | ImageGPT |
|---|---|---|---|
| norm | LayerNorm, eps 1e-5 | RMSNorm, eps 1e-6 | RMSNorm, eps 1e-5 (``ImageGPTLayerNorm``: no centring, no bias) |
| positions | learned table | rotary, ``rope_theta`` | learned table |
| mlp | gelu (tanh approximation, HF ``gelu_new``) | swiglu (silu gate) | quick_gelu |
| biases | yes | no | yes (projections), none in the norms |
| head | tied to the embedding | separate | separate, ``head_vocab_size = vocab - 1`` (no start-token logit) |

Every parameter carries logical axis names (``vocab``, ``embed``, ``heads``, ``kv_heads``, ``kv``,
``mlp``...) and the activations are constrained at block boundaries, so data, FSDP and tensor
parallelism are the mesh's choice (``vitjax.sharding``), exactly as for the ViT.

The KV cache is a dict of two arrays ``k``, ``v``: [depth, batch, cache_len, kv_heads, head_dim]
(``init_cache``). ``prefill(inputs, lengths, cache)`` runs right-padded prompts (tokens [B, P] or
embeddings [B, P, D]) at positions 0..P-1, writes their keys/values and returns the logits at each
row's last prompt position; ``decode_step(tokens, positions, cache)`` runs one token per row at its
own position against everything cached before it. These two (with ``init_cache``) are the decoder
protocol of ``vitjax.generation``.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from vitjax.models.attention import attend
from vitjax.models.registry import build_module, register_model
from vitjax.models.scan import scan_stack, stack_name
from vitjax.models.transformer import (
    ACT_HEADS, ACT_MLP, ACT_TOKENS, REMAT_POLICIES, Einsum, LayerNorm, _p, remat_policy)

NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rotary")
MLPS = ("gelu", "gelu_exact", "quick_gelu", "swiglu")
ACT_LOGITS = ("act_batch", "act_len", "act_vocab")
# Cache arrays [depth, batch, cache_len, kv_heads, head_dim]: batch on the data axes, heads on tensor.
CACHE_AXES = (None, "act_batch", "act_len", "act_kv_heads", "act_kv")


def attention(q, k, v, *, causal: bool = False, mask=None):
    """q [B, T, N, hd], k/v [B, S, K, hd] with N % K == 0 (query head n reads kv head n // (N/K), HF's
    ``repeat_kv`` order) -> [B, T, N, hd]; ``mask`` [B, 1, T, S] bool (True = may attend).

    The family's one attention call: vitjax's shared entry point (``vitjax.models.attention.attend``,
    "auto": the fastest exact implementation on the platform), grouped heads and masks included."""
    return attend(q, k, v, mask=mask, causal=causal)


def rotary(x, positions, theta: float):
    """Rotary position embedding (Su et al. 2021) in HF Llama's layout: x [B, T, H, hd] rotated by
    ``positions`` [B, T]; pairs are (i, i + hd/2) (``rotate_half``), not adjacent dims."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq             # [B, T, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]           # [B, T, 1, hd]
    x32 = x.astype(jnp.float32)
    half = jnp.concatenate([-x32[..., hd // 2:], x32[..., :hd // 2]], axis=-1)
    return (x32 * jnp.cos(emb) + half * jnp.sin(emb)).astype(x.dtype)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * scale, statistics in float32 (Llama's ``LlamaRMSNorm``; ImageGPT's
    ``ImageGPTLayerNorm`` is the same function)."""
    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", _p(nn.initializers.ones, ("norm",)), (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.epsilon)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


class TokenEmbed(nn.Module):
    """Token table [vocab, width] (``embedding``): ``__call__`` looks tokens up, ``attend`` gives the
    tied logits x @ table.T. The table is gathered whole along ``embed`` before the lookup (as FSDP
    gathers a kernel before its matmul); a gather from an ``embed``-sharded table would leave the
    activations split along width, which XLA can only reshard to the batch split by replicating."""
    vocab_size: int
    width: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param("embedding", _p(nn.initializers.normal(0.02), ("vocab", "embed")),
                                    (self.vocab_size, self.width), self.param_dtype)

    def __call__(self, tokens):
        table = nn.with_logical_constraint(self.embedding, ("vocab", None))
        return jnp.take(table, tokens, axis=0).astype(self.dtype)

    def attend(self, x):
        return jnp.einsum("btd,vd->btv", x, self.embedding.astype(self.dtype))


def _norm(kind: str, eps: float, use_bias: bool, name: str, **kw):
    if kind == "rmsnorm":
        return RMSNorm(eps, name=name, **kw)
    return LayerNorm(eps, use_bias=use_bias, name=name, **kw)


class DecoderBlock(nn.Module):
    """Pre-norm causal block: x + Attn(Norm(x)); x + MLP(Norm(x)). [B, T, D] -> [B, T, D].

    ``mode``: None (training / full forward: causal over the T tokens), "prefill" (the same, and
    the keys/values are written to ``cache`` rows 0..T-1) or "decode" (the T new tokens are written
    at each row's ``positions`` and attend to every cached position <= their own).
    ``cache``: the whole (k, v) cache, [depth, B, S, K, hd] each, of which this block is layer
    ``layer``; returned updated (None without one).
    """
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    mlp: str = "gelu"
    positions: str = "learned"
    rope_theta: float = 10000.0
    use_bias: bool = True
    dropout: float = 0.0
    layer: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, positions, train: bool = False, mode: str | None = None, cache=None, layer=None):
        """``layer``: this block's index in the cache when it runs in a scanned stack (else the field)."""
        layer = self.layer if layer is None else layer
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d, n, kh, hd = x.shape[-1], self.num_heads, self.num_kv_heads, self.head_dim
        x = nn.with_logical_constraint(x, ACT_TOKENS)
        y = _norm(self.norm, self.norm_eps, self.use_bias, "norm1", **kw)(x)

        def proj(name, heads, names):
            return Einsum("btd,dhk->bthk", (d, heads, hd), ("embed", names, "kv"), 1, self.use_bias,
                          name=name, **kw)(y)

        q = nn.with_logical_constraint(proj("query", n, "heads"), ACT_HEADS)
        k, v = proj("key", kh, "kv_heads"), proj("value", kh, "kv_heads")
        if self.positions == "rotary":
            q, k = rotary(q, positions, self.rope_theta), rotary(k, positions, self.rope_theta)
        if mode == "decode":
            # Each row writes its tokens at its own positions, in place in the whole stacked cache
            # (a slice-and-restack per layer would copy the cache every step).
            rows = jnp.arange(x.shape[0])[:, None]
            ck, cv = (c.at[layer, rows, positions].set(new.astype(c.dtype)) for c, new in zip(cache, (k, v)))
            visible = jnp.arange(ck.shape[2])[None, None, :] <= positions[:, :, None]     # [B, T, S]
            out = attention(q, ck[layer].astype(q.dtype), cv[layer].astype(q.dtype), mask=visible[:, None])
            cache = (ck, cv)
        else:
            out = attention(q, k, v, causal=True)
            if mode == "prefill":
                cache = tuple(jax.lax.dynamic_update_slice(c, new[None].astype(c.dtype), (layer, 0, 0, 0, 0))
                              for c, new in zip(cache, (k, v)))
        out = nn.with_logical_constraint(out, ACT_HEADS)
        y = Einsum("bthk,hkd->btd", (n, hd, d), ("heads", "kv", "embed"), 2, self.use_bias, name="out", **kw)(out)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        x = x + checkpoint_name(y, "attn_out")
        x = nn.with_logical_constraint(x, ACT_TOKENS)

        y = _norm(self.norm, self.norm_eps, self.use_bias, "norm2", **kw)(x)
        y = self._mlp(y, d, kw)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        x = x + checkpoint_name(y, "mlp_out")
        return nn.with_logical_constraint(x, ACT_TOKENS), cache

    def _mlp(self, y, d, kw):
        def dense(name, out, names):
            init = _p(nn.initializers.normal(0.02), names)
            return nn.Dense(out, use_bias=self.use_bias, kernel_init=init,
                            bias_init=_p(nn.initializers.zeros, names[1:]), name=name, **kw)

        if self.mlp == "swiglu":
            h = jax.nn.silu(dense("gate", self.mlp_dim, ("embed", "mlp"))(y)) * dense("up", self.mlp_dim,
                                                                                    ("embed", "mlp"))(y)
        else:
            h = dense("fc1", self.mlp_dim, ("embed", "mlp"))(y)
            h = nn.with_logical_constraint(h, ACT_MLP)
            if self.mlp == "gelu":                     # GPT-2's gelu_new: the tanh approximation
                h = nn.gelu(h, approximate=True)
            elif self.mlp == "gelu_exact":
                h = nn.gelu(h, approximate=False)
            else:                                      # quick_gelu: x * sigmoid(1.702 x) (ImageGPT)
                h = h * jax.nn.sigmoid(1.702 * h)
        h = nn.with_logical_constraint(h, ACT_MLP)
        return dense("fc2" if self.mlp != "swiglu" else "down", d, ("mlp", "embed"))(h)


class LM(nn.Module):
    """Pre-norm causal transformer language model over ``vocab_size`` tokens.

    Attributes:
      vocab_size: token embedding rows. head_vocab_size: logits over the first this-many tokens
        (None: all; ImageGPT predicts no start token, so it has vocab_size - 1).
      max_len: longest sequence (the learned position table; the cache limit for ``rotary`` too).
      width, depth, num_heads: D, blocks, query heads. num_kv_heads: key/value heads (None = num_heads;
        fewer = grouped-query attention, 1 = multi-query). head_dim: None = width / num_heads.
      mlp_dim: hidden width of the MLP (None = 4 * width). mlp: "gelu" (tanh, GPT-2), "gelu_exact",
        "quick_gelu" (ImageGPT) or "swiglu" (Llama: down(silu(gate x) * up x)).
      norm: "layernorm" | "rmsnorm"; norm_eps. positions: "learned" | "rotary" (``rope_theta``).
      use_bias: biases in the projections and MLP (and LayerNorm). tie_embeddings: logits use the
        token embedding's transpose (GPT-2); otherwise a ``head`` layer (``head_bias`` adds a bias).
      dropout: on the embeddings and both residual branches (no attention-probability dropout).
      remat: per-block rematerialisation for training ("none", "full", "dots_saveable", ...).
      scan_layers: the blocks as one ``nn.scan`` (``block_0-{depth-1}``, ``vitjax.models.scan``), in
        training and in cached generation (the KV cache travels through the scan as carry).
      dtype: compute dtype (bfloat16 for speed; norms and softmax stay float32); param_dtype.
    """
    vocab_size: int = 50257
    head_vocab_size: int | None = None
    max_len: int = 1024
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    num_kv_heads: int | None = None
    head_dim: int | None = None
    mlp_dim: int | None = None
    mlp: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    positions: str = "learned"
    rope_theta: float = 10000.0
    use_bias: bool = True
    tie_embeddings: bool = True
    head_bias: bool = False
    dropout: float = 0.0
    remat: str | None = None
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        for field, value, valid in (("norm", self.norm, NORMS), ("positions", self.positions, POSITIONS),
                                    ("mlp", self.mlp, MLPS)):
            if value not in valid:
                raise ValueError(f"lm {field}={value!r}; choose one of {list(valid)}")
        if self.head_dim is None and self.width % self.num_heads:
            raise ValueError(f"lm width {self.width} is not divisible by num_heads={self.num_heads}; "
                             f"set head_dim or change num_heads")
        if self.num_heads % self.kv_heads:
            raise ValueError(f"lm num_heads={self.num_heads} is not a multiple of num_kv_heads={self.kv_heads}")
        if self.tie_embeddings and self.head_vocab_size not in (None, self.vocab_size):
            raise ValueError(f"lm tie_embeddings=True needs head_vocab_size == vocab_size ({self.vocab_size}), "
                             f"got {self.head_vocab_size}; set tie_embeddings=False")
        if self.remat not in (None, False, "none", "") and self.remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat policy {self.remat!r}; choose one of {['none'] + sorted(REMAT_POLICIES)}")
        super().__post_init__()

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.width // self.num_heads

    @property
    def num_logits(self) -> int:
        return self.head_vocab_size or self.vocab_size

    def example_inputs(self, batch_size: int = 1) -> tuple:
        """Shapes of ``model.init``'s inputs: a full-length token batch [B, max_len] int32."""
        return (jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.int32),)

    def _block_kwargs(self, kw) -> dict:
        """The options every ``DecoderBlock`` of this model is built with (all but its ``layer``)."""
        return dict(num_heads=self.num_heads, num_kv_heads=self.kv_heads, head_dim=self.dim_per_head,
                    mlp_dim=self.mlp_dim or 4 * self.width, norm=self.norm, norm_eps=self.norm_eps, mlp=self.mlp,
                    positions=self.positions, rope_theta=self.rope_theta, use_bias=self.use_bias,
                    dropout=self.dropout, **kw)

    # ------------------------------------------------------------------------------------- forward
    def __call__(self, inputs, *, train: bool = False, return_layer: int | Sequence[int] | None = None):
        """inputs: tokens [B, T] int, or input embeddings [B, T, D] (prefix embeddings) -> next-token
        logits [B, T, head vocab]. ``return_layer=k`` returns the hidden states after the first k
        blocks instead ([B, T, D], before the final norm; 0 = the embeddings); a list of layers
        returns the list of their hidden states, from one forward pass."""
        positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape[:2])
        out, _ = self._run(inputs, positions, train=train, return_layer=return_layer)
        return out

    def init_cache(self, batch_size: int, length: int) -> dict:
        """Zero KV cache {"k", "v"}: [depth, batch_size, length, kv_heads, head_dim] in the compute
        dtype. ValueError when ``length`` exceeds ``max_len``."""
        if length > self.max_len:
            raise ValueError(f"a KV cache of length {length} is longer than the model's max_len={self.max_len} "
                             f"(prompt + new tokens must fit); shorten the prompt or max_new_tokens")
        shape = (self.depth, batch_size, length, self.kv_heads, self.dim_per_head)
        zeros = jnp.zeros(shape, self.dtype)
        return {"k": nn.with_logical_constraint(zeros, CACHE_AXES),
                "v": nn.with_logical_constraint(zeros, CACHE_AXES)}

    def prefill(self, inputs, lengths, cache):
        """Right-padded prompts (tokens [B, P] or embeddings [B, P, D]; row b's first ``lengths[b]``
        are real) -> (logits at position lengths-1 [B, head vocab] float32, cache holding positions
        0..P-1). Padding sits after each row's prompt, so causality keeps it out of the real logits
        and later decode steps overwrite its cache rows."""
        positions = jnp.broadcast_to(jnp.arange(inputs.shape[1], dtype=jnp.int32), inputs.shape[:2])
        return self._run(inputs, positions, mode="prefill", cache=cache, lengths=lengths)

    def decode_step(self, tokens, positions, cache):
        """tokens [B] at ``positions`` [B] (each row's own) -> (logits [B, head vocab] float32, cache)."""
        return self._run(tokens[:, None], positions[:, None].astype(jnp.int32), mode="decode", cache=cache)

    @nn.compact
    def _run(self, inputs, positions, *, train: bool = False, return_layer=None,
             mode: str | None = None, cache=None, lengths=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        embed = TokenEmbed(self.vocab_size, self.width, name="embed", **kw)
        if jnp.issubdtype(inputs.dtype, jnp.integer):
            x = embed(inputs)
        else:
            x = inputs.astype(self.dtype)
            if self.is_initializing():           # init on embeddings must still create the token table
                embed(jnp.zeros((1, 1), jnp.int32))
        if self.positions == "learned":
            table = self.param("pos_embedding", _p(nn.initializers.normal(0.01), ("posemb_len", "embed")),
                               (self.max_len, self.width), self.param_dtype)
            table = nn.with_logical_constraint(table, ("posemb_len", None))      # gathered whole, as the tokens'
            x = x + jnp.take(table, positions, axis=0).astype(self.dtype)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.with_logical_constraint(x, ACT_TOKENS)

        layers = None if return_layer is None else (
            tuple(int(k) for k in return_layer) if isinstance(return_layer, (list, tuple)) else (int(return_layer),))
        depth = self.depth if layers is None else max(layers, default=0)
        if layers is not None and not all(0 <= k <= self.depth for k in layers):
            raise ValueError(f"return_layer={return_layer} must be between 0 and depth={self.depth}")
        kv = None if cache is None else (cache["k"], cache["v"])
        policy = remat_policy(self.remat) if mode is None else "none"
        hidden = [x]                      # the hidden states after 0, 1, ... blocks (for return_layer)
        if self.scan_layers and depth > 0:
            # all blocks as one scan; the cache, if any, is carried and updated in place per layer
            out = scan_stack(DecoderBlock(**self._block_kwargs(kw), name=stack_name("block_", 0, self.depth - 1)),
                             (x, kv), lambda blk, c, layer, pos: blk(c[0], pos, train, mode, c[1], layer.index),
                             length=self.depth, broadcast=(positions,), remat_policy=policy,
                             collect=layers is not None)
            if layers is None:
                x, kv = out
            else:
                hidden += list(out[1][0])
        else:
            # static_argnums counts `self` as 0: (x=1, positions=2, train=3, mode=4).
            block_cls = DecoderBlock if policy == "none" else nn.remat(DecoderBlock, policy=policy,
                                                                       static_argnums=(3, 4))
            for i in range(depth):
                x, kv = block_cls(**self._block_kwargs(kw), layer=i, name=f"block_{i}")(x, positions, train, mode, kv)
                hidden.append(x)
        if layers is not None:
            return ([hidden[k] for k in layers] if isinstance(return_layer, (list, tuple)) else hidden[layers[0]]), None
        if cache is not None:
            cache = {"k": nn.with_logical_constraint(kv[0], CACHE_AXES),
                     "v": nn.with_logical_constraint(kv[1], CACHE_AXES)}
        x = _norm(self.norm, self.norm_eps, self.use_bias, "final_norm", **kw)(x)
        if mode == "prefill":      # only each row's last prompt position needs logits
            x = jnp.take_along_axis(x, (lengths.astype(jnp.int32) - 1)[:, None, None], axis=1)
        if self.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = nn.Dense(self.num_logits, use_bias=self.head_bias, name="head",
                              kernel_init=_p(nn.initializers.normal(0.02), ("embed", "vocab")),
                              bias_init=_p(nn.initializers.zeros, ("vocab",)), **kw)(x)
        logits = nn.with_logical_constraint(logits, ACT_LOGITS)
        if mode is None:
            return logits, None
        return logits[:, -1].astype(jnp.float32), cache


# ------------------------------------------------------------------------------------------ registry

# GPT-2 sizes: Radford et al. 2019, Table 2 (width 768/1024/1280/1600; 12/24/36/48 layers; 1024
# positions, vocab 50257); heads as released (64-dim heads).
GPT2_SIZES = {"small": dict(width=768, depth=12, num_heads=12), "medium": dict(width=1024, depth=24, num_heads=16),
              "large": dict(width=1280, depth=36, num_heads=20), "xl": dict(width=1600, depth=48, num_heads=25)}
GPT2 = dict(vocab_size=50257, max_len=1024, norm="layernorm", norm_eps=1e-5, positions="learned", mlp="gelu",
            use_bias=True, tie_embeddings=True)
LLAMA = dict(norm="rmsnorm", norm_eps=1e-6, positions="rotary", rope_theta=10000.0, mlp="swiglu", use_bias=False,
             tie_embeddings=False)
# ImageGPT (Chen et al. 2020): RMS-style norm with no bias, quick_gelu, untied head without a start-token logit.
IGPT = dict(norm="rmsnorm", norm_eps=1e-5, positions="learned", mlp="quick_gelu", use_bias=True, tie_embeddings=False)


def _build(defaults: dict, overrides: dict) -> LM:
    kwargs = dict(defaults, **overrides)
    if kwargs.get("remat") in ("none", ""):
        kwargs["remat"] = None
    return build_module(LM, kwargs, "lm")


@register_model("lm")
def lm(**overrides) -> LM:
    """Any decoder LM: ``create_model("lm", width=256, depth=4, num_heads=4, vocab_size=259)``."""
    return _build({}, overrides)


@register_model("gpt2_tiny", doc="GPT-2 layout, width 64, 2 blocks (tests and CPU demos)")
def gpt2_tiny(**overrides) -> LM:
    return _build(dict(GPT2, width=64, depth=2, num_heads=4, max_len=256), overrides)


for _size, _dims in GPT2_SIZES.items():
    register_model(f"gpt2_{_size}", doc=f"GPT-2 {_size} ({_dims['depth']} layers, width {_dims['width']})")(
        lambda _d=_dims, **kw: _build(dict(GPT2, **_d), kw))


@register_model("llama_tiny", doc="Llama layout (RMSNorm, rotary, SwiGLU, GQA 4 -> 2 kv heads), width 64, 2 blocks")
def llama_tiny(**overrides) -> LM:
    return _build(dict(LLAMA, width=64, depth=2, num_heads=4, num_kv_heads=2, mlp_dim=172, vocab_size=259,
                       max_len=256), overrides)


@register_model("igpt_tiny", doc="ImageGPT layout, width 64, 2 blocks, 16 colours + start token")
def igpt_tiny(**overrides) -> LM:
    return _build(dict(IGPT, width=64, depth=2, num_heads=4, vocab_size=17, head_vocab_size=16, max_len=64),
                  overrides)
