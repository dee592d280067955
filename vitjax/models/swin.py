"""Swin Transformer (Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", arXiv:2103.14030) and, with ``version=2``, Swin v2 (Liu et al. 2022, "Swin Transformer V2:
Scaling Up Capacity and Resolution", arXiv:2111.09883): residual post-norm, scaled cosine attention
with a learned per-head temperature, a log-spaced continuous position bias (an MLP producing the
bias table) and a PatchMerging that normalises after the reduction (timm's ``swinv2_*`` layout).

``Swin`` maps images [B, H, W, C] to logits [B, num_classes] (pooled features [B, C_last] when
``num_classes == 0``), or with ``features=True`` to the 4-stage pyramid
``[B, H/4, W/4, C], [B, H/8, W/8, 2C], [B, H/16, W/16, 4C], [B, H/32, W/32, 8C]`` (for patch 4).

Structure (timm's, which downsamples at the *start* of stages 2..4; the original code and HF put the
same PatchMerging at the *end* of the previous stage, which computes the same function):

    patch_embed (conv P x P, stride P) -> patch_norm
    stage s: [downsample (2x2 PatchMerging: LN(4C) -> Linear 4C->2C, no bias) if s > 0]
             -> blocks alternating W-MSA (even) and SW-MSA (odd, cyclic shift by floor(W/2))
    norm -> global average pool -> head

Window attention runs through ``vitjax.kernels.window_attention`` (Pallas kernel on TPU/GPU, the
XLA reference on CPU; ``attention_impl`` / ``attention_interpret`` override). When a stage's map is
not a multiple of the window it is zero-padded (after the cyclic shift as timm does, or before it
as HF does: ``pad_before_shift``); when the map is no larger than the window the window shrinks to
the map and the shift is disabled, as both reference implementations do.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.ad_checkpoint import checkpoint_name

from vitjax.kernels.window_attention import window_attention, window_shift_mask
from vitjax.models.scan import check_uniform, scan_stack, stack_name
from vitjax.models.transformer import (DropPath, classifier_head, Einsum, LayerNorm, MlpBlock, _p, dense_init,
                                       remat_block, remat_policy)
from vitjax.models.registry import build_module, register_model

# name: (embed_dim, depths, num_heads). Liu et al. 2021, sec. 3.3 ("Architecture Variants");
# all use window 7 at 224px, mlp_ratio 4, head dim 32.
SIZES: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "T": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "S": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "B": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "L": (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
# Stochastic depth of the paper's ImageNet-1k recipe (Liu et al. 2021, Appendix A2.1).
DROP_PATH = {"T": 0.2, "S": 0.3, "B": 0.5, "L": 0.5}

MAP = ("act_batch", None, None, "act_embed")          # [B, H, W, C] activations
WINDOWS = ("act_batch", "act_len", "act_embed")       # [B * nW, T, C] windows


def stage_geometry(image_size: int, patch_size: int, num_stages: int, window_size: int
                   ) -> list[tuple[int, int, int]]:
    """Per stage: (map side, effective window, shift). The map halves (rounding up, as PatchMerging
    pads odd maps) from stage 2 on; a window not smaller than the map shrinks to it, unshifted."""
    side = image_size // patch_size
    out = []
    for s in range(num_stages):
        if s > 0:
            side = (side + 1) // 2
        if side <= window_size:
            out.append((side, side, 0))
        else:
            out.append((side, window_size, window_size // 2))
    return out


def window_partition(x, w: int):
    """[B, H, W, C] (H, W multiples of w) -> [B * (H/w) * (W/w), w*w, C], windows row-major per image."""
    b, h, ww, c = x.shape
    x = x.reshape(b, h // w, w, ww // w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(windows, w: int, b: int, h: int, ww: int):
    """Inverse of ``window_partition``."""
    c = windows.shape[-1]
    x = windows.reshape(b, h // w, ww // w, w, w, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, ww, c)


def log_spaced_coords(window_size: int) -> np.ndarray:
    """[(2W-1)^2, 2] Swin v2 relative coordinates: (dy, dx) / (W-1) * 8, then sign * log2(1+|.|) / 3,
    rows in the order of the bias-table index (dy-major), as timm / the official code."""
    r = np.arange(-(window_size - 1), window_size, dtype=np.float32) / max(window_size - 1, 1) * 8.0
    dy, dx = np.meshgrid(r, r, indexing="ij")
    c = np.stack([dy, dx], -1).reshape(-1, 2)
    return (np.sign(c) * np.log2(np.abs(c) + 1.0) / np.log2(8.0)).astype(np.float32)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with Swin's learned relative-position bias.

    ``relative_position_bias_table`` [(2W-1)^2, heads] (trunc-normal 0.02, as timm) is the only
    position information; the index into it and the shift mask are constants, not parameters.
    """
    num_heads: int
    window_size: int
    qkv_bias: bool = True
    implementation: str | None = None
    interpret: bool | None = None
    version: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask=None):
        """x: [N, T, C] windows; mask: [nW, T, T] additive shift mask or None -> [N, T, C]."""
        n, t, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"width {c} is not divisible by num_heads={self.num_heads}")
        hd = c // self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def proj(name, bias):
            y = Einsum("ntd,dhk->nthk", (c, self.num_heads, hd), ("embed", "heads", "kv"), 1,
                       bias, name=name, **kw)(x)
            return y.transpose(0, 2, 1, 3)            # [N, H, T, hd]

        # v2 has query and value biases only (timm/Microsoft: k_bias is a zero buffer).
        q = proj("query", self.qkv_bias)
        k = proj("key", self.qkv_bias and self.version == 1)
        v = proj("value", self.qkv_bias)
        scale = None
        if self.version == 1:
            table = self.param("relative_position_bias_table",
                               _p(nn.initializers.truncated_normal(0.02), (None, "heads")),
                               ((2 * self.window_size - 1) ** 2, self.num_heads), self.param_dtype)
        else:
            # Swin v2 (Liu et al. 2022, sec. 3.1-3.2): scaled cosine attention with a learned
            # per-head temperature (clamped at 100), and a continuous position bias: a small MLP
            # on log-spaced relative coordinates, squashed to (0, 16).
            logit_scale = self.param("logit_scale", _p(nn.initializers.constant(np.log(10.0)), ("heads",)),
                                     (self.num_heads,), self.param_dtype)
            temp = jnp.exp(jnp.minimum(logit_scale.astype(jnp.float32), np.log(100.0)))

            def unit(y):
                y32 = y.astype(jnp.float32)
                return y32 / jnp.maximum(jnp.linalg.norm(y32, axis=-1, keepdims=True), 1e-12)
            q = (unit(q) * temp[None, :, None, None]).astype(q.dtype)
            k = unit(k).astype(k.dtype)
            scale = 1.0
            hid = nn.relu(nn.Dense(512, name="cpb_fc1", kernel_init=_p(dense_init(), (None, "mlp")),
                                   bias_init=_p(nn.initializers.zeros, ("mlp",)), param_dtype=self.param_dtype)(
                                       jnp.asarray(log_spaced_coords(self.window_size))))
            table = 16.0 * jax.nn.sigmoid(nn.Dense(self.num_heads, use_bias=False, name="cpb_fc2",
                                                   kernel_init=_p(dense_init(), ("mlp", "heads")),
                                                   param_dtype=self.param_dtype)(hid))
        out = window_attention(q, k, v, table.astype(jnp.float32), mask, window_size=self.window_size,
                               scale=scale, implementation=self.implementation, interpret=self.interpret)
        out = nn.with_logical_constraint(out.transpose(0, 2, 1, 3), ("act_batch", "act_len", "act_heads",
                                                                     "act_kv"))
        return Einsum("nthk,hkd->ntd", (self.num_heads, hd, c), ("heads", "kv", "embed"), 2, True,
                      name="out", **kw)(out)


