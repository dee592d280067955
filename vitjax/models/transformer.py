"""Pre-norm transformer pieces shared by every model family (ViT, MAE, CLIP towers, Perceiver...).

All parameters carry logical axis names (see ``vitjax.sharding``); activations are constrained with
``nn.with_logical_constraint`` at block boundaries so XLA's propagation has fixed points to work from.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from vitjax.models.attention import attend
from vitjax.models.scan import scan_stack, stack_name

Dtype = Any

# Logical names of the main activation layouts.
ACT_TOKENS = ("act_batch", "act_len", "act_embed")
ACT_HEADS = ("act_batch", "act_len", "act_heads", "act_kv")
ACT_MLP = ("act_batch", "act_len", "act_mlp")

REMAT_POLICIES: dict[str, Callable | None] = {
    "full": None,  # save nothing inside a block: recompute everything on the backward pass
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "save_attn_mlp_out": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def _p(init, names):
    return nn.with_logical_partitioning(init, names)


def dense_init(scale: str = "xavier"):
    return nn.initializers.xavier_uniform() if scale == "xavier" else nn.initializers.lecun_normal()


def classifier_head(feats, num_classes: int, zero_init: bool, dtype, param_dtype, name: str = "head"):
    """Linear classifier [B, D] -> logits [B, num_classes], zero-initialised by default (starts at
    uniform predictions); called from a parent module's compact method, which owns the parameters."""
    init = nn.initializers.zeros if zero_init else nn.initializers.truncated_normal(0.02)
    y = nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype, kernel_init=_p(init, ("embed", "classes")),
                 bias_init=_p(nn.initializers.zeros, ("classes",)), name=name)(feats)
    return nn.with_logical_constraint(y, ("act_batch", "act_classes"))


class LayerNorm(nn.Module):
    """LayerNorm (statistics in float32) whose scale/bias carry the logical name ``norm``.

    Written out rather than wrapping ``nn.LayerNorm`` so the parameters sit directly at
    ``<name>/scale`` and ``<name>/bias``, the layout the PyTorch exporters map one-to-one.
    """
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", _p(nn.initializers.ones, ("norm",)), (d,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", _p(nn.initializers.zeros, ("norm",)), (d,),
                               self.param_dtype).astype(jnp.float32)
        return y.astype(self.dtype)


class MlpBlock(nn.Module):
    """Two dense layers with GELU between: [B, T, D] -> [B, T, D]."""
    mlp_dim: int
    dropout: float = 0.0
    activation: str = "gelu"          # "gelu" (exact erf, as timm/HF), "gelu_tanh", "quick_gelu"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        d = x.shape[-1]
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                     kernel_init=_p(dense_init(), ("embed", "mlp")),
                     bias_init=_p(nn.initializers.normal(1e-6), ("mlp",)), name="fc1")(x)
        h = nn.with_logical_constraint(h, ACT_MLP)
        h = activation_fn(self.activation)(h)
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        out = nn.Dense(d, dtype=self.dtype, param_dtype=self.param_dtype,
                       kernel_init=_p(dense_init(), ("mlp", "embed")),
                       bias_init=_p(nn.initializers.normal(1e-6), ("embed",)), name="fc2")(h)
        return out


def activation_fn(name: str) -> Callable:
    if name == "gelu":
        return lambda x: nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return lambda x: nn.gelu(x, approximate=True)
    if name == "quick_gelu":   # OpenAI CLIP's x * sigmoid(1.702 x)
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    raise ValueError(f"unknown activation {name!r}; choose gelu, gelu_tanh or quick_gelu")


