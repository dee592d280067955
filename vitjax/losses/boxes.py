"""Box formats and overlaps for detection (DETR, YOLOS): conversions, pairwise IoU and generalised IoU.

Formats: ``cxcywh`` (centre x, centre y, width, height; what DETR predicts, normalised to [0, 1] by
the image size), ``xyxy`` (corners x0, y0, x1, y1) and ``xywh`` (COCO: top-left corner, width,
height). All functions take arrays ``[..., 4]`` and work for numpy and jax inputs alike (they only
use ``jnp``); pairwise functions map ``[N, 4], [M, 4] -> [N, M]``.
"""
from __future__ import annotations

import jax.numpy as jnp


def cxcywh_to_xyxy(b):
    """[..., 4] centre/size -> corners."""
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(b):
    """[..., 4] corners -> centre/size."""
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return jnp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def xywh_to_xyxy(b):
    """[..., 4] COCO (x, y, w, h) -> corners."""
    return jnp.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(b):
    """[..., 4] corners -> COCO (x, y, w, h)."""
    return jnp.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def box_area(b):
    """[..., 4] xyxy -> [...] area."""
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def pairwise_iou(a, b):
    """IoU and union of every pair: a [N, 4], b [M, 4] (xyxy) -> ([N, M], [N, M])."""
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union, union


def pairwise_giou(a, b):
    """Generalised IoU (Rezatofighi et al. 2019) of every pair: a [N, 4], b [M, 4] (xyxy) -> [N, M]
    in [-1, 1]: IoU minus the fraction of the enclosing box that the union does not cover."""
    iou, union = pairwise_iou(a, b)
    lt = jnp.minimum(a[:, None, :2], b[None, :, :2])
    rb = jnp.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.clip(rb - lt, 0.0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def elementwise_giou(a, b):
    """Generalised IoU of matched pairs: a, b [..., 4] (xyxy) -> [...] (the diagonal of
    ``pairwise_giou`` without building the [N, M] matrix)."""
    lt = jnp.maximum(a[..., :2], b[..., :2])
    rb = jnp.minimum(a[..., 2:], b[..., 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    lt_c = jnp.minimum(a[..., :2], b[..., :2])
    rb_c = jnp.maximum(a[..., 2:], b[..., 2:])
    wh_c = jnp.clip(rb_c - lt_c, 0.0)
    enclosing = wh_c[..., 0] * wh_c[..., 1]
    return inter / union - (enclosing - union) / enclosing
