"""Pyramid Vision Transformer v1 (Wang et al. 2021, arXiv:2102.12122) and v2 (Wang et al. 2022,
"PVT v2: Improved Baselines with Pyramid Vision Transformer", arXiv:2106.13797).

``PVT`` maps images [B, H, W, C] to logits [B, num_classes] (pooled features when
``num_classes == 0``), or with ``features=True`` to the 4-stage pyramid of normalised maps
``[B, H/4, W/4, C1], [B, H/8, W/8, C2], [B, H/16, W/16, C3], [B, H/32, W/32, C4]``.

Every stage: patch embedding (conv + LayerNorm) -> blocks of pre-norm spatial-reduction attention
(SRA) + MLP -> LayerNorm. SRA attends from every token to a *reduced* key/value map:

* v1 / v2: keys and values come from a strided conv (kernel = stride = sr_ratio, ratios 8/4/2/1)
  followed by LayerNorm, so stage 1's 56x56 queries see 7x7 keys (Wang et al. 2021, sec. 3.3).
* v2 "linear" SRA (``linear=True``, PVT-v2-b2-li): adaptive average pooling to 7x7, a 1x1 conv,
  LayerNorm and GELU; the cost is then linear in the number of tokens.

v1 embeds non-overlapping patches (4, then 2) and adds a learned position embedding per stage; its
MLP is a plain two-layer MLP. v2 uses overlapping patch embeddings (7x7 stride 4, then 3x3 stride
2, zero padding k // 2), no position embedding, and a 3x3 depthwise conv inside the MLP
(after fc1; with ``linear=True`` a ReLU comes before it), exactly as timm's ``pvt_v2``.

LayerNorm epsilons follow timm: 1e-5 in patch embeddings and SRA, 1e-6 in blocks and stage norms.
Deviation from the v1 paper: classification averages the last stage's tokens instead of adding a
class token in stage 4.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from vitjax.models.scan import check_uniform, scan_stack, stack_name
from vitjax.models.transformer import (DropPath, classifier_head, Einsum, LayerNorm, _p, activation_fn, dense_init,
                                       remat_block, remat_policy)
from vitjax.models.registry import build_module, register_model

# name: (embed_dims, depths, num_heads, mlp_ratios). Wang et al. 2022 (PVT v2), Table 1 and timm
# pvt_v2_b0..b5 (b5 uses mlp ratio 4 everywhere); v1: Wang et al. 2021, Table 1.
V2_SIZES: dict[str, tuple] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), (1, 2, 5, 8), (8, 8, 4, 4)),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), (1, 2, 5, 8), (8, 8, 4, 4)),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), (1, 2, 5, 8), (4, 4, 4, 4)),
}
V1_SIZES: dict[str, tuple] = {
    "tiny": ((64, 128, 320, 512), (2, 2, 2, 2), (1, 2, 5, 8), (8, 8, 4, 4)),
    "small": ((64, 128, 320, 512), (3, 4, 6, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    "medium": ((64, 128, 320, 512), (3, 4, 18, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
    "large": ((64, 128, 320, 512), (3, 8, 27, 3), (1, 2, 5, 8), (8, 8, 4, 4)),
}


def _conv(features, kernel, stride, padding, name, groups=1, **kw):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), feature_group_count=groups,
                   kernel_init=_p(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                   bias_init=_p(nn.initializers.zeros, ("embed",)), name=name, **kw)


def adaptive_avg_pool(x, out: int):
    """[B, H, W, C] -> [B, out, out, C], PyTorch AdaptiveAvgPool2d bins: [floor(i*H/o), ceil((i+1)*H/o))."""
    def weights(n):
        w = np.zeros((out, n), np.float32)
        for i in range(out):
            lo, hi = (i * n) // out, -((-(i + 1) * n) // out)
            w[i, lo:hi] = 1.0 / (hi - lo)
        return jnp.asarray(w)
    return jnp.einsum("ih,jw,bhwc->bijc", weights(x.shape[1]), weights(x.shape[2]), x.astype(jnp.float32)
                      ).astype(x.dtype)


class PatchEmbed(nn.Module):
    """Conv (kernel, stride, zero padding) -> LayerNorm(1e-5): [B, H, W, Cin] -> [B, H', W', C]."""
    dim: int
    kernel: int
    stride: int
    padding: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _conv(self.dim, self.kernel, self.stride, self.padding, "proj", **kw)(x)
        return LayerNorm(1e-5, name="norm", **kw)(x)


class PosEmbed(nn.Module):
    """v1's learned position embedding of one stage, [1, H, W, C] added to the map. The parameter is
    called ``pos_embedding`` so the optimizer's no-weight-decay list covers it, as for ViT."""
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos_embedding", _p(nn.initializers.truncated_normal(0.02), (None, None, None, "embed")),
                         (1,) + x.shape[1:], self.param_dtype)
        return x + pos.astype(x.dtype)


