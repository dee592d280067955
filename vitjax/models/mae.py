"""Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners").

    images -> patches + fixed 2-D sin-cos positions -> keep a random 25% per image
           -> ViT encoder on the visible patches only (+ class token)
           -> light decoder: visible tokens + learned mask tokens, unshuffled, + decoder positions
           -> per-patch pixel predictions; loss = MSE on the masked patches only

Masking has static shapes under ``jit``: each image keeps exactly ``int(L * (1 - mask_ratio))``
patches, chosen by a per-sample argsort of uniform noise (the paper's trick), so the encoder's
sequence length is fixed and every op stays batch-parallel (sharded along ``act_batch``: data/FSDP).

Parameters: ``encoder/...`` is exactly a vitjax ``ViT`` (class token, sin-cos positions, no head),
so the pretrained encoder exports to timm/HF ViT and initialises a classifier for fine-tuning;
``decoder_embed``, ``mask_token``, ``decoder/block{i}``, ``decoder_norm`` and ``decoder_pred`` are
the decoder (HF ``ViTMAEForPreTraining`` has the same parts; see ``vitjax.interop.mae``).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vitjax.models.posemb import sincos_2d_with_prefix
from vitjax.models.transformer import ACT_TOKENS, Encoder, LayerNorm, _p
from vitjax.models.vit import ViT, decode_variant
from vitjax.models.registry import build_module, register_model


def random_masking(noise: jax.Array, mask_ratio: float):
    """noise [B, L] -> (ids_keep [B, K], mask [B, L] with 1 = removed, ids_restore [B, L]).

    The K = int(L * (1 - mask_ratio)) patches with the smallest noise are kept (MAE's
    ``random_masking``; HF ViTMAE takes the same ``noise`` argument, which is what makes the two
    implementations comparable number for number).
    """
    length = noise.shape[1]
    keep = int(length * (1 - mask_ratio))
    ids_shuffle = jnp.argsort(noise, axis=1)
    ids_restore = jnp.argsort(ids_shuffle, axis=1)
    mask = (ids_restore >= keep).astype(jnp.float32)
    return ids_shuffle[:, :keep], mask, ids_restore


def patchify(images: jax.Array, patch: int) -> jax.Array:
    """images [B, H, W, C] -> [B, (H/p)(W/p), p*p*C], patches row-major, pixels (row, col, channel)
    inside a patch (MAE's and HF's ``patchify`` order)."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: jax.Array, patch: int, channels: int) -> jax.Array:
    """Inverse of ``patchify`` for a square image: [B, L, p*p*C] -> [B, H, W, C]."""
    b, length, _ = patches.shape
    g = int(round(length ** 0.5))
    x = patches.reshape(b, g, g, patch, patch, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, g * patch, g * patch, channels)


def pixel_targets(images: jax.Array, patch: int, norm_pix: bool) -> jax.Array:
    """The regression target [B, L, p*p*C]: the patch's pixels, normalised per patch by its own mean
    and (unbiased, as in the reference code) variance when ``norm_pix`` (the paper's default)."""
    t = patchify(images.astype(jnp.float32), patch)
    if norm_pix:
        mean = t.mean(axis=-1, keepdims=True)
        var = t.var(axis=-1, keepdims=True, ddof=1)
        t = (t - mean) / jnp.sqrt(var + 1e-6)
    return t


def patch_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """[B, L]: mean squared error of each patch's prediction."""
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target), axis=-1)


def masked_mean(per_patch: jax.Array, weights: jax.Array, axis=None) -> jax.Array:
    """Mean of ``per_patch`` over the patches where ``weights`` is 1 (over ``axis``; all by default)."""
    return jnp.sum(per_patch * weights, axis=axis) / jnp.maximum(jnp.sum(weights, axis=axis), 1.0)


