"""Per-example preprocessing ops, named in configs as lists of dicts.

    config.input.train_ops = [dict(op="resize", size=16), dict(op="random_pad_crop", pad=2),
                              dict(op="normalize", mean=0.5, std=0.5)]

Each op maps ``(example, rng) -> example`` on numpy arrays inside grain workers (no JAX, no TF);
``rng`` is a ``np.random.Generator`` seeded per example by grain, so augmentation is reproducible
and resumable. Images are uint8 [H, W, C] until ``normalize`` turns them into float32.
"""
from __future__ import annotations

import io
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image

OPS: dict[str, Callable[..., Callable[[dict, np.random.Generator | None], dict]]] = {}


def register_op(name: str):
    def wrap(factory):
        OPS[name] = factory
        return factory
    return wrap


def build_ops(specs: Sequence[Mapping[str, Any]] | None) -> list[Callable]:
    """Turns a config list of ``dict(op=NAME, **kwargs)`` into callables, checking names early."""
    ops = []
    for spec in specs or ():
        spec = dict(spec)
        name = spec.pop("op", None)
        if name not in OPS:
            import difflib
            raise ValueError(f"unknown preprocessing op {name!r}; nearest: "
                             f"{difflib.get_close_matches(str(name), list(OPS), n=3)}; all ops: {sorted(OPS)}")
        try:
            ops.append(OPS[name](**spec))
        except TypeError as e:
            raise ValueError(f"bad arguments for preprocessing op {name!r}: {e}") from e
    return ops


def apply_ops(example: dict, ops: Sequence[Callable], rng: np.random.Generator | None) -> dict:
    for op in ops:
        example = op(example, rng)
    return example


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _np(img: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(img)
    return a[..., None] if a.ndim == 2 and channels == 1 else a


@register_op("decode")
def decode(channels: int = 3):
    """Decodes encoded image bytes (JPEG/PNG/WebP...) to uint8 RGB (or grey with channels=1)."""
    def op(ex, rng):
        img = ex["image"]
        if isinstance(img, (bytes, np.bytes_)) or (isinstance(img, np.ndarray) and img.dtype == object):
            pil = Image.open(io.BytesIO(bytes(img))).convert("L" if channels == 1 else "RGB")
            ex = dict(ex, image=_np(pil, channels))
        return ex
    return op


@register_op("resize")
def resize(size: int | Sequence[int], method: str = "bilinear"):
    """Resizes to ``size`` x ``size`` (or (h, w)), ignoring aspect ratio."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[method]

    def op(ex, rng):
        img = ex["image"]
        if img.shape[:2] != (h, w):
            img = _np(_pil(img).resize((w, h), resample), img.shape[-1])
        return dict(ex, image=img)
    return op


@register_op("resize_small")
def resize_small(size: int):
    """Resizes so the shorter side is ``size``, keeping the aspect ratio (eval: before center_crop)."""
    def op(ex, rng):
        img = ex["image"]
        hh, ww = img.shape[:2]
        s = size / min(hh, ww)
        new = (max(1, round(ww * s)), max(1, round(hh * s)))
        return dict(ex, image=_np(_pil(img).resize(new, Image.BILINEAR), img.shape[-1]))
    return op


@register_op("center_crop")
def center_crop(size: int):
    def op(ex, rng):
        img = ex["image"]
        hh, ww = img.shape[:2]
        top, left = max(0, (hh - size) // 2), max(0, (ww - size) // 2)
        return dict(ex, image=img[top:top + size, left:left + size])
    return op


@register_op("random_pad_crop")
def random_pad_crop(pad: int):
    """Zero-pads by ``pad`` pixels and crops back at a random offset: a random translation."""
    def op(ex, rng):
        img = ex["image"]
        hh, ww = img.shape[:2]
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        top, left = rng.integers(0, 2 * pad + 1, size=2)
        return dict(ex, image=padded[top:top + hh, left:left + ww])
    return op


@register_op("flip_lr")
def flip_lr(prob: float = 0.5):
    def op(ex, rng):
        if rng.random() < prob:
            ex = dict(ex, image=ex["image"][:, ::-1])
        return ex
    return op


@register_op("random_resized_crop")
def random_resized_crop(size: int, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10):
    """Inception-style crop (Szegedy et al. 2015): a random area fraction in ``scale`` and aspect
    ratio in ``ratio`` (log-uniform), resized to ``size``; falls back to a center crop."""
    def op(ex, rng):
        img = ex["image"]
        hh, ww = img.shape[:2]
        area = hh * ww
        for _ in range(attempts):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= ww and 0 < ch <= hh:
                top, left = rng.integers(0, hh - ch + 1), rng.integers(0, ww - cw + 1)
                break
        else:
            ch = cw = min(hh, ww)
            top, left = (hh - ch) // 2, (ww - cw) // 2
        crop = _pil(img).resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
        return dict(ex, image=_np(crop, img.shape[-1]))
    return op


@register_op("to_rgb")
def to_rgb():
    def op(ex, rng):
        img = ex["image"]
        return dict(ex, image=np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3])
    return op


@register_op("normalize")
def normalize(mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5):
    """uint8 -> float32 (x / 255 - mean) / std, per channel. ImageNet: mean (0.485, 0.456, 0.406),
    std (0.229, 0.224, 0.225); vitjax's default 0.5/0.5 maps pixels to [-1, 1]."""
    mean_a = np.asarray(mean, np.float32)
    std_a = np.asarray(std, np.float32)

    def op(ex, rng):
        img = ex["image"].astype(np.float32) / 255.0
        return dict(ex, image=(img - mean_a) / std_a)
    return op