class SRAttention(nn.Module):
    """Spatial-reduction attention: queries from every token, keys/values from a reduced map.

    x: [B, H, W, C] -> [B, H, W, C].
    """
    num_heads: int
    sr_ratio: int
    linear: bool = False
    qkv_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"width {c} is not divisible by num_heads={self.num_heads}")
        hd = c // self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        kv = x
        if self.linear:
            kv = _conv(c, 1, 1, 0, "sr", **kw)(adaptive_avg_pool(kv, 7))
            kv = jax.nn.gelu(LayerNorm(1e-5, name="sr_norm", **kw)(kv), approximate=False)
        elif self.sr_ratio > 1:
            kv = _conv(c, self.sr_ratio, self.sr_ratio, 0, "sr", **kw)(kv)
            kv = LayerNorm(1e-5, name="sr_norm", **kw)(kv)
        x, kv = x.reshape(b, h * w, c), kv.reshape(b, -1, c)

        def proj(name, inp):
            y = Einsum("btd,dhk->bthk", (c, self.num_heads, hd), ("embed", "heads", "kv"), 1, self.qkv_bias,
                       name=name, **kw)(inp)
            return nn.with_logical_constraint(y, ("act_batch", "act_len", "act_heads", "act_kv"))

        out = jax.nn.dot_product_attention(proj("query", x), proj("key", kv), proj("value", kv))
        out = Einsum("bthk,hkd->btd", (self.num_heads, hd, c), ("heads", "kv", "embed"), 2, True, name="out",
                     **kw)(out)
        return out.reshape(b, h, w, c)


class PVTMlp(nn.Module):
    """fc1 -> [ReLU if linear] -> [3x3 depthwise conv if v2] -> GELU -> fc2 on a [B, H, W, C] map."""
    hidden: int
    depthwise: bool = True
    extra_relu: bool = False
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = x.shape[-1]
        y = nn.Dense(self.hidden, kernel_init=_p(dense_init(), ("embed", "mlp")),
                     bias_init=_p(nn.initializers.zeros, ("mlp",)), name="fc1", **kw)(x)
        if self.extra_relu:
            y = jax.nn.relu(y)
        if self.depthwise:
            y = nn.Conv(self.hidden, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=self.hidden,
                        kernel_init=_p(nn.initializers.lecun_normal(), (None, None, None, "mlp")),
                        bias_init=_p(nn.initializers.zeros, ("mlp",)), name="dwconv", **kw)(y)
        y = activation_fn("gelu")(y)
        y = nn.Dropout(self.dropout)(y, deterministic=not train)
        y = nn.Dense(c, kernel_init=_p(dense_init(), ("mlp", "embed")),
                     bias_init=_p(nn.initializers.zeros, ("embed",)), name="fc2", **kw)(y)
        return nn.Dropout(self.dropout)(y, deterministic=not train)