class Einsum(nn.Module):
    """A dense layer with a multi-dim kernel, e.g. [embed, heads, head_dim], applied by einsum.

    ``nn.DenseGeneral`` reshapes its kernel through a rank-2 form during init, which breaks a rank-3
    logical sharding annotation, hence this. The first ``num_in`` kernel dims contract with the
    input; the bias has the remaining (output) dims. Xavier-uniform over (fan_in, fan_out) as if
    the kernel were flattened to 2-D, as ViT's reference code does.
    """
    equation: str
    shape: tuple[int, ...]
    names: tuple[str, ...]
    num_in: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        n = len(self.shape)
        init = nn.initializers.xavier_uniform(in_axis=tuple(range(self.num_in)),
                                              out_axis=tuple(range(self.num_in, n)))
        kernel = self.param("kernel", _p(init, self.names), self.shape, self.param_dtype)
        y = jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", _p(nn.initializers.zeros, self.names[self.num_in:]),
                               self.shape[self.num_in:], self.param_dtype).astype(self.dtype)
        return y


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections laid out [embed, heads, head_dim].

    Separate projections (rather than one fused qkv matrix) keep the ``heads`` dim explicit, which
    is what lets tensor parallelism split heads with one all-reduce after the output projection.
    ``attention`` / ``attention_options``: the implementation ``vitjax.models.attention.attend``
    runs (``model.attention``, ``model.attention_options``).
    """
    num_heads: int
    dropout: float = 0.0
    qkv_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None

    @nn.compact
    def __call__(self, x, kv=None, *, mask=None, train: bool = False, causal: bool = False):
        """x: [B, T, D] queries; kv: [B, S, D] keys/values (defaults to x); mask: [B, 1|H, T, S] bool."""
        kv = x if kv is None else kv
        d = x.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"width {d} is not divisible by num_heads={self.num_heads}")
        hd = d // self.num_heads

        def proj(name, inp):
            y = Einsum("btd,dhk->bthk", (d, self.num_heads, hd), ("embed", "heads", "kv"), 1,
                       self.qkv_bias, self.dtype, self.param_dtype, name=name)(inp)
            return nn.with_logical_constraint(y, ACT_HEADS)

        q, k, v = proj("query", x), proj("key", kv), proj("value", kv)
        dropout = self.dropout > 0.0 and train
        out = attend(q, k, v, mask=mask, causal=causal, dropout_rate=self.dropout,
                     dropout_rng=self.make_rng("dropout") if dropout else None, deterministic=not dropout,
                     impl=self.attention, options=self.attention_options)
        out = nn.with_logical_constraint(out, ACT_HEADS)
        out = Einsum("bthk,hkd->btd", (self.num_heads, hd, d), ("heads", "kv", "embed"), 2, True,
                     self.dtype, self.param_dtype, name="out")(out)
        return out


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops a residual branch per example while training."""
    rate: float

    @nn.compact
    def __call__(self, x, *, train: bool, rate=None):
        """``rate`` overrides the field (a traced per-layer scalar inside a scanned stack)."""
        rate = self.rate if rate is None else rate
        if not train or (isinstance(rate, (int, float)) and rate == 0.0):
            return x
        keep = 1.0 - rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


class EncoderBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)); x + MLP(LN(x)). [B, T, D] -> [B, T, D]."""
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    layernorm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None, drop_path=None):
        """``drop_path``: this layer's rate when the block runs in a scanned stack (else the field)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.with_logical_constraint(x, ACT_TOKENS)
        y = LayerNorm(self.layernorm_eps, name="norm1", **kw)(x)
        y = Attention(self.num_heads, self.attn_dropout, self.qkv_bias, name="attn",
                      attention=self.attention, attention_options=self.attention_options, **kw)(
            y, mask=mask, train=train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = checkpoint_name(y, "attn_out")
        x = x + DropPath(self.drop_path, name="drop_path1")(y, train=train, rate=drop_path)
        x = nn.with_logical_constraint(x, ACT_TOKENS)
        y = LayerNorm(self.layernorm_eps, name="norm2", **kw)(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.activation, name="mlp", **kw)(y, train=train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = checkpoint_name(y, "mlp_out")
        x = x + DropPath(self.drop_path, name="drop_path2")(y, train=train, rate=drop_path)
        return nn.with_logical_constraint(x, ACT_TOKENS)


def remat_policy(remat: str | bool | None):
    """A config's remat setting -> "none" or the ``jax.checkpoint`` policy (None: save nothing)."""
    if remat in (None, False, "none", ""):
        return "none"
    if remat is True:
        remat = "full"
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose one of "
                         f"{['none'] + sorted(REMAT_POLICIES)}")
    return REMAT_POLICIES[remat]


def remat_block(block_cls: type[nn.Module], remat: str | bool | None) -> type[nn.Module]:
    """Wraps a block class in ``nn.remat`` according to a config policy name ('none' = no remat)."""
    policy = remat_policy(remat)
    if policy == "none":
        return block_cls
    # static_argnums counts `self` as 0: (x=1, train=2).
    return nn.remat(block_cls, policy=policy, static_argnums=(2,))


class Encoder(nn.Module):
    """A stack of ``depth`` EncoderBlocks with linearly increasing drop-path (DeiT's schedule).

    ``scan_layers``: one ``nn.scan`` over the blocks (child ``block0-{depth-1}``, parameters stacked on
    a leading ``layers`` axis; ``vitjax.models.scan``) instead of ``block0`` .. ``block{depth-1}``."""
    depth: int
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    layernorm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: bool = True
    remat: str | bool | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None
    scan_layers: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False, mask=None):
        rates = [self.drop_path * i / max(self.depth - 1, 1) for i in range(self.depth)]
        kw = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout, attn_dropout=self.attn_dropout,
                  layernorm_eps=self.layernorm_eps, activation=self.activation, qkv_bias=self.qkv_bias,
                  dtype=self.dtype, param_dtype=self.param_dtype, attention=self.attention,
                  attention_options=self.attention_options)
        if self.scan_layers and self.depth > 0:
            block = EncoderBlock(**kw, name=stack_name("block", 0, self.depth - 1))
            return scan_stack(block, x, lambda blk, y, layer, m: blk(y, train, m, layer.drop_path), length=self.depth,
                              rates=rates, broadcast=(mask,), remat_policy=remat_policy(self.remat))
        block = remat_block(EncoderBlock, self.remat)
        for i in range(self.depth):
            x = block(**kw, drop_path=rates[i], name=f"block{i}")(x, train, mask)
        return x
