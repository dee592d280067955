"""Vision Transformer (Dosovitskiy et al. 2021) and DeiT (Touvron et al. 2021).

``ViT`` maps images [B, H, W, C] (float, normalised as the config's preprocessing says) to logits
[B, num_classes] (or pooled features [B, width] when ``num_classes == 0``). A variant string such as
``"B/16"`` picks width/depth/heads/MLP from ``SIZES`` and the patch size.
"""
from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from vitjax.models.posemb import resize_posemb, sincos_2d_with_prefix
from vitjax.models.transformer import ACT_TOKENS, Encoder, LayerNorm, _p, classifier_head
from vitjax.models.registry import build_module, register_model

# name: (width, depth, heads, mlp_dim).
# Ti/S/B/L/H: Dosovitskiy et al. 2021, Table 1 (Ti and S as in Touvron et al. 2021, DeiT Table 1);
# g/G: Zhai et al. 2022 "Scaling Vision Transformers", Table 2; e: Chen et al. 2023 (PaLI), Table 1;
# So400m: Alabdulmohsin et al. 2023 "Getting ViT in Shape", sec. 5 (SoViT-400m/14).
SIZES: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "M": (512, 12, 8, 2048),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
    "g": (1408, 40, 16, 6144),
    "G": (1664, 48, 16, 8192),
    "e": (1792, 56, 16, 15360),
    "So400m": (1152, 27, 16, 4304),
}


def decode_variant(variant: str) -> dict[str, int]:
    """``"B/16"`` -> dict(width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16)."""
    m = re.fullmatch(r"([A-Za-z0-9]+)(?:/(\d+))?", variant or "")
    if not m or m.group(1) not in SIZES:
        raise ValueError(f"unknown ViT variant {variant!r}; expected SIZE/PATCH with SIZE in "
                         f"{list(SIZES)}, e.g. 'B/16'")
    width, depth, heads, mlp = SIZES[m.group(1)]
    out = dict(width=width, depth=depth, num_heads=heads, mlp_dim=mlp)
    if m.group(2):
        out["patch_size"] = int(m.group(2))
    return out