class PVTBlock(nn.Module):
    """x + SRA(LN(x)); x + MLP(LN(x)) on [B, H, W, C]."""
    num_heads: int
    sr_ratio: int
    mlp_ratio: float
    version: int = 2
    linear: bool = False
    qkv_bias: bool = True
    dropout: float = 0.0
    drop_path: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, drop_path=None):
        """x: [B, H, W, C] -> [B, H, W, C]; ``drop_path``: this layer's (traced) rate in a scanned stack."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.with_logical_constraint(x, ("act_batch", None, None, "act_embed"))
        y = SRAttention(self.num_heads, self.sr_ratio, self.linear, self.qkv_bias, name="attn", **kw)(
            LayerNorm(1e-6, name="norm1", **kw)(x))
        y = checkpoint_name(nn.Dropout(self.dropout)(y, deterministic=not train), "attn_out")  # remat policies
        x = x + DropPath(self.drop_path, name="drop_path1")(y, train=train, rate=drop_path)
        y = PVTMlp(int(x.shape[-1] * self.mlp_ratio), self.version == 2, self.linear, self.dropout, name="mlp",
                   **kw)(LayerNorm(1e-6, name="norm2", **kw)(x), train=train)
        y = checkpoint_name(y, "mlp_out")
        return x + DropPath(self.drop_path, name="drop_path2")(y, train=train, rate=drop_path)


class PVT(nn.Module):
    """Pyramid Vision Transformer (v1 or v2).

    Attributes:
      num_classes: logits size; 0 returns the pooled last-stage features.
      image_size: input side (v1's position embeddings are built for it; v2 only checks it).
      in_channels: input channels.
      version: 1 or 2.
      embed_dims, depths, num_heads, mlp_ratios, sr_ratios: per stage.
      linear: v2's linear SRA (7x7 average pool instead of the strided conv).
      qkv_bias, dropout, drop_path: as timm (drop_path rises linearly over all blocks).
      remat: per-block rematerialisation policy ("none", "full", "dots_saveable", "save_attn_mlp_out"),
        inside the scan too when ``scan_layers``.
      scan_layers: each stage's blocks as one ``nn.scan`` (child ``stage{s}_block0-{d-1}``, parameters
        stacked on a leading ``layers`` axis; ``vitjax.models.scan``).
      dtype, param_dtype: compute and storage dtypes.
    """
    num_classes: int = 1000
    image_size: int = 224
    in_channels: int = 3
    version: int = 2
    embed_dims: Sequence[int] = (64, 128, 320, 512)
    depths: Sequence[int] = (3, 4, 6, 3)
    num_heads: Sequence[int] = (1, 2, 5, 8)
    mlp_ratios: Sequence[float] = (8.0, 8.0, 4.0, 4.0)
    sr_ratios: Sequence[int] = (8, 4, 2, 1)
    linear: bool = False
    qkv_bias: bool = True
    dropout: float = 0.0
    drop_path: float = 0.0
    head_zero_init: bool = False
    remat: str | bool | None = None
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        n = len(self.depths)
        for key in ("embed_dims", "num_heads", "mlp_ratios", "sr_ratios"):
            if len(getattr(self, key)) != n:
                raise ValueError(f"{key} {tuple(getattr(self, key))} must have one entry per stage "
                                 f"({n} stages from depths {tuple(self.depths)})")
        if self.version not in (1, 2):
            raise ValueError(f"PVT version must be 1 or 2, got {self.version}")
        if self.linear and self.version != 2:
            raise ValueError("linear spatial-reduction attention (linear=True) is a PVT v2 option")
        if self.version == 1 and self.image_size % (4 * 2 ** (n - 1)):
            raise ValueError(f"PVT v1 needs image_size divisible by {4 * 2 ** (n - 1)} (patch 4 then 2 per stage), "
                             f"got {self.image_size}")
        for s, (d, h) in enumerate(zip(self.embed_dims, self.num_heads)):
            if d % h:
                raise ValueError(f"stage {s + 1} width {d} is not divisible by its num_heads={h}")
        super().__post_init__()

    def _block_kwargs(self, s: int, b: int) -> dict:
        """The ``PVTBlock`` settings of block ``b`` of stage ``s``, all but its drop-path rate."""
        return dict(num_heads=self.num_heads[s], sr_ratio=self.sr_ratios[s], mlp_ratio=self.mlp_ratios[s],
                    version=self.version, linear=self.linear, qkv_bias=self.qkv_bias, dropout=self.dropout,
                    dtype=self.dtype, param_dtype=self.param_dtype)

    @nn.compact
    def __call__(self, images, *, train: bool = False, features: bool = False):
        """images [B, H, W, C] -> logits; ``features=True``: the normalised stage maps [B, H_s, W_s, C_s]."""
        if images.shape[1] != self.image_size or images.shape[2] != self.image_size:
            raise ValueError(f"PVT was built for {self.image_size}x{self.image_size} images but got "
                             f"{images.shape[1]}x{images.shape[2]}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        rates = np.linspace(0.0, self.drop_path, sum(self.depths)).tolist()
        block_cls = remat_block(PVTBlock, self.remat)
        x = images.astype(self.dtype)
        pyramid, i = [], 0
        for s, dim in enumerate(self.embed_dims):
            if self.version == 2:
                k, st, pad = (7, 4, 3) if s == 0 else (3, 2, 1)
            else:
                k, st, pad = (4, 4, 0) if s == 0 else (2, 2, 0)
            x = PatchEmbed(dim, k, st, pad, name="patch_embed" if s == 0 else f"stage{s}_downsample", **kw)(x)
            if self.version == 1:
                x = nn.Dropout(self.dropout)(PosEmbed(self.param_dtype, name=f"stage{s}_pos")(x),
                                             deterministic=not train)
            depth = self.depths[s]
            if self.scan_layers and depth > 0:
                kwargs = [self._block_kwargs(s, b) for b in range(depth)]
                # dtypes are model-wide: left out of the comparison to keep its message readable
                check_uniform(f"stage {s} (blocks stage{s}_block0..{depth - 1})",
                              [{k: v for k, v in kw.items() if k not in ("dtype", "param_dtype")} for kw in kwargs])
                block = PVTBlock(**kwargs[0], name=stack_name(f"stage{s}_block", 0, depth - 1))
                x = scan_stack(block, x, lambda blk, y, layer: blk(y, train, layer.drop_path), length=depth,
                               rates=rates[i:i + depth], remat_policy=remat_policy(self.remat))
            else:
                for b in range(depth):
                    x = block_cls(**self._block_kwargs(s, b), drop_path=rates[i + b], name=f"stage{s}_block{b}")(
                        x, train)
            i += depth
            x = LayerNorm(1e-6, name=f"stage{s}_norm", **kw)(x)
            pyramid.append(x)
        if features:
            return pyramid
        feats = x.mean(axis=(1, 2))
        if self.num_classes == 0:
            return feats
        feats = nn.Dropout(self.dropout)(feats, deterministic=not train)
        return classifier_head(feats, self.num_classes, self.head_zero_init, **kw)




def _build(defaults: dict, overrides: dict) -> PVT:
    kwargs = {**defaults, **overrides}
    for key in ("embed_dims", "depths", "num_heads", "sr_ratios"):
        if key in kwargs:
            kwargs[key] = tuple(int(v) for v in kwargs[key])
    if "mlp_ratios" in kwargs:
        kwargs["mlp_ratios"] = tuple(float(v) for v in kwargs["mlp_ratios"])
    return build_module(PVT, kwargs, "PVT")


def _size_kwargs(table, variant, family):
    if variant not in table:
        raise ValueError(f"unknown {family} variant {variant!r}; choose one of {list(table)}")
    dims, depths, heads, mlp = table[variant]
    return dict(embed_dims=dims, depths=depths, num_heads=heads, mlp_ratios=mlp)


@register_model("pvt_v2")
def pvt_v2(variant: str | None = "b2", **overrides) -> PVT:
    """Any PVT v2: ``create_model("pvt_v2", variant="b0", num_classes=10, image_size=64)``."""
    base = {"version": 2, **(_size_kwargs(V2_SIZES, variant, "PVT v2") if variant else {})}
    return _build(base, overrides)


@register_model("pvt_v1")
def pvt_v1(variant: str | None = "small", **overrides) -> PVT:
    """Any PVT v1: ``create_model("pvt_v1", variant="tiny", ...)``."""
    base = {"version": 1, **(_size_kwargs(V1_SIZES, variant, "PVT v1") if variant else {})}
    return _build(base, overrides)


for _v in V2_SIZES:
    register_model(f"pvt_v2_{_v}", doc=f"PVT v2-{_v} (Wang et al. 2022)")(
        lambda _x=_v, **kw: pvt_v2(_x, **kw))
register_model("pvt_v2_b2_li", doc="PVT v2-b2-li: linear SRA (Wang et al. 2022)")(
    lambda **kw: pvt_v2("b2", **{"linear": True, **kw}))
for _v in V1_SIZES:
    register_model(f"pvt_v1_{_v}", doc=f"PVT v1-{_v} (Wang et al. 2021)")(
        lambda _x=_v, **kw: pvt_v1(_x, **kw))