def mae_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error per patch, averaged over the removed patches only."""
    return masked_mean(patch_mse(pred, target), mask)


class MAE(nn.Module):
    """Masked autoencoder with a vitjax ViT encoder.

    Attributes:
      image_size, patch_size, in_channels, width, depth, num_heads, mlp_dim: the encoder ViT.
      decoder_width, decoder_depth, decoder_heads, decoder_mlp_dim: the decoder (paper: 512 wide,
        8 blocks, 16 heads; Table 1 shows a 1-block decoder already works for fine-tuning).
      mask_ratio: fraction of patches removed (paper: 0.75).
      norm_pix_loss: regress per-patch normalised pixels (paper's default, better representations).
      drop_path, layernorm_eps, activation, qkv_bias, remat, scan_layers, dtype, param_dtype, attention,
        attention_options: as for ViT, both towers.
    """
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    decoder_width: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    decoder_mlp_dim: int = 2048
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    drop_path: float = 0.0
    layernorm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: bool = True
    remat: str | bool | None = None
    scan_layers: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "auto"
    attention_options: Any = None

    def __post_init__(self):
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"model.mask_ratio={self.mask_ratio} must be in (0, 1): it is the fraction of "
                             f"patches removed (the paper uses 0.75)")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.num_visible < 1:
            raise ValueError(f"model.mask_ratio={self.mask_ratio} leaves no visible patch out of "
                             f"{self.num_patches} (int({self.num_patches} x (1 - {self.mask_ratio})) = 0); "
                             f"lower the mask ratio or use smaller patches")
        if self.decoder_width % self.decoder_heads:
            raise ValueError(f"decoder_width {self.decoder_width} is not divisible by decoder_heads "
                             f"{self.decoder_heads}")
        super().__post_init__()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_visible(self) -> int:
        return int(self.num_patches * (1 - self.mask_ratio))

    @property
    def num_classes(self) -> int:
        return 0

    def encoder_config(self) -> dict:
        """The ViT the encoder is (for export, probing and fine-tuning)."""
        return dict(num_classes=0, image_size=self.image_size, patch_size=self.patch_size,
                    in_channels=self.in_channels, width=self.width, depth=self.depth,
                    num_heads=self.num_heads, mlp_dim=self.mlp_dim, pool="token", posemb="sincos2d",
                    drop_path=self.drop_path, layernorm_eps=self.layernorm_eps, activation=self.activation,
                    qkv_bias=self.qkv_bias, remat=self.remat, scan_layers=self.scan_layers, dtype=self.dtype,
                    param_dtype=self.param_dtype, attention=self.attention, attention_options=self.attention_options)

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = ViT(**self.encoder_config())
        self.decoder_embed = nn.Dense(
            self.decoder_width, kernel_init=_p(nn.initializers.xavier_uniform(), ("embed", None)),
            bias_init=_p(nn.initializers.zeros, (None,)), **kw)
        self.mask_token = self.param("mask_token", _p(nn.initializers.normal(0.02), (None, None, None)),
                                     (1, 1, self.decoder_width), self.param_dtype)
        self.decoder = Encoder(self.decoder_depth, self.decoder_heads, self.decoder_mlp_dim, 0.0, 0.0, 0.0,
                               self.layernorm_eps, self.activation, self.qkv_bias, self.remat, **kw,
                               attention=self.attention, attention_options=self.attention_options,
                               scan_layers=self.scan_layers)
        self.decoder_norm = LayerNorm(self.layernorm_eps, **kw)
        self.decoder_pred = nn.Dense(
            self.patch_size ** 2 * self.in_channels,
            kernel_init=_p(nn.initializers.xavier_uniform(), (None, None)),
            bias_init=_p(nn.initializers.zeros, (None,)), **kw)

    def decoder_pos_table(self) -> np.ndarray:
        """[1 + L, decoder_width]: the decoder's fixed sin-cos table, zero for the class token."""
        g = self.image_size // self.patch_size
        return sincos_2d_with_prefix(self.decoder_width, g, g, 1)

    def decode(self, latent: jax.Array, ids_restore: jax.Array, *, train: bool = False) -> jax.Array:
        """latent [B, 1 + K, D] (class token first) -> pixel predictions [B, L, p*p*C]."""
        x = self.decoder_embed(latent)
        b, length = ids_restore.shape
        fill = jnp.broadcast_to(self.mask_token.astype(x.dtype), (b, length - (x.shape[1] - 1), x.shape[-1]))
        body = jnp.concatenate([x[:, 1:], fill], axis=1)
        body = jnp.take_along_axis(body, ids_restore[:, :, None], axis=1)      # unshuffle
        x = jnp.concatenate([x[:, :1], body], axis=1)
        x = nn.with_logical_constraint(x + self.decoder_pos_table()[None].astype(x.dtype), ACT_TOKENS)
        x = self.decoder_norm(self.decoder(x, train))
        return self.decoder_pred(x)[:, 1:]

    def __call__(self, images: jax.Array, *, train: bool = False, noise: jax.Array | None = None):
        """images [B, H, W, C] -> dict(pred [B, L, p*p*C], mask [B, L] (1 = removed),
        ids_restore [B, L]). ``noise`` [B, L] fixes the masking; otherwise it is drawn from the
        ``masking`` rng stream."""
        b = images.shape[0]
        if noise is None:
            # Shapes are all init needs; training always passes a "masking" rng (objectives/mae.py).
            key = jax.random.key(0) if self.is_initializing() and not self.has_rng("masking") \
                else self.make_rng("masking")
            noise = jax.random.uniform(key, (b, self.num_patches))
        ids_keep, mask, ids_restore = random_masking(noise, self.mask_ratio)
        latent = self.encoder(images, keep=ids_keep, output="tokens", train=train)
        pred = self.decode(latent, ids_restore, train=train)
        return {"pred": pred, "mask": mask, "ids_restore": ids_restore}

    def all_tokens_baseline(self, images: jax.Array, noise: jax.Array) -> dict:
        """The design MAE improves on, for benchmarks (experiments/bench_mae.py): the encoder runs on
        all L patches, the removed ones blanked (the cost of mask tokens in the encoder, as in
        BEiT/SimMIM), and the decoder reads all of them. Same parameters, same outputs' shapes."""
        _, mask, _ = random_masking(noise, self.mask_ratio)
        g, p = self.image_size // self.patch_size, self.patch_size
        keep_px = jnp.repeat(jnp.repeat((1 - mask).reshape(-1, g, g), p, 1), p, 2)[..., None]
        latent = self.encoder(images * keep_px.astype(images.dtype), output="tokens", train=True)
        x = self.decoder_embed(latent)
        x = self.decoder_norm(self.decoder(x + self.decoder_pos_table()[None].astype(x.dtype), True))
        return {"pred": self.decoder_pred(x)[:, 1:], "mask": mask}

    def features(self, images: jax.Array, pool: str = "cls") -> jax.Array:
        """Representation of whole (unmasked) images for probes: the normalised class token
        ("cls", the paper's linear-probe feature) or the mean of the patch tokens ("gap")."""
        tokens = self.encoder(images, output="tokens", train=False)
        return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(axis=1)


# Paper's decoder (Sec. 3, Table 1): 8 blocks, 512 wide, 16 heads.
DECODER_DEFAULTS = dict(decoder_width=512, decoder_depth=8, decoder_heads=16, decoder_mlp_dim=2048)


@register_model("mae")
def mae(variant: str | None = "B/16", **overrides) -> MAE:
    """MAE with a ViT encoder of ``variant`` (e.g. ``"L/16"``) and the paper's decoder."""
    kwargs = dict(DECODER_DEFAULTS)
    if variant:
        v = decode_variant(variant)
        kwargs.update({k: v[k] for k in ("width", "depth", "num_heads", "mlp_dim", "patch_size") if k in v})
    kwargs.update(overrides)
    return build_module(MAE, kwargs, "MAE")


for _size, _patch in (("B", 16), ("L", 16), ("H", 14)):
    register_model(f"mae_vit_{_size.lower()}{_patch}", doc=f"MAE ViT-{_size}/{_patch}")(
        lambda _v=f"{_size}/{_patch}", **kw: mae(_v, **kw))