class ViT(nn.Module):
    """Vision Transformer.

    Attributes:
      num_classes: logits size; 0 returns the pooled, normalised features.
      image_size: input height/width the (learned) position embedding is built for.
      patch_size: side of the square patches.
      width, depth, num_heads, mlp_dim: transformer shape.
      pool: "token" (class token, as ViT/DeiT/timm) or "gap" (global average + norm, timm's fc_norm).
      posemb: "learned" or "sincos2d" (fixed; MAE's table, class position zero).
      distilled: DeiT: add a distillation token and a second head; logits = mean of the two heads.
      dropout, attn_dropout, drop_path: regularisation (drop_path rises linearly to this rate).
      remat: per-block rematerialisation policy ("none", "full", "dots_saveable", "save_attn_mlp_out").
      scan_layers: run the blocks as one ``nn.scan`` (parameters stacked under ``encoder/block0-{depth-1}``;
        ``vitjax.models.scan``): one block to compile instead of ``depth``.
      dynamic_img_size: accept any image size that is a multiple of the patch size (DINO's local
        crops): learned positions are resampled bicubically from the ``image_size`` grid (DINO's
        ``interpolate_pos_encoding``), sin-cos tables are built for the input's grid.
      attention, attention_options: the self-attention implementation and its options
        (``vitjax.models.attention``; "auto": the fastest exact one for the platform).
      dtype: compute dtype (e.g. bfloat16); param_dtype: storage dtype of the parameters.
    """
    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    pool: str = "token"
    posemb: str = "learned"
    distilled: bool = False
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.0
    layernorm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: bool = True
    head_zero_init: bool = True
    remat: str | bool | None = None
    scan_layers: bool = False
    dynamic_img_size: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size "
                             f"{self.patch_size}; pick an image size that is a multiple of the patch size")
        if self.pool not in ("token", "gap"):
            raise ValueError(f"pool must be 'token' or 'gap', got {self.pool!r}")
        if self.posemb not in ("learned", "sincos2d"):
            raise ValueError(f"posemb must be 'learned' or 'sincos2d', got {self.posemb!r}")
        if self.distilled and self.pool != "token":
            raise ValueError("a distilled (DeiT) model needs pool='token'")
        super().__post_init__()

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return n, n

    @property
    def num_prefix_tokens(self) -> int:
        return (1 if self.pool == "token" else 0) + (1 if self.distilled else 0)

    def embed(self, images, *, train: bool = False):
        """images [B, H, W, C] -> tokens [B, prefix + N, D] (patches + prefix tokens + positions)."""
        fits = images.ndim == 4 and (images.shape[1:3] == (self.image_size, self.image_size) or (
            self.dynamic_img_size and images.shape[1] % self.patch_size == 0
            and images.shape[2] % self.patch_size == 0 and min(images.shape[1:3]) > 0))
        if not fits:
            any_size = (f" or any multiple of the patch size {self.patch_size}" if self.dynamic_img_size
                        else "")
            raise ValueError(f"images of shape {images.shape} do not fit this model, built for "
                             f"[batch, {self.image_size}, {self.image_size}, {self.in_channels}]{any_size} "
                             f"(config.model.image_size); resize the input or rebuild the model")
        grid = (images.shape[1] // self.patch_size, images.shape[2] // self.patch_size)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2, padding="VALID",
                    kernel_init=_p(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                    bias_init=_p(nn.initializers.zeros, ("embed",)), name="patch_embed", **kw)(images)
        b = x.shape[0]
        x = x.reshape(b, -1, self.width)
        prefix = []
        if self.pool == "token":
            prefix.append(self.param("cls", _p(nn.initializers.zeros, (None, None, "embed")),
                                     (1, 1, self.width), self.param_dtype))
        if self.distilled:
            prefix.append(self.param("dist", _p(nn.initializers.zeros, (None, None, "embed")),
                                     (1, 1, self.width), self.param_dtype))
        if prefix:
            tok = jnp.concatenate(prefix, axis=1).astype(x.dtype)
            x = jnp.concatenate([jnp.broadcast_to(tok, (b,) + tok.shape[1:]), x], axis=1)
        n_pos = self.num_prefix_tokens + self.grid[0] * self.grid[1]
        if self.posemb == "learned":
            pos = self.param("pos_embedding", _p(nn.initializers.normal(0.02), (None, "posemb_len", "embed")),
                             (1, n_pos, self.width), self.param_dtype)
            if grid != self.grid:
                pos = resize_posemb(pos, self.num_prefix_tokens, self.grid, grid, method="cubic", antialias=False)
        else:
            pos = sincos_2d_with_prefix(self.width, *grid, self.num_prefix_tokens)[None]
        x = x + pos.astype(x.dtype)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        return nn.with_logical_constraint(x, ACT_TOKENS)

    def encode(self, x, *, train: bool = False, mask=None):
        """tokens [B, T, D] -> encoded tokens [B, T, D] (before the final norm)."""
        return Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, self.attn_dropout,
                       self.drop_path, self.layernorm_eps, self.activation, self.qkv_bias, self.remat,
                       self.dtype, self.param_dtype, self.attention, self.attention_options,
                       self.scan_layers, name="encoder")(x, train, mask)

    def pool_features(self, x, *, all_tokens: bool = False):
        """encoded tokens [B, T, D] -> pooled features [B, D] (or [B, 2, D] for DeiT's two tokens);
        ``all_tokens``: every token normalised, [B, T, D] (what MAE's decoder reads)."""
        norm = LayerNorm(self.layernorm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="encoder_norm")
        if all_tokens:
            return nn.with_logical_constraint(norm(x), ACT_TOKENS)
        if self.pool == "gap":
            return norm(x[:, self.num_prefix_tokens:].mean(axis=1))
        x = norm(x)
        return x[:, :2] if self.distilled else x[:, 0]

    def head(self, feats, name="head"):
        return classifier_head(feats, self.num_classes, self.head_zero_init, self.dtype, self.param_dtype, name)

    @nn.compact
    def __call__(self, images, *, train: bool = False, return_heads: bool = False, keep=None,
                 output: str = "logits"):
        """images [B, H, W, C] -> logits [B, num_classes].

        For DeiT (``distilled``) ``return_heads=True`` returns (class-head, distillation-head)
        logits separately; otherwise their mean (the paper's inference rule).
        ``keep`` [B, K] int: encode only these patches (after adding their positions), as MAE's
        encoder does. ``output``: "logits", "features" (pooled, before the head) or "tokens" (every
        token after the final norm, [B, prefix + K, D]).
        """
        x = self.embed(images, train=train)
        if keep is not None:
            p = self.num_prefix_tokens
            patches = jnp.take_along_axis(x[:, p:], keep[:, :, None].astype(jnp.int32), axis=1)
            x = nn.with_logical_constraint(jnp.concatenate([x[:, :p], patches], axis=1), ACT_TOKENS)
        x = self.encode(x, train=train)
        if output == "tokens":
            return self.pool_features(x, all_tokens=True)
        feats = self.pool_features(x)
        if output == "features":
            return feats
        if self.num_classes == 0:
            return feats
        if not self.distilled:
            return self.head(feats)
        cls_logits = self.head(feats[:, 0], "head")
        dist_logits = self.head(feats[:, 1], "head_dist")
        if return_heads:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2




def _build(defaults: dict, variant: str | None, overrides: dict) -> ViT:
    kwargs = dict(defaults)
    if variant:
        kwargs.update(decode_variant(variant))
    kwargs.update(overrides)
    return build_module(ViT, kwargs, "ViT")


@register_model("vit")
def vit(variant: str | None = "B/16", **overrides) -> ViT:
    """Any ViT: ``create_model("vit", variant="S/16", num_classes=10, image_size=32)``."""
    return _build({}, variant, overrides)


@register_model("deit")
def deit(variant: str | None = "B/16", **overrides) -> ViT:
    """DeiT with distillation token: ``create_model("deit", variant="S/16")``."""
    return _build({"distilled": True}, variant, overrides)


def _register_named():
    for size in ("Ti", "S", "M", "B", "L", "H", "g", "G", "e", "So400m"):
        for patch in (8, 14, 16, 32):
            for family, fn in (("vit", vit), ("deit", deit)):
                if family == "deit" and size not in ("Ti", "S", "B"):
                    continue
                # "G" would collide with "g" in lower case; open_clip calls it bigG.
                name = f"{family}_{'bigg' if size == 'G' else size.lower()}{patch}"
                register_model(name, doc=f"{family.upper()}-{size}/{patch}")(
                    lambda _v=f"{size}/{patch}", _f=fn, **kw: _f(_v, **kw))


_register_named()
