"""The basic per-example ops: decoding, resizing, cropping, flipping, channels, normalize, keep.

Each op maps ``(example, rng) -> example`` on numpy arrays (see ``vitjax.data.ops`` for the op
lists and how configs name them). ``pixels`` and ``apply_ops`` are shared with ``augment``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

from vitjax.data import image_io
from vitjax.data.registry import register_op


def apply_ops(example: dict, ops: Sequence[Callable], rng: np.random.Generator | None) -> dict:
    for op in ops:
        example = op(example, rng)
    return example


def deterministic(op: Callable) -> Callable:
    """Marks an op whose output depends on the example alone (no rng): the in-memory fast path of
    ``pipeline.train_iterator`` may run it once per record instead of once per epoch."""
    op.deterministic = True
    return op


def with_batched(op: Callable, batched: Callable) -> Callable:
    """Gives an op ``op.batched(batch, rng)``: the same transform on a whole batch [B, ...] at once,
    with the batch's generator (the in-memory fast path of ``pipeline.train_iterator``)."""
    op.batched = batched
    return op


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _np(img: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(img)
    return a[..., None] if a.ndim == 2 and channels == 1 else a


def pixels(ex: dict, key: str = "image") -> np.ndarray:
    """The example's image as an array, decoding encoded bytes (full size, RGB) if need be."""
    img = ex[key]
    return image_io.decode(img) if image_io.is_encoded(img) else img


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))


@register_op("decode")
def decode(channels: int = 3):
    """Decodes encoded image bytes (JPEG/PNG/WebP/...; any mode) to uint8 RGB [H, W, 3], or grey
    [H, W, 1] with channels=1. Arrays pass through. Undecodable bytes skip the example."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")

    def op(ex, rng):
        img = ex["image"]
        if image_io.is_encoded(img):
            ex = dict(ex, image=image_io.decode(img, channels=channels))
        return ex
    return op


@register_op("resize")
def resize(size: int | Sequence[int], method: str = "bilinear"):
    """Resizes to ``size`` x ``size`` (or (h, w)), ignoring aspect ratio."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    resample = image_io.RESAMPLE[method]

    def op(ex, rng):
        img = pixels(ex)
        if img.shape[:2] != (h, w):
            img = _np(_pil(img).resize((w, h), resample), img.shape[-1])
        return dict(ex, image=img)
    return deterministic(op)


@register_op("resize_small")
def resize_small(size: int):
    """Resizes so the shorter side is ``size``, keeping the aspect ratio (eval: before center_crop)."""
    def op(ex, rng):
        img = pixels(ex)
        hh, ww = img.shape[:2]
        s = size / min(hh, ww)
        new = (max(1, round(ww * s)), max(1, round(hh * s)))
        return dict(ex, image=_np(_pil(img).resize(new, Image.BILINEAR), img.shape[-1]))
    return deterministic(op)


