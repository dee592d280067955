"""CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023): an image tower and a text tower whose
L2-normalised outputs share one embedding space.

``CLIP`` maps images [B, H, W, C] and token ids [B, T] to unit vectors [B, embed_dim] each, plus the
logit scale (and, for SigLIP, the logit bias) the contrastive losses in ``vitjax.losses`` use:

    out = model.apply({"params": p}, images, tokens)      # {"img", "txt", "scale", "bias"}
    zimg = model.apply({"params": p}, images, method="encode_image")
    ztxt = model.apply({"params": p}, tokens, method="encode_text")

The image tower is vitjax's ``ViT`` (``ClipImageTower`` adds the two things CLIP/SigLIP image towers
have that a classifier does not: OpenAI's pre-transformer LayerNorm ``ln_pre`` and SigLIP's attention-
pooling "MAP" head). The text tower is a causal pre-norm transformer with learned token and position
embeddings that reads out the end-of-text token's output (``text_pool``):

* ``"argmax"``: the position of the largest token id -- OpenAI/open_clip, whose BPE gives
  ``<end_of_text>`` the largest id (49407 of 49408);
* ``"eos"``: the first position holding ``eos_id`` (HF ``CLIPTextModel``; vitjax's byte tokenizer,
  whose end token is 2);
* ``"last"``: the last position (SigLIP's bidirectional text tower, fixed-length padded text).

Parameter layout (what ``vitjax.interop.clip`` maps to open_clip / HF ``CLIPModel``)::

    img/...        the ViT (patch_embed, cls, pos_embedding, ln_pre, encoder/block{i}, encoder_norm,
                   map_probe + map/ for pool="map")
    img_proj/kernel [Dv, E]        txt_proj/kernel [Dt, E]          (no bias, as open_clip)
    txt/token_embed/embedding [V, Dt]   txt/pos_embedding [T, Dt]   txt/encoder/...  txt/encoder_norm
    logits/scale []  log of the logit scale        logits/bias []  (SigLIP only)

``logits/scale`` and ``logits/bias`` sit under names that ``vitjax.training.optim.decay_mask`` already
exempts from weight decay (open_clip exempts ``logit_scale`` too).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vitjax.models.transformer import ACT_TOKENS, Attention, Encoder, LayerNorm, MlpBlock, _p
from vitjax.models.vit import SIZES as VIT_SIZES
from vitjax.models.vit import ViT, decode_variant
from vitjax.models.registry import build_module, register_model

# OpenAI CLIP / open_clip text towers: name -> (width, depth, heads), mlp 4x width; and the shared
# embedding width per image variant. Radford et al. 2021, Table 20 (ViT-B/32, B/16: text 512 wide,
# 8 heads, 12 layers, embedding 512; ViT-L/14: text 768 wide, 12 heads, embedding 768), the same as
# open_clip's ViT-B-32.json / ViT-B-16.json / ViT-L-14.json.
TEXT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (384, 12, 6),
    "B": (512, 12, 8),
    "L": (768, 12, 12),
    "H": (1024, 24, 16),
}
EMBED_DIMS: dict[str, int] = {"S": 384, "B": 512, "L": 768, "H": 1024}

MAX_LOGIT_SCALE = 100.0   # Radford et al. 2021, sec. 2.5: the temperature is clipped so logits scale <= 100
CLIP_LOGIT_SCALE_INIT = math.log(1 / 0.07)
SIGLIP_LOGIT_SCALE_INIT = math.log(10.0)   # Zhai et al. 2023, sec. 3.2: t' = log 10, b = -10
SIGLIP_LOGIT_BIAS_INIT = -10.0


class ClipImageTower(ViT):
    """vitjax ``ViT`` (``num_classes=0``: pooled features) with CLIP's extra pieces.

    Attributes (besides ViT's):
      pre_norm: LayerNorm on the embedded tokens before the first block (OpenAI CLIP's ``ln_pre``).
      attn_pool: pool with a learned query attending over all final tokens (big_vision's MAP head,
        Lee et al. 2019; SigLIP's image pooling); needs ``pool="gap"`` (no class token).
    """
    pre_norm: bool = False
    attn_pool: bool = False

    def __post_init__(self):
        if self.attn_pool and self.pool != "gap":
            raise ValueError("attn_pool (MAP head) pools all tokens: build the tower with pool='gap'")
        super().__post_init__()

    def embed(self, images, *, train: bool = False):
        x = super().embed(images, train=train)
        if self.pre_norm:
            x = LayerNorm(self.layernorm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                          name="ln_pre")(x)
        return x

    def pool_features(self, x, **kw):
        if not self.attn_pool or kw.get("all_tokens"):
            return super().pool_features(x, **kw)
        kw_dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = LayerNorm(self.layernorm_eps, name="encoder_norm", **kw_dt)(x)
        probe = self.param("map_probe", _p(nn.initializers.xavier_uniform(), (None, None, "embed")),
                           (1, 1, self.width), self.param_dtype)
        q = jnp.broadcast_to(probe.astype(x.dtype), (x.shape[0], 1, self.width))
        y = Attention(self.num_heads, name="map_attn", **kw_dt)(q, x)
        z = LayerNorm(self.layernorm_eps, name="map_norm", **kw_dt)(y)
        y = y + MlpBlock(self.mlp_dim, activation=self.activation, name="map_mlp", **kw_dt)(z)
        return y[:, 0]


class TextTransformer(nn.Module):
    """tokens [B, T] int -> pooled text features [B, width] (after the final LayerNorm).

    Attributes:
      vocab_size: token embedding rows; must equal the tokenizer's vocabulary size.
      context_length: rows of the learned position table; inputs may be shorter, not longer.
      pool: "argmax" | "eos" | "last" (see the module docstring); eos_id: the end token for "eos".
      causal: causal self-attention (CLIP); False: bidirectional (SigLIP).
    """
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_dim: int = 2048
    pool: str = "argmax"
    eos_id: int = 49407
    causal: bool = True
    dropout: float = 0.0
    layernorm_eps: float = 1e-5
    activation: str = "gelu"
    remat: str | bool | None = None
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None
    scan_layers: bool = False

    def __post_init__(self):
        if self.pool not in ("argmax", "eos", "last"):
            raise ValueError(f"text pool must be 'argmax', 'eos' or 'last', got {self.pool!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, tokens, *, train: bool = False):
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length] int ids, got shape {tokens.shape}")
        t = tokens.shape[1]
        if t > self.context_length:
            raise ValueError(f"tokens of length {t} exceed the text tower's context_length="
                             f"{self.context_length}; tokenize with context_length <= {self.context_length}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # open_clip's init: token table N(0, 0.02), positions N(0, 0.01).
        x = nn.Embed(self.vocab_size, self.width, embedding_init=_p(nn.initializers.normal(0.02),
                                                                    ("vocab", "embed")),
                     name="token_embed", **kw)(tokens.astype(jnp.int32))
        pos = self.param("pos_embedding", _p(nn.initializers.normal(0.01), ("posemb_len", "embed")),
                         (self.context_length, self.width), self.param_dtype)
        x = x + pos[None, :t].astype(x.dtype)
        x = nn.Dropout(self.dropout)(x, deterministic=not train)
        x = nn.with_logical_constraint(x, ACT_TOKENS)
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None] if self.causal else None
        x = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout, 0.0, 0.0, self.layernorm_eps,
                    self.activation, True, self.remat, self.dtype, self.param_dtype, self.attention,
                    self.attention_options, self.scan_layers, name="encoder")(x, train, mask)
        x = LayerNorm(self.layernorm_eps, name="encoder_norm", **kw)(x)
        if self.pool == "last":
            return x[:, -1]
        if self.pool == "argmax":
            idx = jnp.argmax(tokens, axis=-1)
        else:   # first end token; a row without one reads position 0
            idx = jnp.argmax(tokens == self.eos_id, axis=-1)
        return jnp.take_along_axis(x, idx[:, None, None].astype(jnp.int32), axis=1)[:, 0]


class LogitScale(nn.Module):
    """The learned temperature, stored as its log, and (SigLIP) the learned logit bias.

    Returns (scale = exp(min(log_scale, log 100)), bias or None)."""
    scale_init: float = CLIP_LOGIT_SCALE_INIT
    bias_init: float | None = None
    max_scale: float = MAX_LOGIT_SCALE

    @nn.compact
    def __call__(self):
        log_scale = self.param("scale", _p(nn.initializers.constant(self.scale_init), ()), (), jnp.float32)
        scale = jnp.exp(jnp.minimum(log_scale, math.log(self.max_scale)))
        bias = None
        if self.bias_init is not None:
            bias = self.param("bias", _p(nn.initializers.constant(self.bias_init), ()), (), jnp.float32)
        return scale, bias


def l2_normalize(x, eps: float = 1e-6):
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


class CLIP(nn.Module):
    """Two towers + projections + learned logit scale (and bias).

    Attributes:
      embed_dim: width of the shared embedding space.
      image_size, patch_size, in_channels, vision_width/depth/heads/mlp_dim: the ViT image tower.
      vision_pool: "token" (class token: OpenAI CLIP), "gap" or "map" (attention pool: SigLIP).
      vision_pre_norm: OpenAI's ``ln_pre`` before the first block.
      text_*: the text tower (``TextTransformer``); text_pool / eos_id / text_causal as there.
      activation: "gelu" (open_clip default) or "quick_gelu" (OpenAI weights), both towers.
      layernorm_eps: 1e-5 as PyTorch's nn.LayerNorm (open_clip, HF CLIP).
      logit_scale_init: initial log scale (log(1/0.07) for CLIP, log 10 for SigLIP);
      logit_bias_init: None (CLIP) or the initial bias (SigLIP: -10).
      attention, attention_options: both towers' self-attention (``vitjax.models.attention``).
      scan_layers: both towers' blocks as one ``nn.scan`` each (``vitjax.models.scan``).
    """
    embed_dim: int = 512
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    vision_width: int = 768
    vision_depth: int = 12
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    vision_pool: str = "token"
    vision_pre_norm: bool = True
    vision_posemb: str = "learned"
    text_vocab_size: int = 49408
    text_context_length: int = 77
    text_width: int = 512
    text_depth: int = 12
    text_heads: int = 8
    text_mlp_dim: int = 2048
    text_pool: str = "argmax"
    eos_id: int = 49407
    text_causal: bool = True
    activation: str = "gelu"
    layernorm_eps: float = 1e-5
    dropout: float = 0.0
    drop_path: float = 0.0
    logit_scale_init: float = CLIP_LOGIT_SCALE_INIT
    logit_bias_init: float | None = None
    remat: str | bool | None = None
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None

    def __post_init__(self):
        if self.vision_pool not in ("token", "gap", "map"):
            raise ValueError(f"vision_pool must be 'token', 'gap' or 'map', got {self.vision_pool!r}")
        super().__post_init__()

    @nn.nowrap    # not a module method: callable on an unbound model (returns a top-level module)
    def image_tower_module(self) -> ClipImageTower:
        """The image tower as a module of its own (``params["img"]`` is its parameter tree): e.g. to
        load a pretrained ViT into it for LiT with ``vitjax.interop.vit.import_pretrained(path,
        model.image_tower_module(), drop_head=True)`` (build the CLIP with ``vision_pre_norm=False``
        so that the tower is exactly a vitjax/timm ViT)."""
        return ClipImageTower(
            num_classes=0, image_size=self.image_size, patch_size=self.patch_size,
            in_channels=self.in_channels, width=self.vision_width, depth=self.vision_depth,
            num_heads=self.vision_heads, mlp_dim=self.vision_mlp_dim,
            pool="token" if self.vision_pool == "token" else "gap", attn_pool=self.vision_pool == "map",
            pre_norm=self.vision_pre_norm, posemb=self.vision_posemb, dropout=self.dropout,
            drop_path=self.drop_path, layernorm_eps=self.layernorm_eps, activation=self.activation,
            remat=self.remat, scan_layers=self.scan_layers, dtype=self.dtype, param_dtype=self.param_dtype,
            attention=self.attention, attention_options=self.attention_options)

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.img = self.image_tower_module()
        self.txt = TextTransformer(
            self.text_vocab_size, self.text_context_length, self.text_width, self.text_depth,
            self.text_heads, self.text_mlp_dim, self.text_pool, self.eos_id, self.text_causal,
            self.dropout, self.layernorm_eps, self.activation, self.remat, **kw, attention=self.attention,
            attention_options=self.attention_options, scan_layers=self.scan_layers)
        # open_clip's init: projections N(0, width^-0.5).
        self.img_proj = nn.Dense(self.embed_dim, use_bias=False, name="img_proj",
                                 kernel_init=_p(nn.initializers.normal(self.vision_width ** -0.5),
                                                ("embed", "proj")), **kw)
        self.txt_proj = nn.Dense(self.embed_dim, use_bias=False, name="txt_proj",
                                 kernel_init=_p(nn.initializers.normal(self.text_width ** -0.5),
                                                ("embed", "proj")), **kw)
        self.logits = LogitScale(self.logit_scale_init, self.logit_bias_init)

    # Properties the trainer / objectives read from image models.
    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_size // self.patch_size
        return n, n

    def image_features(self, images, *, train: bool = False):
        """images [B, H, W, C] -> projected, un-normalised image features [B, embed_dim]."""
        return self.img_proj(self.img(images, train=train))

    def text_features(self, tokens, *, train: bool = False):
        """tokens [B, T] -> projected, un-normalised text features [B, embed_dim]."""
        return self.txt_proj(self.txt(tokens, train=train))

    def encode_image(self, images, *, train: bool = False):
        """images [B, H, W, C] -> unit vectors [B, embed_dim] (float32)."""
        return nn.with_logical_constraint(l2_normalize(self.image_features(images, train=train)),
                                          ("act_batch", None))

    def encode_text(self, tokens, *, train: bool = False):
        """tokens [B, T] -> unit vectors [B, embed_dim] (float32)."""
        return nn.with_logical_constraint(l2_normalize(self.text_features(tokens, train=train)),
                                          ("act_batch", None))

    def logit_params(self):
        """(scale, bias or None): the clamped exp(logit scale) and SigLIP's bias."""
        return self.logits()

    def example_inputs(self, batch_size: int = 1) -> tuple:
        """Shapes of ``model.init``'s inputs: images and a full-length token batch."""
        s = self.image_size
        return (jax.ShapeDtypeStruct((batch_size, s, s, self.in_channels), jnp.float32),
                jax.ShapeDtypeStruct((batch_size, self.text_context_length), jnp.int32))

    def __call__(self, images, tokens, *, train: bool = False):
        scale, bias = self.logits()
        return {"img": self.encode_image(images, train=train), "txt": self.encode_text(tokens, train=train),
                "scale": scale, "bias": bias}




def decode_clip_variant(variant: str) -> dict[str, Any]:
    """``"B/16"`` -> the OpenAI/open_clip image tower B/16 + text tower B + embed_dim 512."""
    v = decode_variant(variant)
    size = variant.split("/")[0]
    if size not in TEXT_SIZES:
        raise ValueError(f"no CLIP text tower is defined for image size {size!r}; "
                         f"CLIP sizes: {sorted(TEXT_SIZES)} (ViT sizes: {list(VIT_SIZES)})")
    tw, td, th = TEXT_SIZES[size]
    out = dict(vision_width=v["width"], vision_depth=v["depth"], vision_heads=v["num_heads"],
               vision_mlp_dim=v["mlp_dim"], text_width=tw, text_depth=td, text_heads=th,
               text_mlp_dim=4 * tw, embed_dim=EMBED_DIMS[size])
    if "patch_size" in v:
        out["patch_size"] = v["patch_size"]
    return out


def _build(defaults: dict, variant: str | None, overrides: dict) -> CLIP:
    kwargs = {}
    if variant:
        kwargs.update(decode_clip_variant(variant))
    kwargs.update(defaults)
    kwargs.update(overrides)
    return build_module(CLIP, kwargs, "CLIP")


# SigLIP (Zhai et al. 2023, sec. 4 / big_vision's siglip configs): MAP-pooled image tower without a
# class token or ln_pre, bidirectional text tower read at its last position, 64 tokens, a 32k
# SentencePiece vocabulary, embedding = text width; logit scale log 10 and bias -10.
SIGLIP_DEFAULTS = dict(vision_pool="map", vision_pre_norm=False, text_pool="last", text_causal=False,
                       text_context_length=64, text_vocab_size=32000, layernorm_eps=1e-6,
                       activation="gelu_tanh", logit_scale_init=SIGLIP_LOGIT_SCALE_INIT,
                       logit_bias_init=SIGLIP_LOGIT_BIAS_INIT)


@register_model("clip")
def clip(variant: str | None = "B/16", **overrides) -> CLIP:
    """Any CLIP: ``create_model("clip", variant="B/32", activation="quick_gelu")``."""
    return _build({}, variant, overrides)


@register_model("siglip")
def siglip(variant: str | None = "B/16", **overrides) -> CLIP:
    """SigLIP two towers: ``create_model("siglip", variant="B/16")``."""
    defaults = dict(SIGLIP_DEFAULTS)
    if variant:
        size = variant.split("/")[0]
        if size in TEXT_SIZES:   # SigLIP's text tower has the image tower's width; embed = that width
            v = decode_variant(variant)
            defaults.update(text_width=v["width"], text_heads=v["num_heads"], text_mlp_dim=v["mlp_dim"],
                            text_depth=v["depth"], embed_dim=v["width"])
    return _build(defaults, variant, overrides)


def _register_named():
    # The open_clip/OpenAI set; "-quickgelu" variants are the activation OpenAI's weights need.
    for size, patch in (("B", 32), ("B", 16), ("L", 14)):
        for quick in (False, True):
            name = f"clip_{size.lower()}{patch}" + ("_quickgelu" if quick else "")
            extra = {"activation": "quick_gelu"} if quick else {}
            register_model(name, doc=f"CLIP ViT-{size}/{patch}{' (QuickGELU)' if quick else ''}")(
                lambda _v=f"{size}/{patch}", _e=extra, **kw: clip(_v, **{**_e, **kw}))
    for size, patch in (("B", 16), ("L", 16)):
        register_model(f"siglip_{size.lower()}{patch}", doc=f"SigLIP ViT-{size}/{patch}")(
            lambda _v=f"{size}/{patch}", **kw: siglip(_v, **kw))


_register_named()
