"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"): a ViT
backbone and the DINO projection head.

    images -> ViT (class token, no classifier) -> [B, D]
           -> head: Linear-GELU-Linear-GELU-Linear (hidden 2048, bottleneck 256)
           -> L2-normalise -> weight-normalised Linear (no bias) -> [B, K] (K = 65,536)

The student and the teacher are two copies of this model (same parameter tree): the student is
trained, the teacher is an exponential moving average of it (``vitjax.objectives.dino``). The
backbone takes any multiple of the patch size (``dynamic_img_size``), so the same parameters run on
the 224-pixel global crops and the 96-pixel local crops.

Parameters: ``backbone/...`` is exactly a vitjax ``ViT`` (no head), so the backbone exports to timm
and HF ViT (``vitjax.export``) and initialises a classifier for fine-tuning (``init.encoder_only``);
``head/...`` is the projection head (official code: ``head.mlp.{0,2,4}``, ``head.last_layer.weight_v``).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vitjax.models.transformer import _p
from vitjax.models.vit import ViT, decode_variant
from vitjax.models.registry import build_module, register_model


def _torch_linear_init(key, shape, dtype=jnp.float32):
    """PyTorch's default ``nn.Linear`` weight init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): DINO's
    weight-normalised last layer keeps it (the head's other layers get trunc-normal(0.02))."""
    bound = 1.0 / jnp.sqrt(shape[0])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class DINOHead(nn.Module):
    """The projection head: ``num_layers`` linear layers (GELU between; the last one maps to the
    bottleneck), L2 normalisation, then a weight-normalised linear layer to ``out_dim`` prototypes.

    ``norm_last_layer`` (DINO's default): the last layer's weight is v / ||v|| per output with the
    gain fixed at 1 (the official code freezes ``weight_g``), which the paper finds stabilises
    training; otherwise a trainable gain g (initialised to 1) multiplies it.
    """
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    norm_last_layer: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        init = nn.initializers.truncated_normal(0.02, lower=-2.0 / 0.02, upper=2.0 / 0.02)
        dims = [self.hidden_dim] * (self.num_layers - 1) + [self.bottleneck_dim]
        for i, d in enumerate(dims):
            names = ("embed", "mlp") if i == 0 else ("mlp", None) if i == 1 else (None, None)
            x = nn.Dense(d, kernel_init=_p(init, names), bias_init=_p(nn.initializers.zeros, names[1:]),
                         name=f"mlp{i}", **kw)(x)
            if i < len(dims) - 1:
                x = nn.gelu(x, approximate=False)
        x = x.astype(jnp.float32)
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        v = self.param("last_layer_v", _p(_torch_linear_init, (None, "classes")),
                       (self.bottleneck_dim, self.out_dim), self.param_dtype)
        v = v.astype(jnp.float32)
        w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-12)
        if not self.norm_last_layer:
            g = self.param("last_layer_g", _p(nn.initializers.ones, ("classes",)), (self.out_dim,),
                           self.param_dtype)
            w = w * g.astype(jnp.float32)
        return x @ w


class DINO(nn.Module):
    """A ViT backbone with the DINO head (one network; the objective holds two copies).

    Attributes:
      image_size (the global crop size), patch_size, in_channels, width, depth, num_heads, mlp_dim,
        drop_path (paper: 0.1), layernorm_eps, activation, qkv_bias, remat, dtype, param_dtype:
        the backbone ViT (class token, learned positions, any input size).
      out_dim: K, the number of prototypes (paper: 65,536).
      head_hidden_dim, head_bottleneck_dim, head_layers, norm_last_layer: the head (2048, 256, 3, True).
    """
    image_size: int = 224
    patch_size: int = 16
    in_channels: int = 3
    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    drop_path: float = 0.1
    layernorm_eps: float = 1e-6
    activation: str = "gelu"
    qkv_bias: bool = True
    out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    norm_last_layer: bool = True
    remat: str | bool | None = None
    scan_layers: bool = False                # the backbone's blocks as one nn.scan (vitjax.models.scan)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention: str | None = "auto"           # the backbone's self-attention (vitjax.models.attention)
    attention_options: Any = None

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.out_dim < 2:
            raise ValueError(f"model.out_dim={self.out_dim}: DINO needs at least 2 prototypes (paper: 65536)")
        if self.head_layers < 1:
            raise ValueError(f"model.head_layers={self.head_layers} must be >= 1 (paper: 3)")
        super().__post_init__()

    @property
    def num_classes(self) -> int:
        return 0

    def backbone_config(self) -> dict:
        """The ViT the backbone is (for export, probing and fine-tuning)."""
        return dict(num_classes=0, image_size=self.image_size, patch_size=self.patch_size,
                    in_channels=self.in_channels, width=self.width, depth=self.depth,
                    num_heads=self.num_heads, mlp_dim=self.mlp_dim, pool="token", posemb="learned",
                    drop_path=self.drop_path, layernorm_eps=self.layernorm_eps, activation=self.activation,
                    qkv_bias=self.qkv_bias, remat=self.remat, scan_layers=self.scan_layers, dynamic_img_size=True,
                    dtype=self.dtype, param_dtype=self.param_dtype, attention=self.attention,
                    attention_options=self.attention_options)

    def setup(self):
        self.backbone = ViT(**self.backbone_config())
        self.head = DINOHead(self.out_dim, self.head_hidden_dim, self.head_bottleneck_dim, self.head_layers,
                             self.norm_last_layer, dtype=self.dtype, param_dtype=self.param_dtype)

    def __call__(self, images: jax.Array, *, train: bool = False):
        """images [B, H, W, C] (any multiple of the patch size) -> head outputs [B, out_dim] (fp32)."""
        return self.head(self.backbone(images, train=train, output="features"))

    def features(self, images: jax.Array) -> jax.Array:
        """The backbone's normalised class token [B, D]: the representation kNN/linear probes read."""
        return self.backbone(images, train=False, output="features")


@register_model("dino")
def dino(variant: str | None = "S/16", **overrides) -> DINO:
    """DINO with a ViT backbone of ``variant`` (e.g. ``"S/16"``, ``"B/16"``) and the paper's head."""
    kwargs = {}
    if variant:
        v = decode_variant(variant)
        kwargs.update({k: v[k] for k in ("width", "depth", "num_heads", "mlp_dim", "patch_size") if k in v})
    kwargs.update(overrides)
    return build_module(DINO, kwargs, "DINO")


for _size, _patch in (("S", 16), ("B", 16), ("S", 8), ("B", 8)):
    register_model(f"dino_vit_{_size.lower()}{_patch}", doc=f"DINO ViT-{_size}/{_patch}")(
        lambda _v=f"{_size}/{_patch}", **kw: dino(_v, **kw))