class SwinBlock(nn.Module):
    """x + W-MSA/SW-MSA(LN(x)); x + MLP(LN(x)) on a [B, H, W, C] map.

    ``window_size`` and ``shift`` are the effective ones for this map (see ``stage_geometry``).
    """
    num_heads: int
    window_size: int
    shift: int
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path: float = 0.0
    layernorm_eps: float = 1e-5
    qkv_bias: bool = True
    pad_before_shift: bool = False
    attention_impl: str | None = None
    attention_interpret: bool | None = None
    version: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _attention(self, x, shifted=None):
        b, h, w, c = x.shape
        ws = self.window_size
        # In a scanned stack one block serves the W-MSA and the SW-MSA layers: ``shifted`` (a traced
        # 0/1) scales the roll, and the shift mask is zeroed for unshifted layers (adding 0 is exact).
        s = self.shift if shifted is None else shifted * self.shift
        roll = (lambda y, k: jnp.roll(y, (k, k), axis=(1, 2))) if self.shift else (lambda y, k: y)  # noqa: E731
        ph, pw = (-h) % ws, (-w) % ws
        pad = lambda y: jnp.pad(y, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else y  # noqa: E731
        # HF pads, then shifts (the roll wraps over the padded map); timm shifts, then pads.
        y = roll(pad(x), -s) if self.pad_before_shift else pad(roll(x, -s))
        hp, wp = h + ph, w + pw
        mask = jnp.asarray(window_shift_mask(hp, wp, ws, self.shift)) if self.shift else None
        if mask is not None and shifted is not None:
            mask = jnp.where(shifted, mask, 0.0)
        win = nn.with_logical_constraint(window_partition(y, ws), WINDOWS)
        out = WindowAttention(self.num_heads, ws, self.qkv_bias, self.attention_impl, self.attention_interpret,
                              self.version, self.dtype, self.param_dtype, name="attn")(win, mask)
        y = window_reverse(out, ws, b, hp, wp)
        if self.pad_before_shift:
            return roll(y, s)[:, :h, :w]
        return roll(y[:, :h, :w], s)

    @nn.compact
    def __call__(self, x, train: bool = False, drop_path=None, shifted=None):
        """x: [B, H, W, C] -> [B, H, W, C]. In a scanned stack (``Swin.scan_layers``): ``drop_path``, this
        layer's rate, and ``shifted``, 0 (W-MSA) or 1 (SW-MSA by ``shift``), both traced scalars."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.with_logical_constraint(x, MAP)
        norm1 = LayerNorm(self.layernorm_eps, name="norm1", **kw)
        norm2 = LayerNorm(self.layernorm_eps, name="norm2", **kw)
        mlp = MlpBlock(int(x.shape[-1] * self.mlp_ratio), self.dropout, "gelu", name="mlp", **kw)
        post = self.version == 2      # v2: residual post-norm, x + LN(f(x)) (Liu et al. 2022, sec. 3.1)
        y = norm1(self._attention(x, shifted)) if post else self._attention(norm1(x), shifted)
        y = checkpoint_name(nn.Dropout(self.dropout)(y, deterministic=not train), "attn_out")   # remat policies
        x = x + DropPath(self.drop_path, name="drop_path1")(y, train=train, rate=drop_path)
        y = norm2(mlp(x, train=train)) if post else mlp(norm2(x), train=train)
        y = checkpoint_name(nn.Dropout(self.dropout)(y, deterministic=not train), "mlp_out")
        x = x + DropPath(self.drop_path, name="drop_path2")(y, train=train, rate=drop_path)
        return nn.with_logical_constraint(x, MAP)


class PatchMerging(nn.Module):
    """[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), out_dim]: concat each 2x2 neighbourhood in the order
    (0,0), (1,0), (0,1), (1,1) (row, col) -> LN(4C) -> Linear(4C, out_dim, no bias), as timm and HF."""
    out_dim: int
    layernorm_eps: float = 1e-5
    version: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
            h, w = h + h % 2, w + w % 2
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        norm = LayerNorm(self.layernorm_eps, name="norm", dtype=self.dtype, param_dtype=self.param_dtype)
        reduce = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                          kernel_init=_p(nn.initializers.truncated_normal(0.02), (None, "embed")),
                          name="reduction")
        return norm(reduce(x)) if self.version == 2 else reduce(norm(x))   # v2 normalises after


class Swin(nn.Module):
    """Swin Transformer v1.

    Attributes:
      num_classes: logits size; 0 returns the pooled, normalised features.
      image_size: input side the stage geometry (windows, shifts, masks) is built for.
      patch_size: side of the square patches of the embedding (4 in the paper).
      in_channels: input channels.
      embed_dim: stage-1 width C; stage s has C * 2**s.
      depths, num_heads: blocks and heads per stage.
      window_size: attention window side W (7 at 224px; shrinks to the map where the map is smaller).
      mlp_ratio: MLP hidden width / block width.
      dropout: dropout after attention/MLP projections and before the head (timm proj_drop/drop_rate).
      drop_path: stochastic depth, rising linearly over all blocks to this rate.
      layernorm_eps: 1e-5 as timm and HF.
      pad_before_shift: False: timm's order (shift, then pad maps that are not a multiple of the
        window); True: HF's (pad, then shift). Equal when maps are multiples of the window.
      version: 1 (Swin) or 2 (Swin v2, Liu et al. 2022: residual post-norm, scaled cosine attention,
        log-spaced continuous position bias, PatchMerging that normalises after the reduction).
      attention_impl, attention_interpret: passed to ``window_attention`` (None: Pallas on TPU/GPU,
        reference on CPU).
      head_zero_init: zero-initialise the classifier (else trunc-normal 0.02, as timm).
      remat: per-block rematerialisation policy ("none", "full", "dots_saveable", "save_attn_mlp_out").
      scan_layers: each stage's blocks as one ``nn.scan`` (child ``stage{s}_block0-{d-1}``, parameters
        stacked on a leading ``layers`` axis; ``vitjax.models.scan``); W-MSA and SW-MSA layers share the
        stack, the shift being a per-layer input (layer index % 2).
      dtype, param_dtype: compute and storage dtypes.
    """
    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 4
    in_channels: int = 3
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    dropout: float = 0.0
    drop_path: float = 0.1
    layernorm_eps: float = 1e-5
    pad_before_shift: bool = False
    version: int = 1
    attention_impl: str | None = None
    attention_interpret: bool | None = None
    head_zero_init: bool = False
    remat: str | bool | None = None
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} must have one "
                             f"entry per stage")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if self.version not in (1, 2):
            raise ValueError(f"Swin version must be 1 or 2, got {self.version}")
        for s, h in enumerate(self.num_heads):
            if self.stage_dims[s] % h:
                raise ValueError(f"stage {s + 1} width {self.stage_dims[s]} is not divisible by its "
                                 f"num_heads={h}")
        super().__post_init__()

    @property
    def stage_dims(self) -> tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** s for s in range(len(self.depths)))

    @property
    def geometry(self) -> list[tuple[int, int, int]]:
        return stage_geometry(self.image_size, self.patch_size, len(self.depths), self.window_size)

    @property
    def num_features(self) -> int:
        return self.stage_dims[-1]

    def _block_kwargs(self, s: int, b: int) -> dict:
        """The ``SwinBlock`` settings of block ``b`` of stage ``s``, all but its drop-path rate."""
        _, win, shift = self.geometry[s]
        return dict(num_heads=self.num_heads[s], window_size=win, shift=shift if b % 2 else 0,
                    mlp_ratio=self.mlp_ratio, dropout=self.dropout, layernorm_eps=self.layernorm_eps,
                    qkv_bias=self.qkv_bias, pad_before_shift=self.pad_before_shift,
                    attention_impl=self.attention_impl, attention_interpret=self.attention_interpret,
                    version=self.version, dtype=self.dtype, param_dtype=self.param_dtype)

    def _scanned_stage(self, x, s: int, rates: list[float], train: bool):
        """Stage ``s``'s blocks as one scanned stack: one ``SwinBlock`` built with the stage's shift,
        told per layer whether to apply it (odd layers, as the unscanned alternation)."""
        depth = self.depths[s]
        # The shift is a per-layer input, so only the other settings must agree between blocks (the
        # dtypes, model-wide, are left out of the comparison to keep its message readable).
        kwargs = [self._block_kwargs(s, b) for b in range(depth)]
        check_uniform(f"stage {s} (blocks stage{s}_block0..{depth - 1})",
                      [{k: v for k, v in kw.items() if k not in ("shift", "dtype", "param_dtype")} for kw in kwargs])
        block = SwinBlock(**{**kwargs[0], "shift": self.geometry[s][2]},
                          name=stack_name(f"stage{s}_block", 0, depth - 1))
        return scan_stack(block, x, lambda blk, y, layer: blk(y, train, layer.drop_path, layer.index % 2),
                          length=depth, rates=rates, remat_policy=remat_policy(self.remat))

    @nn.compact
    def __call__(self, images, *, train: bool = False, features: bool = False):
        """images [B, H, W, C] -> logits [B, num_classes]; ``features=True``: the list of stage outputs
        [B, H_s, W_s, C_s] (before the final norm), one per stage."""
        if images.shape[1] != self.image_size or images.shape[2] != self.image_size:
            raise ValueError(f"Swin was built for {self.image_size}x{self.image_size} images (its windows and "
                             f"shift masks depend on the size) but got {images.shape[1]}x{images.shape[2]}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Conv(self.embed_dim, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, padding="VALID",
                    kernel_init=_p(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                    bias_init=_p(nn.initializers.zeros, ("embed",)), name="patch_embed", **kw)(
                        images.astype(self.dtype))
        x = LayerNorm(self.layernorm_eps, name="patch_norm", **kw)(x)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        rates = np.linspace(0.0, self.drop_path, sum(self.depths)).tolist()
        block_cls = remat_block(SwinBlock, self.remat)
        pyramid = []
        i = 0
        for s, depth in enumerate(self.depths):
            if s > 0:
                x = PatchMerging(self.stage_dims[s], self.layernorm_eps, self.version, name=f"stage{s}_downsample",
                                 **kw)(x)
            if self.scan_layers and depth > 0:
                x = self._scanned_stage(x, s, rates[i:i + depth], train)
            else:
                for b in range(depth):
                    x = block_cls(**self._block_kwargs(s, b), drop_path=rates[i + b], name=f"stage{s}_block{b}")(
                        x, train)
            i += depth
            pyramid.append(x)
        if features:
            return pyramid
        x = LayerNorm(self.layernorm_eps, name="norm", **kw)(x)
        feats = x.mean(axis=(1, 2))
        if self.num_classes == 0:
            return feats
        feats = nn.Dropout(self.dropout)(feats, deterministic=not train)
        return classifier_head(feats, self.num_classes, self.head_zero_init, **kw)




def _build(variant: str | None, overrides: dict) -> Swin:
    kwargs: dict = {}
    if variant:
        if variant not in SIZES:
            raise ValueError(f"unknown Swin variant {variant!r}; choose one of {list(SIZES)}")
        dim, depths, heads = SIZES[variant]
        kwargs.update(embed_dim=dim, depths=depths, num_heads=heads, drop_path=DROP_PATH[variant])
    kwargs.update(overrides)
    for key in ("depths", "num_heads"):
        if key in kwargs:
            kwargs[key] = tuple(int(v) for v in kwargs[key])
    return build_module(Swin, kwargs, "Swin")


@register_model("swin")
def swin(variant: str | None = "T", **overrides) -> Swin:
    """Any Swin v1: ``create_model("swin", variant="S", num_classes=10, image_size=32, ...)``."""
    return _build(variant, overrides)


for _size in SIZES:
    register_model(f"swin_{_size.lower()}", doc=f"Swin-{_size} (Liu et al. 2021)")(
        lambda _v=_size, **kw: _build(_v, kw))
    # Swin v2 at its 256px / window-8 ImageNet-1k setting (Liu et al. 2022, Table 2; timm swinv2_*_window8_256).
    register_model(f"swinv2_{_size.lower()}", doc=f"Swin-{_size} v2 (Liu et al. 2022)")(
        lambda _v=_size, **kw: _build(_v, {"version": 2, "image_size": 256, "window_size": 8, **kw}))


def count_params(model: Swin) -> int:
    s = model.image_size
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, s, s, model.in_channels)))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.meta.unbox(shapes)))
