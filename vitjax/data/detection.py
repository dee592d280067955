"""Detection examples and their box-aware ops (DETR, YOLOS).

A detection source gives ``{"image": uint8 [H, W, C] (or encoded bytes), "boxes": float32 [n, 4]
(x0, y0, x1, y1) in pixels, "labels": int32 [n] (0..K-1), "file_name": str}`` with any n >= 0
(``shapes_scenes``, or a COCO conversion: ``python -m vitjax.data convert --coco ...``). The ops keep
boxes consistent with the image they transform; the last op of a list is ``det_pad_boxes``, which
makes the fixed shapes a batch needs:

    boxes [max_boxes, 4] float32 (centre x, centre y, width, height) / image size, as DETR predicts
    labels [max_boxes] int32; box_mask [max_boxes] bool (real boxes first)
    boxes_dropped, boxes_clipped, boxes_truncated: int32 per example (logged as train metrics)

    config.input.train_ops = [dict(op="det_flip_lr"), dict(op="det_random_crop", min_scale=0.6),
                              dict(op="det_resize", size=64), dict(op="normalize", mean=0.5, std=0.5),
                              dict(op="det_pad_boxes", max_boxes=8)]

Bad boxes: a box partly outside the image is clipped to it, a box with no area inside the image
(outside, or width/height <= 0) is dropped; both are counted in the example and in this process's
``vitjax.data.bad_input`` counters (``boxes_clipped``, ``boxes_dropped``). More boxes than
``max_boxes`` is a ValueError naming both numbers, or, with ``truncate=True``, the first
``max_boxes`` are kept and the rest counted (``boxes_truncated``). Boxes a random crop cuts away are
part of the augmentation, not bad input, and are not counted.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from vitjax.data import bad_input
from vitjax.data.image_ops import pixels
from vitjax.data.registry import register_op

COUNTERS = ("boxes_dropped", "boxes_clipped", "boxes_truncated")


def _boxes(ex) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(ex.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
    labels = np.asarray(ex.get("labels", np.zeros((0,))), np.int32).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"example has {len(boxes)} boxes but {len(labels)} labels; a detection source "
                         f"must give one label per box")
    return boxes, labels


def sanitize_boxes(boxes: np.ndarray, labels: np.ndarray, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Clips xyxy pixel boxes [n, 4] to the image and drops those left without area.
    Returns (boxes, labels, number dropped, number clipped)."""
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]) & np.isfinite(boxes).all(1)
    changed = np.any(np.abs(clipped - boxes) > 1e-6, axis=1) & keep
    return clipped[keep], labels[keep], int((~keep).sum()), int(changed.sum())


def _with_counts(ex: dict, **add) -> dict:
    out = dict(ex)
    for k in COUNTERS:
        out[k] = np.int32(int(ex.get(k, 0)) + add.get(k, 0))
    return out


@register_op("det_sanitize")
def det_sanitize():
    """Clips boxes to the image and drops the ones without area, counting both (module docstring).
    ``det_pad_boxes`` does this too; use it first to count bad source boxes before other ops."""
    def op(ex, rng):
        img = pixels(ex)
        boxes, labels = _boxes(ex)
        boxes, labels, dropped, clipped = sanitize_boxes(boxes, labels, img.shape[0], img.shape[1])
        if dropped:
            bad_input.count("boxes_dropped", dropped)
        if clipped:
            bad_input.count("boxes_clipped", clipped)
        return _with_counts(dict(ex, image=img, boxes=boxes, labels=labels),
                            boxes_dropped=dropped, boxes_clipped=clipped)
    return op


@register_op("det_flip_lr")
def det_flip_lr(p: float = 0.5):
    """Mirrors the image left-right with probability ``p``, and the boxes with it."""
    def op(ex, rng):
        if rng is None or rng.random() >= p:
            return ex
        img = pixels(ex)
        boxes, labels = _boxes(ex)
        w = img.shape[1]
        flipped = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        return dict(ex, image=np.ascontiguousarray(img[:, ::-1]), boxes=flipped.astype(np.float32),
                    labels=labels)
    return op


