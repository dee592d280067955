"""Perceiver (Jaegle et al. 2021) and Perceiver IO (Jaegle et al. 2022) on raw pixels.

An image [B, H, W, C] becomes H*W input elements, each its C pixel values concatenated with a
Fourier encoding of its (row, column) position: d(2K+1) features for d index dims and K bands
(``fourier_features``). A learned latent array [num_latents, latent_dim] cross-attends to the
inputs -- the only place the long axis N = H*W appears, computed by
``vitjax.kernels.latent_cross_attention`` without the [M, N] score matrix -- and a tower of latent
self-attention layers refines it. ``num_blocks`` blocks of (optional cross-attend, then
``num_self_attends_per_block`` self-attends) are applied; the first ``num_cross_attends`` blocks
start with a cross-attend. With ``share_weights`` every block reuses one latent tower and every
cross-attend after the first reuses one set of weights (Perceiver, sec. 2), so the model is an RNN
over its blocks.

Outputs (``decoder``):
  * "pool"  -- Perceiver: average the latents, LayerNorm, linear -> logits [B, num_classes].
  * "query" -- Perceiver IO classification: one learned query cross-attends to the latents, then a
    linear layer -> logits [B, num_classes]. Same layout as HF ``PerceiverForImageClassificationFourier``
    (see ``vitjax.interop.perceiver``).
  * "dense" -- Perceiver IO dense output: one query per input position (its Fourier features)
    cross-attends to the latents -> [B, H, W, num_classes] (e.g. per-pixel logits or flow).

``PerceiverAR`` (Hawthorne et al. 2022) is the autoregressive variant over token sequences: the
last ``num_latents`` positions are the latents, cross-attend causally to the whole sequence, and a
causal latent tower predicts each latent's next token (``next_token_loss``). Its causal cross-attention
uses plain masked attention (the latent kernel takes key-padding masks only).

Layers match HF's ``PerceiverLayer``: x + Attn(LN(x) -> q, LN(inputs) -> k, v), then x + MLP(LN(x)),
with LayerNorm eps 1e-5 and exact GELU. Attention-probability dropout is not applied in
cross-attention (the kernel has none); residual-branch dropout is.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from vitjax.kernels.latent_cross_attention import BlockSizes, latent_cross_attention
from vitjax.models import perceiver_ar_decode
from vitjax.models.transformer import (
    ACT_HEADS, ACT_TOKENS, Attention, EncoderBlock, Einsum, LayerNorm, MlpBlock, _p, remat_block, remat_policy)
from vitjax.models.scan import scan_stack, stack_name
from vitjax.models.registry import build_module, register_model

DECODERS = ("pool", "query", "dense")


# ----------------------------------------------------------------------------------------------------
# Fourier position features


def _linspace32(start: float, stop: float, num: int) -> np.ndarray:
    """float32 linspace computed as torch.linspace does on CPU (float32 step, fused multiply-add, the
    second half counted back from ``stop``), so the top bands' sin(pi f x) match HF's features to
    float32 rounding instead of to ~3e-5."""
    if num == 1:
        return np.array([start], np.float32)
    i = np.arange(num, dtype=np.float64)
    step = np.float64(np.float32(stop - start) / np.float32(num - 1))
    # float32 x float32 is exact in float64, so one rounding to float32 below equals an fma.
    head = np.float64(np.float32(start)) + step * i
    tail = np.float64(np.float32(stop)) - step * (num - 1 - i)
    return np.where(i < num // 2, head, tail).astype(np.float32)


def grid_positions(index_dims: Sequence[int]) -> np.ndarray:
    """[prod(index_dims), d] coordinates in [-1, 1] of a row-major grid (first dim slowest)."""
    axes = [_linspace32(-1.0, 1.0, n) for n in index_dims]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack(grid, axis=-1).reshape(-1, len(index_dims))


def fourier_features(positions: np.ndarray, num_bands: int,
                     max_resolution: Sequence[int]) -> np.ndarray:
    """Perceiver position features: [..., d] coordinates in [-1, 1] -> [..., d(2K+1)].

    For each dim i with coordinate x_i and K = num_bands frequencies f_k linearly spaced from 1 to
    max_resolution[i] / 2 (the Nyquist frequency of that resolution): [x_1..x_d, sin(pi f_k x_i)
    for i, k, cos(pi f_k x_i) for i, k] -- the order of the DeepMind release and of HF's
    ``generate_fourier_features``. With the raw pixel values concatenated (``Perceiver``), an RGB
    pixel with d=2, K=6 has 3 + 2 * (2 * 6 + 1) = 29 features.
    """
    positions = np.asarray(positions, np.float32)
    d = positions.shape[-1]
    if len(max_resolution) != d:
        raise ValueError(f"fourier_features: {d}-D positions need {d} resolutions, got {tuple(max_resolution)}")
    freqs = np.stack([_linspace32(1.0, r / 2.0, num_bands) for r in max_resolution])
    per_dim = (positions[..., :, None] * freqs).reshape(positions.shape[:-1] + (d * num_bands,))
    return np.concatenate([positions, np.sin(np.pi * per_dim), np.cos(np.pi * per_dim)], axis=-1)


def num_fourier_features(num_dims: int, num_bands: int) -> int:
    return num_dims * (2 * num_bands + 1)


# ----------------------------------------------------------------------------------------------------
# Layers


class CrossAttention(nn.Module):
    """LN(x) -> queries, LN(inputs) -> keys/values, multi-head attention, output projection.

    x: [B, M, Dq] (latents or decoder queries); inputs: [B, N, Dkv]; mask: [B, N] bool or None.
    Returns [B, M, Dq]. ``qk_channels`` defaults to Dkv (HF's cross_attention_shape_for_attention
    ="kv"), ``v_channels`` to ``qk_channels``.

    Attributes:
      num_heads: attention heads; must divide qk_channels and v_channels.
      attention: "auto"/None, "pallas" or "reference" (see ``latent_cross_attention``).
    """
    num_heads: int = 1
    qk_channels: int | None = None
    v_channels: int | None = None
    layernorm_eps: float = 1e-5
    attention: str | None = None
    interpret: bool | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, inputs, mask=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dq, dkv = x.shape[-1], inputs.shape[-1]
        qk = self.qk_channels or dkv
        vc = self.v_channels or qk
        for name, ch in (("qk_channels", qk), ("v_channels", vc)):
            if ch % self.num_heads:
                raise ValueError(f"cross-attention {name}={ch} is not divisible by num_heads={self.num_heads}")
        h = self.num_heads
        xq = LayerNorm(self.layernorm_eps, name="norm_q", **kw)(x)
        xkv = LayerNorm(self.layernorm_eps, name="norm_kv", **kw)(inputs)

        def proj(name, inp, width, ch):
            y = Einsum("btd,dhk->bthk", (width, h, ch // h), ("embed", "heads", "kv"), 1, True,
                       name=name, **kw)(inp)
            return nn.with_logical_constraint(y, ACT_HEADS).transpose(0, 2, 1, 3)   # [B, H, T, hd]

        q, k, v = proj("query", xq, dq, qk), proj("key", xkv, dkv, qk), proj("value", xkv, dkv, vc)
        out = latent_cross_attention(q, k, v, mask, implementation=self.attention,
                                     interpret=self.interpret, block_sizes=self.block_sizes)
        out = nn.with_logical_constraint(out.transpose(0, 2, 1, 3), ACT_HEADS)      # [B, M, H, hd]
        return Einsum("bthk,hkd->btd", (h, vc // h, dq), ("heads", "kv", "embed"), 2, True,
                      name="out", **kw)(out)


class CrossAttendBlock(nn.Module):
    """HF ``PerceiverLayer`` with cross-attention: x (+)= CrossAttn(x, inputs); x += MLP(LN(x)).

    ``use_query_residual=False`` drops the first residual (decoders whose queries are positions,
    not the quantity being predicted). The MLP is ``widening_factor`` times the query width.
    """
    num_heads: int = 1
    widening_factor: int = 1
    qk_channels: int | None = None
    v_channels: int | None = None
    use_query_residual: bool = True
    dropout: float = 0.0
    layernorm_eps: float = 1e-5
    activation: str = "gelu"
    attention: str | None = None
    interpret: bool | None = None
    block_sizes: BlockSizes | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, inputs, mask=None, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = CrossAttention(self.num_heads, self.qk_channels, self.v_channels, self.layernorm_eps,
                           self.attention, self.interpret, self.block_sizes, name="attn", **kw)(x, inputs, mask)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        x = x + y if self.use_query_residual else y
        x = nn.with_logical_constraint(x, ACT_TOKENS)
        y = LayerNorm(self.layernorm_eps, name="norm2", **kw)(x)
        y = MlpBlock(self.widening_factor * x.shape[-1], self.dropout, self.activation, name="mlp", **kw)(
            y, train=train)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        return nn.with_logical_constraint(x + y, ACT_TOKENS)


# ----------------------------------------------------------------------------------------------------
# Model


class Perceiver(nn.Module):
    """Perceiver / Perceiver IO over images (or any [B, *index_dims, C] array).

    Attributes:
      num_classes: logits per output (per position for the "dense" decoder).
      image_size: the training resolution (the objective builds example batches from it); inputs of
        any spatial size work, their Fourier features come from their own grid.
      in_channels: C, the last dim of the inputs.
      num_latents, latent_dim: the latent array (paper: 512 x 1024).
      num_blocks: repeats of [cross-attend (first ``num_cross_attends`` blocks only), latent tower].
      num_self_attends_per_block: self-attention layers in the latent tower (paper: 6).
      num_cross_attends: how many blocks start with a cross-attend (Perceiver 8, Perceiver IO 1).
      share_weights: one latent tower for all blocks, one cross-attend for all blocks but the first.
      num_cross_heads, num_self_heads: attention heads (paper: 1 and 8).
      cross_qk_channels, cross_v_channels: cross-attention widths (None: the input feature width).
      cross_widening_factor, self_widening_factor: MLP width / model width (Perceiver IO ImageNet: 1).
      num_bands: K Fourier bands per index dim (paper ImageNet: 64).
      max_resolution: mu, the resolution whose Nyquist frequency is the top band (None: image_size).
      concat_pos: concatenate raw coordinates to the sin/cos features (the d in d(2K+1)).
      decoder: "pool" (Perceiver), "query" (Perceiver IO classification), "dense" (per position).
      attention: the implementation of both attentions (``model.attention``): None/"auto", "pallas"
        (the latent cross-attention kernel, and flash attention for the latent self-attention),
        "reference"/"xla" (the jnp cross-attention and XLA self-attention), or any other
        ``vitjax.models.attention`` name for the latent self-attention (the cross-attention then
        chooses automatically). attention_options: that implementation's options.
      attention_interpret: run the Pallas kernel in the Pallas interpreter (None: compiled for TPU/GPU;
        "pallas" on a CPU host needs True).
      block_q, block_kv: the kernel's forward tile sizes (None: its defaults).
      remat: rematerialisation policy for the latent self-attention layers (see transformer.py).
      scan_layers: each latent tower's ``num_self_attends_per_block`` layers as one ``nn.scan``
        (``self_attend0-{s-1}``; ``vitjax.models.scan``).
    """
    num_classes: int = 1000
    image_size: int = 224
    in_channels: int = 3
    num_latents: int = 512
    latent_dim: int = 1024
    num_blocks: int = 8
    num_self_attends_per_block: int = 6
    num_cross_attends: int = 8
    share_weights: bool = True
    num_cross_heads: int = 1
    num_self_heads: int = 8
    cross_qk_channels: int | None = None
    cross_v_channels: int | None = None
    cross_widening_factor: int = 1
    self_widening_factor: int = 1
    num_bands: int = 64
    max_resolution: int | tuple[int, ...] | None = None
    concat_pos: bool = True
    decoder: str = "pool"
    decoder_heads: int = 1
    dropout: float = 0.0
    layernorm_eps: float = 1e-5
    activation: str = "gelu"
    head_zero_init: bool = False
    attention: str | None = None
    attention_interpret: bool | None = None
    attention_options: Any = None
    block_q: int | None = None
    block_kv: int | None = None
    remat: str | bool | None = None
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"Perceiver decoder must be one of {DECODERS}, got {self.decoder!r}")
        if not 1 <= self.num_cross_attends <= self.num_blocks:
            raise ValueError(f"num_cross_attends={self.num_cross_attends} must be between 1 and "
                             f"num_blocks={self.num_blocks}")
        if self.latent_dim % self.num_self_heads:
            raise ValueError(f"latent_dim={self.latent_dim} is not divisible by num_self_heads="
                             f"{self.num_self_heads}")
        super().__post_init__()

    # -- inputs ------------------------------------------------------------------------------------

    def resolution(self, num_dims: int) -> tuple[int, ...]:
        mu = self.image_size if self.max_resolution is None else self.max_resolution
        mu = tuple(mu) if isinstance(mu, (tuple, list)) else (int(mu),) * num_dims
        if len(mu) != num_dims:
            raise ValueError(f"max_resolution={mu} has {len(mu)} dims but the inputs have {num_dims} "
                             f"index dims")
        return mu

    def position_features(self, index_dims: Sequence[int]) -> np.ndarray:
        """[prod(index_dims), F] fixed Fourier features of the input grid."""
        feats = fourier_features(grid_positions(index_dims), self.num_bands, self.resolution(len(index_dims)))
        return feats if self.concat_pos else feats[:, len(index_dims):]

    def input_features(self, images, mask=None):
        """images [B, *index_dims, C] -> inputs [B, N, C + F], mask [B, N] or None."""
        if images.ndim < 3:
            raise ValueError(f"Perceiver expects inputs [batch, *index_dims, channels], got shape {images.shape}")
        if images.shape[-1] != self.in_channels:
            raise ValueError(f"Perceiver: the inputs' last dim is {images.shape[-1]} but model.in_channels="
                             f"{self.in_channels}; pass [batch, height, width, channels] arrays with "
                             f"{self.in_channels} channels, or change model.in_channels")
        b, index_dims = images.shape[0], images.shape[1:-1]
        n = int(np.prod(index_dims))
        if n == 0:
            raise ValueError(f"Perceiver: the inputs have no elements (index dims {tuple(index_dims)}); "
                             f"there is nothing to cross-attend to")
        pos = jnp.asarray(self.position_features(index_dims), self.dtype)
        x = images.reshape(b, n, self.in_channels).astype(self.dtype)
        x = jnp.concatenate([x, jnp.broadcast_to(pos[None], (b,) + pos.shape)], axis=-1)
        if mask is not None:
            if mask.shape not in ((b,) + tuple(index_dims), (b, n)):
                raise ValueError(f"Perceiver: mask shape {mask.shape} must be [batch, *index_dims] = "
                                 f"{(b,) + tuple(index_dims)} or [batch, N] = {(b, n)}")
            mask = mask.reshape(b, n).astype(bool)
        return nn.with_logical_constraint(x, ("act_batch", "act_len", None)), mask

    # -- blocks ------------------------------------------------------------------------------------

    def _cross(self, name, **overrides):
        kw = dict(num_heads=self.num_cross_heads, widening_factor=self.cross_widening_factor,
                  qk_channels=self.cross_qk_channels, v_channels=self.cross_v_channels,
                  use_query_residual=True, dropout=self.dropout, layernorm_eps=self.layernorm_eps,
                  activation=self.activation, interpret=self.attention_interpret,
                  attention=self.attention if self.attention in (None, "auto", "pallas", "reference") else (
                      "reference" if self.attention == "xla" else None),
                  block_sizes=BlockSizes(block_q=self.block_q, block_kv=self.block_kv),
                  dtype=self.dtype, param_dtype=self.param_dtype)
        kw.update(overrides)
        return CrossAttendBlock(name=name, **kw)

    def _self(self, name, remat: bool = True):
        block = remat_block(EncoderBlock, self.remat) if remat else EncoderBlock
        return block(self.num_self_heads, self.self_widening_factor * self.latent_dim, self.dropout, 0.0,
                     0.0, self.layernorm_eps, self.activation, True, self.dtype, self.param_dtype,
                     self._self_attention(), self.attention_options, name=name)

    def _self_attention(self):
        # The interpreter flag belongs to the cross-attention kernel; the latent self-attention then runs XLA.
        if self.attention == "reference" or (self.attention == "pallas" and self.attention_interpret):
            return "xla"
        return self.attention

    def encode(self, inputs, mask=None, *, train: bool = False):
        """inputs [B, N, F], mask [B, N] -> latents [B, num_latents, latent_dim]."""
        latents = self.param("latents", _p(nn.initializers.truncated_normal(0.02), (None, "embed")),
                             (self.num_latents, self.latent_dim), self.param_dtype)
        x = jnp.broadcast_to(latents.astype(self.dtype)[None], (inputs.shape[0],) + latents.shape)
        x = nn.with_logical_constraint(x, ACT_TOKENS)
        s = self.num_self_attends_per_block
        if self.share_weights:
            crosses = [self._cross("cross_attend0")]
            if self.num_cross_attends > 1:
                crosses.append(self._cross("cross_attend1"))
            tower = self._tower("self_attend", s)
        for i in range(self.num_blocks):
            if i < self.num_cross_attends:
                cross = crosses[min(i, 1)] if self.share_weights else self._cross(f"cross_attend{i}")
                x = cross(x, inputs, mask, train)
            x = (tower if self.share_weights else self._tower(f"block{i}_self_attend", s))(x, train)
        return x

    def _tower(self, prefix: str, s: int):
        """The latent self-attention tower ``{prefix}0`` .. ``{prefix}{s-1}``: x [B, M, D] -> [B, M, D]
        (one ``nn.scan`` over a stack ``{prefix}0-{s-1}`` with ``scan_layers``)."""
        if self.scan_layers and s > 0:
            stack = self._self(stack_name(prefix, 0, s - 1), remat=False)
            return lambda x, train: scan_stack(stack, x, lambda blk, y, layer: blk(y, train), length=s,
                                               remat_policy=remat_policy(self.remat))
        layers = [self._self(f"{prefix}{j}") for j in range(s)]

        def run(x, train):
            for layer in layers:
                x = layer(x, train)
            return x
        return run

    def _head(self, x, name="head"):
        init = nn.initializers.zeros if self.head_zero_init else nn.initializers.lecun_normal()
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=_p(init, ("embed", "classes")),
                        bias_init=_p(nn.initializers.zeros, ("classes",)), name=name)(x)

    @nn.compact
    def __call__(self, images, *, train: bool = False, mask=None):
        """images [B, H, W, C] (mask [B, H, W] bool: True = real pixel) -> logits [B, num_classes]
        ("pool", "query") or [B, H, W, num_classes] ("dense")."""
        inputs, mask = self.input_features(images, mask)
        z = self.encode(inputs, mask, train=train)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.decoder == "pool":
            pooled = LayerNorm(self.layernorm_eps, name="pool_norm", **kw)(z.mean(axis=1))
            return nn.with_logical_constraint(self._head(pooled), ("act_batch", "act_classes"))
        if self.decoder == "query":
            query = self.param("decoder_query", _p(nn.initializers.truncated_normal(0.02), (None, "embed")),
                               (1, self.latent_dim), self.param_dtype)
            q = jnp.broadcast_to(query.astype(self.dtype)[None], (z.shape[0], 1, self.latent_dim))
            y = self._cross("decoder", num_heads=self.decoder_heads, widening_factor=1, qk_channels=None,
                            v_channels=None, block_sizes=None)(q, z, None, train)
            return nn.with_logical_constraint(self._head(y[:, 0], "decoder_head"), ("act_batch", "act_classes"))
        # dense: each output position queries the latents with its own Fourier features.
        index_dims = images.shape[1:-1]
        pos = jnp.asarray(self.position_features(index_dims), self.dtype)
        q = jnp.broadcast_to(pos[None], (z.shape[0],) + pos.shape)
        y = self._cross("decoder", num_heads=self.decoder_heads, widening_factor=1, qk_channels=None,
                        v_channels=None, use_query_residual=False, block_sizes=None)(q, z, None, train)
        y = self._head(y, "decoder_head")
        return y.reshape(images.shape[:-1] + (self.num_classes,))




def _build(defaults: dict, overrides: dict) -> Perceiver:
    kwargs = dict(defaults)
    kwargs.update(overrides)
    return build_module(Perceiver, kwargs, "Perceiver", tuples=("max_resolution",))


@register_model("perceiver")
def perceiver(**overrides) -> Perceiver:
    """Perceiver (Jaegle et al. 2021): 8 cross-attends with weight sharing, average-pool head."""
    # ImageNet model, Jaegle et al. 2021 sec. 4.1 and Table 1 ("Perceiver (pixels, Fourier)"):
    # 512 x 1024 latents, 8 blocks of 1 cross-attend + 6 self-attends, 1 cross / 8 self heads,
    # 64 Fourier bands, weights shared after the first cross-attend.
    # Unless given, every block starts with a cross-attend (the paper's layout).
    n = overrides.get("num_blocks", 8)
    return _build(dict(decoder="pool", num_blocks=8, num_cross_attends=n), overrides)


@register_model("perceiver_io")
def perceiver_io(**overrides) -> Perceiver:
    """Perceiver IO (Jaegle et al. 2022): 1 cross-attend, 8 x 6 shared self-attends, learned-query decoder."""
    # ImageNet model (pixels + 2-D Fourier features), Jaegle et al. 2022 sec. 4.5 / Table 5 and
    # the HF port deepmind/vision-perceiver-fourier: 512 x 1024 latents, one cross-attend,
    # 8 blocks of 6 weight-shared self-attends, 1 cross / 8 self heads, MLP widening 1.
    return _build(dict(decoder="query", num_cross_attends=1, num_blocks=8), overrides)


@register_model("perceiver_io_dense")
def perceiver_io_dense(**overrides) -> Perceiver:
    """Perceiver IO with per-position Fourier queries: [B, H, W, C] -> [B, H, W, num_classes]."""
    return _build(dict(decoder="dense", num_cross_attends=1, num_blocks=8), overrides)


# ----------------------------------------------------------------------------------------------------
# Perceiver AR


class PerceiverAR(nn.Module):
    """Perceiver AR (Hawthorne et al. 2022, "General-purpose, long-context autoregressive modeling with
    Perceiver AR", sec. 3): tokens [B, N] -> next-token logits [B, num_latents, vocab_size] for the
    last ``num_latents`` positions.

    The latents are the embeddings of the last M = ``num_latents`` positions. Latent i (position
    N - M + i) cross-attends to inputs 0..N-M+i (causal), then ``depth`` causal self-attention layers
    run over the M latents only, so the cost is O(N M + M^2) rather than O(N^2).

    Attributes:
      vocab_size: token vocabulary; max_len: longest sequence (learned position table length).
      num_latents: M; width, depth, num_heads, mlp_ratio: the latent transformer.
      scan_layers: the ``depth`` self-attention layers as one ``nn.scan`` (``self_attend0-{depth-1}``).
    """
    vocab_size: int = 256
    max_len: int = 1024
    num_latents: int = 128
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    layernorm_eps: float = 1e-5
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def example_inputs(self, batch_size: int = 1) -> tuple:
        """Shapes of ``model.init``'s inputs: a full-length token batch."""
        return (jax.ShapeDtypeStruct((batch_size, self.max_len), jnp.int32),)

    # The vitjax.generation protocol (cached sampling; vitjax/models/perceiver_ar_decode.py).
    def init_cache(self, batch_size: int, length: int) -> dict:
        return perceiver_ar_decode.init_cache(self, batch_size, length)

    def prefill(self, inputs, lengths, cache):
        return perceiver_ar_decode.prefill(self, self.variables["params"], inputs, lengths, cache)

    def decode_step(self, tokens, positions, cache):
        return perceiver_ar_decode.decode_step(self, self.variables["params"], tokens, positions, cache)

    @nn.compact
    def __call__(self, tokens, *, train: bool = False):
        if tokens.ndim != 2:
            raise ValueError(f"PerceiverAR expects tokens [batch, length], got shape {tokens.shape}")
        b, n = tokens.shape
        m = self.num_latents
        if not m <= n <= self.max_len:
            raise ValueError(f"PerceiverAR: sequence length {n} must be between num_latents={m} and "
                             f"max_len={self.max_len}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        emb = nn.Embed(self.vocab_size, self.width, name="embed", **kw,
                       embedding_init=_p(nn.initializers.normal(0.02), (None, "embed")))(tokens)
        pos = self.param("pos_embedding", _p(nn.initializers.normal(0.02), ("posemb_len", "embed")),
                         (self.max_len, self.width), self.param_dtype)
        x = nn.with_logical_constraint(emb + pos[:n].astype(self.dtype), ACT_TOKENS)
        # Latent i sits at position n - m + i and may see inputs up to and including itself.
        cross_mask = (jnp.arange(n)[None, :] <= (n - m + jnp.arange(m))[:, None])[None, None]
        z = x[:, n - m:]
        y = Attention(self.num_heads, name="cross_attn", **kw)(
            LayerNorm(self.layernorm_eps, name="cross_norm_q", **kw)(z),
            LayerNorm(self.layernorm_eps, name="cross_norm_kv", **kw)(x), mask=cross_mask, train=train)
        z = z + nn.Dropout(self.dropout)(y, deterministic=not train)
        z = z + MlpBlock(self.mlp_ratio * self.width, self.dropout, name="cross_mlp", **kw)(
            LayerNorm(self.layernorm_eps, name="cross_norm2", **kw)(z), train=train)
        causal = jnp.tril(jnp.ones((m, m), bool))[None, None]
        block = functools.partial(EncoderBlock, self.num_heads, self.mlp_ratio * self.width, self.dropout,
                                  layernorm_eps=self.layernorm_eps, **kw)
        if self.scan_layers and self.depth > 0:
            z = scan_stack(block(name=stack_name("self_attend", 0, self.depth - 1)), z,
                           lambda blk, y, layer, c: blk(y, train, c), length=self.depth, broadcast=(causal,))
        else:
            for i in range(self.depth):
                z = block(name=f"self_attend{i}")(z, train, causal)
        z = LayerNorm(self.layernorm_eps, name="final_norm", **kw)(z)
        return nn.Dense(self.vocab_size, kernel_init=_p(nn.initializers.lecun_normal(), ("embed", "classes")),
                        bias_init=_p(nn.initializers.zeros, ("classes",)), name="head", **kw)(z)


def next_token_loss(logits, tokens):
    """Mean cross-entropy of PerceiverAR's logits [B, M, V] against the tokens that follow each latent.

    Latent i (position N - M + i) predicts token N - M + i + 1, so the last latent has no target in
    ``tokens`` [B, N] and is dropped: M - 1 predictions per sequence."""
    m, n = logits.shape[1], tokens.shape[1]
    targets = tokens[:, n - m + 1:]
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1].astype(jnp.float32), targets).mean()


@register_model("perceiver_ar")
def perceiver_ar(**overrides) -> PerceiverAR:
    """Perceiver AR over token sequences: causal latents over the last positions, next-token logits."""
    fields = {f.name for f in dataclasses.fields(PerceiverAR)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown PerceiverAR option(s) {unknown}; valid options: {sorted(fields)}")
    for key in ("dtype", "param_dtype"):
        if isinstance(overrides.get(key), str):
            overrides[key] = jnp.dtype(overrides[key])
    return PerceiverAR(**overrides)