@register_op("center_crop")
def center_crop(size: int):
    def op(ex, rng):
        img = pixels(ex)
        hh, ww = img.shape[:2]
        top, left = max(0, (hh - size) // 2), max(0, (ww - size) // 2)
        return dict(ex, image=img[top:top + size, left:left + size])
    return deterministic(op)


@register_op("random_pad_crop")
def random_pad_crop(pad: int):
    """Zero-pads by ``pad`` pixels and crops back at a random offset: a random translation."""
    def op(ex, rng):
        img = pixels(ex)
        hh, ww = img.shape[:2]
        dy, dx = rng.integers(-pad, pad + 1, size=2)
        out = np.zeros_like(img)
        # Copy the overlap of the image shifted by (dy, dx); the uncovered border stays zero.
        out[max(dy, 0):hh + min(dy, 0), max(dx, 0):ww + min(dx, 0)] = \
            img[max(-dy, 0):hh - max(dy, 0), max(-dx, 0):ww - max(dx, 0)]
        return dict(ex, image=out)

    def batched(batch, rng):
        imgs = batch["image"]
        b, hh, ww = imgs.shape[:3]
        d = rng.integers(-pad, pad + 1, size=(b, 2))
        padded = np.pad(imgs, [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (imgs.ndim - 3))
        # out[y, x] = img[y - dy, x - dx] (zero outside) = padded[y - dy + pad, x - dx + pad]
        rows = np.arange(hh)[None, :] + pad - d[:, :1]
        cols = np.arange(ww)[None, :] + pad - d[:, 1:]
        out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
        return dict(batch, image=out)
    return with_batched(op, batched)


@register_op("flip_lr")
def flip_lr(prob: float = 0.5):
    def op(ex, rng):
        if rng.random() < prob:
            ex = dict(ex, image=pixels(ex)[:, ::-1])
        return ex

    def batched(batch, rng):
        flip = rng.random(len(batch["image"])) < prob
        return dict(batch, image=np.where(flip.reshape(-1, *[1] * (batch["image"].ndim - 1)),
                                          batch["image"][:, :, ::-1], batch["image"]))
    return with_batched(op, batched)


@register_op("random_resized_crop")
@register_op("decode_random_resized_crop")
def random_resized_crop(size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10,
                        method: str = "bilinear"):
    """Inception-style crop (``image_io.inception_box``) resized to ``size``. Fused with decoding
    for encoded bytes: the crop is drawn from the header's size, then only what the crop needs is
    decoded (reduced-size JPEG decoding). ``random_resized_crop`` is the same op."""
    out_hw = _size_hw(size)
    if method not in image_io.RESAMPLE:
        raise ValueError(f"method must be one of {sorted(image_io.RESAMPLE)}, got {method!r}")

    def op(ex, rng):
        img = ex["image"]
        if image_io.is_encoded(img):
            pil = image_io.open_image(img)
            ww, hh = pil.size
            top, left, ch, cw = image_io.inception_box(rng, hh, ww, scale, ratio, attempts)
            out = image_io.crop_resize(pil, [(left, top, left + cw, top + ch)], [out_hw], method=method)[0]
        else:
            hh, ww = img.shape[:2]
            top, left, ch, cw = image_io.inception_box(rng, hh, ww, scale, ratio, attempts)
            out = image_io.array_crop_resize(img, (left, top, left + cw, top + ch), out_hw, method)
        return dict(ex, image=out)
    return op


@register_op("decode_center_crop")
def decode_center_crop(size: int, crop_fraction: float = 0.875, method: str = "bilinear"):
    """Eval: the central square covering ``crop_fraction`` of the shorter side, resized to ``size``.
    The same pixels as ``resize_small(size / crop_fraction)`` then ``center_crop(size)`` (0.875 =
    224/256, the standard ImageNet eval), but decoding (at reduced JPEG size when possible) and
    resizing only the crop."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")

    def op(ex, rng):
        img = ex["image"]
        if image_io.is_encoded(img):
            pil = image_io.open_image(img)
            ww, hh = pil.size
            box = image_io.center_box(hh, ww, crop_fraction)
            out = image_io.crop_resize(pil, [box], [(size, size)], method=method)[0]
        else:
            box = image_io.center_box(img.shape[0], img.shape[1], crop_fraction)
            out = image_io.array_crop_resize(img, box, (size, size), method)
        return dict(ex, image=out)
    return op


@register_op("to_rgb")
def to_rgb():
    """Grey [H, W, 1] -> [H, W, 3] by repetition; drops a 4th channel."""
    def op(ex, rng):
        img = pixels(ex)
        return dict(ex, image=np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3])
    return deterministic(op)


@register_op("normalize")
def normalize(mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5):
    """uint8 -> float32 (x / 255 - mean) / std, per channel. ImageNet: mean (0.485, 0.456, 0.406),
    std (0.229, 0.224, 0.225); vitjax's default 0.5/0.5 maps pixels to [-1, 1]."""
    mean_a = np.asarray(mean, np.float32)
    std_a = np.asarray(std, np.float32)
    if mean_a.ndim == 0 and std_a.ndim == 0:
        def op(ex, rng):
            img = pixels(ex).astype(np.float32) / 255.0
            return dict(ex, image=(img - mean_a) / std_a)
        return deterministic(with_batched(op, op))        # elementwise: the batch is one big image
    # Per-channel: numpy broadcasting over a trailing axis of 3 is ~15x slower than a flat
    # multiply-add with the per-channel constants tiled to the image (cached per image size);
    # x * (1 / (255 std)) - mean / std differs from the formula above by < 1e-6.
    scale = (1.0 / (255.0 * std_a)).astype(np.float32)
    offset = (-mean_a / std_a).astype(np.float32)
    tiled: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def op(ex, rng):
        img = pixels(ex)
        if img.shape[-1] != scale.shape[-1]:
            raise ValueError(f"normalize has {scale.shape[-1]} channel means/stds but the image has "
                             f"shape {img.shape}")
        flat = img.reshape(-1).astype(np.float32)
        pair = tiled.get(flat.size)
        if pair is None:
            if len(tiled) > 16:
                tiled.clear()
            reps = flat.size // scale.size
            pair = tiled[flat.size] = (np.tile(scale, reps), np.tile(offset, reps))
        s, o = pair
        flat *= s
        flat += o
        return dict(ex, image=flat.reshape(img.shape))
    return deterministic(with_batched(op, op))            # channels last: a batch is one big image


@register_op("keep")
def keep(keys: Sequence[str]):
    """Keeps only ``keys`` of the example (e.g. to drop features a dataset has but the model does not use)."""
    keys = tuple(keys)

    def op(ex, rng):
        missing = [k for k in keys if k not in ex]
        if missing:
            raise KeyError(f"op keep: the example has no {missing}; it has {sorted(ex)}")
        return {k: ex[k] for k in keys}
    return op