@register_op("det_resize")
def det_resize(size, method: str = "bilinear"):
    """Resizes to ``size`` x ``size`` (or (h, w)), ignoring aspect ratio; boxes scale with it."""
    h, w = (size, size) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[method]

    def op(ex, rng):
        img = pixels(ex)
        boxes, labels = _boxes(ex)
        ih, iw = img.shape[:2]
        if (ih, iw) != (h, w):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).resize((w, h), resample)
            out = np.asarray(pil)
            img = out[..., None] if out.ndim == 2 else out
        scale = np.array([w / iw, h / ih, w / iw, h / ih], np.float32)
        return dict(ex, image=img, boxes=boxes * scale, labels=labels)
    return op


@register_op("det_random_crop")
def det_random_crop(min_scale: float = 0.5, max_scale: float = 1.0, p: float = 0.5):
    """With probability ``p``, crops a random window whose sides are ``[min_scale, max_scale]`` of the
    image's; boxes are shifted and clipped to the window, boxes left without area leave the example
    (DETR's random crop). Follow it with ``det_resize`` to restore a fixed size."""
    if not 0 < min_scale <= max_scale <= 1:
        raise ValueError(f"det_random_crop needs 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")

    def op(ex, rng):
        if rng is None or rng.random() >= p:
            return ex
        img = pixels(ex)
        boxes, labels = _boxes(ex)
        ih, iw = img.shape[:2]
        ch = max(1, int(round(ih * rng.uniform(min_scale, max_scale))))
        cw = max(1, int(round(iw * rng.uniform(min_scale, max_scale))))
        y0 = int(rng.integers(0, ih - ch + 1))
        x0 = int(rng.integers(0, iw - cw + 1))
        shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
        kept, kept_labels, _, _ = sanitize_boxes(shifted, labels, ch, cw)
        return dict(ex, image=np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw]), boxes=kept, labels=kept_labels)
    return op


@register_op("det_pad_boxes")
def det_pad_boxes(max_boxes: int, truncate: bool = False):
    """The last op: sanitises the boxes (counted), converts them to normalised (cx, cy, w, h) and pads
    them to ``max_boxes`` with ``box_mask`` (module docstring). More boxes than ``max_boxes``: a
    ValueError naming both, or with ``truncate=True`` the extra boxes are dropped and counted."""
    max_boxes = int(max_boxes)

    def op(ex, rng):
        img = pixels(ex)
        h, w = img.shape[:2]
        boxes, labels = _boxes(ex)
        boxes, labels, dropped, clipped = sanitize_boxes(boxes, labels, h, w)
        truncated = 0
        if len(boxes) > max_boxes:
            if not truncate:
                raise ValueError(
                    f"an example ({ex.get('file_name', 'no file_name')}) has {len(boxes)} boxes, more than "
                    f"max_boxes={max_boxes} of det_pad_boxes; raise max_boxes (and the model's queries) to "
                    f"at least {len(boxes)}, or pass truncate=True to keep the first {max_boxes} and count "
                    f"the rest")
            truncated = len(boxes) - max_boxes
            boxes, labels = boxes[:max_boxes], labels[:max_boxes]
        for key, n in (("boxes_dropped", dropped), ("boxes_clipped", clipped), ("boxes_truncated", truncated)):
            if n:
                bad_input.count(key, n)
        n = len(boxes)
        out_boxes = np.zeros((max_boxes, 4), np.float32)
        out_boxes[:] = (0.5, 0.5, 1.0, 1.0)   # padding: the whole image, so no NaN reaches the matcher
        if n:
            x0, y0, x1, y1 = boxes.T
            out_boxes[:n] = np.stack([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], 1)
        out_labels = np.zeros((max_boxes,), np.int32)
        out_labels[:n] = labels
        out = _with_counts(ex, boxes_dropped=dropped, boxes_clipped=clipped, boxes_truncated=truncated)
        out.update(image=img, boxes=out_boxes, labels=out_labels, box_mask=np.arange(max_boxes) < n)
        return out
    return op
