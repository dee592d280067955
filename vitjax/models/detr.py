"""DETR (Carion et al. 2020, "End-to-End Object Detection with Transformers", arXiv:2005.12872) on
vitjax backbones.

``DETR`` maps images [B, H, W, C] to ``dict(logits [B, Q, K + 1], boxes [B, Q, 4], aux_logits
[L - 1, B, Q, K + 1], aux_boxes [L - 1, B, Q, 4])``: Q object queries, K object classes plus the last
class "no object", boxes as (centre x, centre y, width, height) normalised to [0, 1] by the image size,
and the predictions of every earlier decoder layer for the auxiliary losses (L decoder layers).

    images -> backbone -> feature map [B, h, w, C] -> 1x1 conv to d -> + sine positions
           -> encoder (post-norm, positions added to queries and keys) -> memory [B, h*w, d]
    zeros [B, Q, d] + learned query positions -> decoder (self-attention, cross-attention into the
           memory, FFN; post-norm) -> shared LayerNorm per layer -> class Linear / box MLP + sigmoid

The backbone is any registered vitjax model: a ViT gives its final-norm patch tokens on the patch grid
(the class token dropped), a PVT/Swin its pyramid level ``feature_stage`` (the paper uses a ResNet's
last stage, stride 32; a 64x64 demo image needs a finer grid, e.g. a ViT with patch 8).

The transformer and heads are laid out as Hugging Face's ``DetrForObjectDetection`` (post-norm layers,
LayerNorm eps 1e-5, separate q/k/v/out projections, ReLU FFN, the same sine table), so that
``vitjax.interop.detr`` maps them one to one. ``DetrTransformer`` alone runs from a feature map, which
is how the parity test and the converter treat the backbone as separate.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vitjax.models import pvt, swin, vit  # noqa: F401  (backbone families must be registered)
from vitjax.models.registry import MODELS, build_module, register_model
from vitjax.models.transformer import ACT_TOKENS, Einsum, LayerNorm, _p
from vitjax.models.vit import ViT


def sine_position_table(h: int, w: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """DETR's fixed 2-D sine table for an unpadded h x w map: [h * w, dim] (row-major), y features
    then x features, each dim/2 wide; positions are 1..n normalised to (0, 2*pi] (``normalize=True``,
    as DETR and HF build it)."""
    if dim % 4:
        raise ValueError(f"DETR's hidden_dim must be divisible by 4 for the sine table, got {dim}")
    half = dim // 2
    eps, scale = 1e-6, 2 * np.pi
    y = np.arange(1, h + 1, dtype=np.float32) / (h + eps) * scale
    x = np.arange(1, w + 1, dtype=np.float32) / (w + eps) * scale
    dim_t = temperature ** (2 * (np.arange(half) // 2) / half)

    def enc(p):                                       # [n] -> [n, half], sin/cos interleaved
        v = p[:, None] / dim_t
        return np.stack([np.sin(v[:, 0::2]), np.cos(v[:, 1::2])], axis=-1).reshape(len(p), half)

    ey, ex = enc(y), enc(x)
    table = np.concatenate([np.repeat(ey[:, None], w, 1), np.repeat(ex[None], h, 0)], axis=-1)
    return table.reshape(h * w, dim).astype(np.float32)


def _grid_logits(key, shape, dtype=jnp.float32):
    """[Q, 2] reference points on a regular g x g grid (g = ceil(sqrt(Q))), as logits."""
    del key
    q = shape[0]
    g = int(np.ceil(np.sqrt(q)))
    c = (np.arange(g) + 0.5) / g
    pts = np.stack(np.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)[:q]
    return jnp.asarray(np.log(pts / (1 - pts)), dtype)


def _dense(features, name, names=("embed", "mlp"), **kw):
    return nn.Dense(features, kernel_init=_p(nn.initializers.xavier_uniform(), names),
                    bias_init=_p(nn.initializers.zeros, names[1:]), name=name, **kw)


def prediction_mlp(x, dims: tuple[int, ...], name: str, dtype=jnp.float32, param_dtype=jnp.float32):
    """DETR's prediction MLP (also YOLOS's heads): Linear layers of widths ``dims`` with ReLU between,
    as parameters ``<name>_layer{i}``. x [..., D] -> [..., dims[-1]]."""
    for i, d in enumerate(dims):
        last = i == len(dims) - 1
        x = _dense(d, f"{name}_layer{i}", ("embed", None if last else "mlp"), dtype=dtype,
                   param_dtype=param_dtype)(x)
        if not last:
            x = jax.nn.relu(x)
    return x


class DetrAttention(nn.Module):
    """Multi-head attention whose queries, keys and values come from three inputs (DETR adds position
    embeddings to queries and keys, never to values). q [B, T, D], k/v [B, S, D] -> [B, T, D]."""
    num_heads: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, q, k, v, mask=None):
        d = q.shape[-1]
        hd = d // self.num_heads
        if d % self.num_heads:
            raise ValueError(f"DETR hidden_dim {d} is not divisible by num_heads={self.num_heads}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def proj(name, x):
            y = Einsum("btd,dhk->bthk", (d, self.num_heads, hd), ("embed", "heads", "kv"), 1, True,
                       name=name, **kw)(x)
            return nn.with_logical_constraint(y, ("act_batch", "act_len", "act_heads", "act_kv"))

        out = jax.nn.dot_product_attention(proj("query", q), proj("key", k), proj("value", v), mask=mask)
        return Einsum("bthk,hkd->btd", (self.num_heads, hd, d), ("heads", "kv", "embed"), 2, True,
                      name="out", **kw)(out)


class _FFN(nn.Module):
    ffn_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = jax.nn.relu(_dense(self.ffn_dim, "fc1", ("embed", "mlp"), **kw)(x))
        h = nn.with_logical_constraint(h, ("act_batch", "act_len", "act_mlp"))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return _dense(x.shape[-1], "fc2", ("mlp", "embed"), **kw)(h)


class DetrEncoderLayer(nn.Module):
    """Post-norm: x = LN(x + SA(x + pos, x + pos, x)); x = LN(x + FFN(x)). [B, S, D] -> [B, S, D]."""
    num_heads: int
    ffn_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, pos, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = nn.Dropout(self.dropout)
        qk = x + pos
        y = DetrAttention(self.num_heads, name="self_attn", **kw)(qk, qk, x)
        x = LayerNorm(1e-5, name="self_attn_norm", **kw)(x + drop(y, deterministic=not train))
        y = _FFN(self.ffn_dim, self.dropout, name="mlp", **kw)(x, train)
        x = LayerNorm(1e-5, name="final_norm", **kw)(x + drop(y, deterministic=not train))
        return nn.with_logical_constraint(x, ACT_TOKENS)


class DetrDecoderLayer(nn.Module):
    """Post-norm: self-attention among the queries (query positions on q and k), cross-attention into
    the memory (query positions on q, memory positions on k), FFN. [B, Q, D] -> [B, Q, D]."""
    num_heads: int
    ffn_dim: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tgt, memory, pos, query_pos, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = nn.Dropout(self.dropout)
        qk = tgt + query_pos
        y = DetrAttention(self.num_heads, name="self_attn", **kw)(qk, qk, tgt)
        tgt = LayerNorm(1e-5, name="self_attn_norm", **kw)(tgt + drop(y, deterministic=not train))
        y = DetrAttention(self.num_heads, name="cross_attn", **kw)(tgt + query_pos, memory + pos, memory)
        tgt = LayerNorm(1e-5, name="cross_attn_norm", **kw)(tgt + drop(y, deterministic=not train))
        y = _FFN(self.ffn_dim, self.dropout, name="mlp", **kw)(tgt, train)
        tgt = LayerNorm(1e-5, name="final_norm", **kw)(tgt + drop(y, deterministic=not train))
        return nn.with_logical_constraint(tgt, ACT_TOKENS)


class DetrTransformer(nn.Module):
    """DETR's detector on a backbone feature map: fmap [B, h, w, C] -> the ``DETR`` output dict.

    Attributes:
      num_classes: object classes K (logits have K + 1: the last is "no object").
      num_queries: object queries Q (at least the most boxes an image may have).
      hidden_dim, num_heads, enc_layers, dec_layers, ffn_dim, dropout: the transformer's shape.
      reference_points: give each query a learned reference point (cx, cy), initialised on a regular
        grid, that its predicted box centre is an offset from (in logit space), as Anchor DETR / DAB-DETR
        do (Wang et al. 2022; Liu et al. 2022). Queries then own regions of the image from the first
        step, which makes matching stable and training much faster on small data; off by default,
        because HF's DETR (and the paper) has no reference points.
    """
    num_classes: int
    num_queries: int = 100
    hidden_dim: int = 256
    num_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 2048
    dropout: float = 0.1
    reference_points: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, fmap, *, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, h, w, _ = fmap.shape
        d = self.hidden_dim
        x = nn.Conv(d, (1, 1), name="input_proj", kernel_init=_p(nn.initializers.xavier_uniform(),
                                                                  (None, None, "embed", "mlp")),
                    bias_init=_p(nn.initializers.zeros, ("mlp",)), **kw)(fmap)
        x = nn.with_logical_constraint(x.reshape(b, h * w, d), ACT_TOKENS)
        pos = jnp.asarray(sine_position_table(h, w, d), x.dtype)[None]
        for i in range(self.enc_layers):
            x = DetrEncoderLayer(self.num_heads, self.ffn_dim, self.dropout, name=f"encoder_layer{i}",
                                 **kw)(x, pos, train)
        query_pos = self.param("query_pos", _p(nn.initializers.normal(1.0), ("posemb_len", "embed")),
                               (self.num_queries, d), self.param_dtype).astype(x.dtype)[None]
        tgt = jnp.zeros((b, self.num_queries, d), x.dtype)
        norm = LayerNorm(1e-5, name="decoder_norm", **kw)
        outs = []
        for i in range(self.dec_layers):
            tgt = DetrDecoderLayer(self.num_heads, self.ffn_dim, self.dropout, name=f"decoder_layer{i}",
                                   **kw)(tgt, x, pos, query_pos, train)
            outs.append(norm(tgt))
        hs = jnp.stack(outs)                                          # [L, B, Q, d]
        logits = _dense(self.num_classes + 1, "class_head", ("embed", "classes"), **kw)(hs)
        raw = prediction_mlp(hs, (d, d, 4), "box_head", **kw).astype(jnp.float32)
        if self.reference_points:
            ref = self.param("query_ref", _p(_grid_logits, ("posemb_len", None)), (self.num_queries, 2), jnp.float32)
            raw = raw.at[..., :2].add(ref)
        boxes = jax.nn.sigmoid(raw)
        logits = logits.astype(jnp.float32)
        return {"logits": logits[-1], "boxes": boxes[-1], "aux_logits": logits[:-1], "aux_boxes": boxes[:-1]}


class DETR(nn.Module):
    """Backbone + ``DetrTransformer`` (see the module docstring).

    Attributes:
      backbone: a vitjax ViT (patch tokens on the grid) or a pyramid model with ``features=True``
        (PVT, Swin) read at ``feature_stage``.
      num_classes, num_queries, hidden_dim, num_heads, enc_layers, dec_layers, ffn_dim, dropout,
        reference_points: ``DetrTransformer``'s.
    """
    backbone: nn.Module
    num_classes: int
    num_queries: int = 100
    hidden_dim: int = 256
    num_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    ffn_dim: int = 2048
    dropout: float = 0.1
    reference_points: bool = False
    feature_stage: int = -1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    @property
    def in_channels(self) -> int:
        return self.backbone.in_channels

    def detector(self, name: str | None = None) -> DetrTransformer:
        """The transformer + heads (parameters: ``params["detector"]``): unbound (``parent=None``) when
        called without a name, so that it runs alone on a feature map (parity tests, interop)."""
        return DetrTransformer(self.num_classes, self.num_queries, self.hidden_dim, self.num_heads,
                               self.enc_layers, self.dec_layers, self.ffn_dim, self.dropout,
                               self.reference_points, self.dtype, self.param_dtype, **({"name": name} if name else {"parent": None}))

    def features(self, images, *, train: bool = False):
        """images [B, H, W, C] -> the backbone's feature map [B, h, w, C_b]."""
        bb = self.backbone
        if isinstance(bb, ViT):
            tokens = bb(images, train=train, output="tokens")[:, bb.num_prefix_tokens:]
            gh, gw = images.shape[1] // bb.patch_size, images.shape[2] // bb.patch_size
            return tokens.reshape(tokens.shape[0], gh, gw, tokens.shape[-1])
        return bb(images, train=train, features=True)[self.feature_stage]

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images [B, H, W, C] -> dict(logits, boxes, aux_logits, aux_boxes) (module docstring)."""
        fmap = self.features(images, train=train)
        return self.detector("detector")(fmap, train=train)


@register_model("detr")
def detr(backbone: str = "vit", **overrides) -> DETR:
    """DETR on a registered backbone, whose options are the ``backbone_*`` keys (flat, so that configs
    stay one level deep): ``create_model("detr", backbone="vit", backbone_variant="S/16",
    backbone_image_size=224, num_classes=91)``. The backbone is built without a classifier.
    Defaults: the paper's transformer (d=256, 8 heads, 6+6 layers, FFN 2048, 100 queries, dropout
    0.1; Carion et al. 2020, sec. 4 and appendix A.4) on a ViT-S/16."""
    spec = {k[len("backbone_"):]: overrides.pop(k) for k in list(overrides) if k.startswith("backbone_")}
    if backbone == "vit":
        spec.setdefault("variant", "S/16")
    spec["num_classes"] = 0
    module = MODELS.get(backbone)(**spec)
    return build_module(DETR, dict(overrides, backbone=module), "DETR")
