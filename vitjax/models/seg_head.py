"""A minimal FPN-style semantic-segmentation head over a hierarchical backbone's feature pyramid.

``SegmentationModel(backbone, num_classes)`` runs ``backbone(images, train=..., features=True)``
(Swin and PVT return their stage maps [B, H_s, W_s, C_s] that way), then a Feature Pyramid Network
head (Lin et al. 2017): a 1x1 lateral projection per level, a top-down pathway (upsample the coarser
level 2x, add), a 3x3 conv per merged level, then - as in Panoptic FPN's semantic branch (Kirillov et
al. 2019) in its simplest form - every level upsampled to the finest one and summed, a 1x1
classifier, and bilinear upsampling of the logits to the input size: [B, H, W, num_classes].
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vitjax.models.transformer import _p


def _resize(x, h, w):
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), method="bilinear")


class FPNHead(nn.Module):
    """Feature pyramid [B, H_s, W_s, C_s] (finest first) -> logits [B, H_0, W_0, num_classes]."""
    num_classes: int
    dim: int = 64
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pyramid):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def conv(k, name):
            return nn.Conv(self.dim, (k, k), padding="SAME", name=name,
                           kernel_init=_p(nn.initializers.lecun_normal(), (None, None, None, "embed")),
                           bias_init=_p(nn.initializers.zeros, ("embed",)), **kw)

        lateral = [conv(1, f"lateral{i}")(f) for i, f in enumerate(pyramid)]
        merged = [lateral[-1]]
        for lat in reversed(lateral[:-1]):             # top-down: coarse to fine
            merged.insert(0, lat + _resize(merged[0], lat.shape[1], lat.shape[2]))
        h, w = merged[0].shape[1:3]
        out = sum(_resize(jax.nn.gelu(conv(3, f"smooth{i}")(m)), h, w) for i, m in enumerate(merged))
        return nn.Conv(self.num_classes, (1, 1), name="classifier",
                       kernel_init=_p(nn.initializers.lecun_normal(), (None, None, "embed", "classes")),
                       bias_init=_p(nn.initializers.zeros, ("classes",)), **kw)(out)


class SegmentationModel(nn.Module):
    """backbone pyramid -> FPNHead -> logits upsampled to the image: [B, H, W, num_classes]."""
    backbone: nn.Module
    num_classes: int
    dim: int = 64

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        pyramid = self.backbone(images, train=train, features=True)
        logits = FPNHead(self.num_classes, self.dim, name="head")(pyramid)
        return _resize(logits.astype(jnp.float32), images.shape[1], images.shape[2])


def mean_iou(pred, labels, num_classes: int):
    """Mean over classes present in ``labels`` or ``pred`` of |pred ∩ label| / |pred ∪ label|.

    pred, labels: int [...] of the same shape. Returns (mIoU, per-class IoU [num_classes], NaN for
    classes absent from both)."""
    ious = []
    for c in range(num_classes):
        p, t = pred == c, labels == c
        union = jnp.sum(p | t)
        ious.append(jnp.where(union > 0, jnp.sum(p & t) / jnp.maximum(union, 1), jnp.nan))
    ious = jnp.stack(ious)
    return jnp.nanmean(ious), ious
