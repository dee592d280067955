"""Photometric augmentation, RandAugment and multi-crop, in Pillow/numpy on uint8 images.

Ops (registered in ``vitjax.data.registry.OPS``; each takes and returns uint8 [H, W, C]):
  randaugment     RandAugment (Cubuk et al. 2020), timm's "rand-mM-mstd-inc1" flavour used by DeiT
  color_jitter    brightness/contrast/saturation/hue in random order (SimCLR, Chen et al. 2020)
  random_grayscale, gaussian_blur, solarize   (SimCLR / BYOL / DINO view augmentations)
  multi_crop      2 global + N local views for DINO (Caron et al. 2021), each with its own op list
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from vitjax.data import image_io
from vitjax.data.image_ops import apply_ops, pixels
from vitjax.data.registry import OPS, register_op
from vitjax.registry import build_from_specs

FILL = (128, 128, 128)   # grey where geometric ops uncover the canvas (timm's default)


def _pil(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)


def _np(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    return a[..., None] if a.ndim == 2 else a


def _fill(img: Image.Image):
    return FILL[0] if img.mode == "L" else FILL


# ------------------------------------------------------------------------------------ RandAugment
# Magnitudes are on RandAugment's 0..10 scale; at 10: rotate 30 degrees, shear 0.3, translate 45%
# of the side, enhance factors 1 +- 0.9, posterize to 4 bits, solarize threshold 0 (timm's ranges,
# pytorch-image-models timm/data/auto_augment.py, "increasing" variants).

def _signed(v: float, rng: np.random.Generator) -> float:
    return v if rng.random() < 0.5 else -v


def _affine(img, m, rng, kind):
    w, h = img.size
    if kind == "shear_x":
        data = (1, _signed(0.3 * m, rng), 0, 0, 1, 0)
    elif kind == "shear_y":
        data = (1, 0, 0, _signed(0.3 * m, rng), 1, 0)
    elif kind == "translate_x":
        data = (1, 0, _signed(0.45 * m, rng) * w, 0, 1, 0)
    else:
        data = (1, 0, 0, 0, 1, _signed(0.45 * m, rng) * h)
    return img.transform(img.size, Image.AFFINE, data, resample=Image.BILINEAR, fillcolor=_fill(img))


def _enhance(cls):
    return lambda img, m, rng: cls(img).enhance(1.0 + _signed(0.9 * m, rng))


RANDAUGMENT_OPS = {
    # m: magnitude / 10, in [0, 1]
    "identity": lambda img, m, rng: img,
    "auto_contrast": lambda img, m, rng: ImageOps.autocontrast(img),
    "equalize": lambda img, m, rng: ImageOps.equalize(img),
    "rotate": lambda img, m, rng: img.rotate(_signed(30.0 * m, rng), resample=Image.BILINEAR,
                                              fillcolor=_fill(img)),
    "solarize": lambda img, m, rng: ImageOps.solarize(img, int(round(256 - 256 * m))),
    "color": _enhance(ImageEnhance.Color),
    "posterize": lambda img, m, rng: ImageOps.posterize(img, max(1, int(round(8 - 4 * m)))),
    "contrast": _enhance(ImageEnhance.Contrast),
    "brightness": _enhance(ImageEnhance.Brightness),
    "sharpness": _enhance(ImageEnhance.Sharpness),
    "shear_x": lambda img, m, rng: _affine(img, m, rng, "shear_x"),
    "shear_y": lambda img, m, rng: _affine(img, m, rng, "shear_y"),
    "translate_x": lambda img, m, rng: _affine(img, m, rng, "translate_x"),
    "translate_y": lambda img, m, rng: _affine(img, m, rng, "translate_y"),
}


@register_op("randaugment")
def randaugment(num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5,
                prob: float = 0.5, ops: Sequence[str] | None = None):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` transforms drawn uniformly (with replacement)
    from the paper's 14, each applied with probability ``prob`` at ``magnitude`` (0..10, jittered
    by N(0, magnitude_std) per op and clipped). Defaults are DeiT's "rand-m9-mstd0.5-inc1"
    (Touvron et al. 2021); the paper itself uses prob=1 and magnitude_std=0."""
    names = list(ops) if ops is not None else list(RANDAUGMENT_OPS)
    unknown = [n for n in names if n not in RANDAUGMENT_OPS]
    if unknown:
        raise ValueError(f"unknown RandAugment ops {unknown}; known: {sorted(RANDAUGMENT_OPS)}")
    fns = [RANDAUGMENT_OPS[n] for n in names]

    def op(ex, rng):
        img = _pil(pixels(ex))
        for k in rng.integers(0, len(fns), size=num_ops):
            if rng.random() >= prob:
                continue
            m = magnitude + (rng.normal(0.0, magnitude_std) if magnitude_std > 0 else 0.0)
            img = fns[k](img, float(np.clip(m, 0.0, 10.0)) / 10.0, rng)
        return dict(ex, image=_np(img))
    return op


# ---------------------------------------------------------------------------- view augmentations

_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


def _hue_shift(img: Image.Image, shift: float, method: str = "yiq") -> Image.Image:
    """Rotates the hue by ``shift`` turns (-0.5..0.5). "hsv" shifts H in HSV space exactly
    (torchvision's definition, ~2 ms at 224x224); "yiq" rotates the chroma plane of YIQ with one
    3x3 colour matrix (the approximation NVIDIA DALI uses, ~0.2 ms)."""
    if method == "hsv":
        hsv = np.array(img.convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256
        return Image.fromarray(hsv, "HSV").convert("RGB")
    th = -2.0 * np.pi * shift           # the sign that matches the HSV direction
    rot = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(th), -np.sin(th)], [0.0, np.sin(th), np.cos(th)]])
    m = _YIQ_TO_RGB @ rot @ _RGB_TO_YIQ
    return img.convert("RGB", tuple(np.concatenate([m, np.zeros((3, 1))], 1).reshape(-1).tolist()))


@register_op("color_jitter")
def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
                 hue: float = 0.1, prob: float = 0.8, hue_method: str = "yiq"):
    """With probability ``prob``: brightness, contrast, saturation factors uniform in [1 - x, 1 + x]
    and a hue rotation uniform in [-hue, hue] turns, applied in random order (torchvision's
    ColorJitter semantics; defaults are SimCLR/BYOL/DINO's 0.4, 0.4, 0.2, 0.1 with p=0.8).
    ``hue_method``: "yiq" (fast matrix approximation) or "hsv" (exact, 10x slower); see _hue_shift."""
    if hue_method not in ("yiq", "hsv"):
        raise ValueError(f"hue_method must be 'yiq' or 'hsv', got {hue_method!r}")
    def op(ex, rng):
        if rng.random() >= prob:
            return ex
        img = _pil(pixels(ex))
        for k in rng.permutation(4):
            if k == 0 and brightness > 0:
                img = ImageEnhance.Brightness(img).enhance(rng.uniform(1 - brightness, 1 + brightness))
            elif k == 1 and contrast > 0:
                img = ImageEnhance.Contrast(img).enhance(rng.uniform(1 - contrast, 1 + contrast))
            elif k == 2 and saturation > 0 and img.mode == "RGB":
                img = ImageEnhance.Color(img).enhance(rng.uniform(1 - saturation, 1 + saturation))
            elif k == 3 and hue > 0 and img.mode == "RGB":
                img = _hue_shift(img, rng.uniform(-hue, hue), hue_method)
        return dict(ex, image=_np(img))
    return op


@register_op("random_grayscale")
def random_grayscale(prob: float = 0.2):
    """With probability ``prob``, grey (ITU-R 601 luma) repeated over the channels."""
    def op(ex, rng):
        if rng.random() >= prob:
            return ex
        img = pixels(ex)
        if img.shape[-1] == 1:
            return dict(ex, image=img)
        grey = np.asarray(_pil(img).convert("L"))
        return dict(ex, image=np.repeat(grey[..., None], img.shape[-1], axis=-1))
    return op


@register_op("gaussian_blur")
def gaussian_blur(prob: float = 0.5, sigma: Sequence[float] = (0.1, 2.0)):
    """With probability ``prob``, a Gaussian blur of standard deviation uniform in ``sigma`` pixels
    (BYOL/DINO: p=1.0 on the first global view, 0.1 on the second, 0.5 on local views)."""
    def op(ex, rng):
        if rng.random() >= prob:
            return ex
        img = _pil(pixels(ex)).filter(ImageFilter.GaussianBlur(radius=rng.uniform(*sigma)))
        return dict(ex, image=_np(img))
    return op


@register_op("solarize")
def solarize(prob: float = 0.2, threshold: int = 128):
    """With probability ``prob``, inverts pixels >= ``threshold`` (BYOL/DINO: p=0.2 on view 2)."""
    def op(ex, rng):
        if rng.random() >= prob:
            return ex
        img = pixels(ex)
        return dict(ex, image=np.where(img >= threshold, 255 - img, img).astype(img.dtype))
    return op


# ----------------------------------------------------------------------------------- multi-crop

def _op_lists(spec, n: int, what: str) -> list[list]:
    """One op list for all views, or one list per view. (Built from ``OPS`` directly: ``ops``
    imports this module to fill ``OPS``, and has by the time ``multi_crop`` is built.)"""
    spec = list(spec or [])
    per_view = bool(spec) and all(isinstance(s, (list, tuple)) for s in spec)
    if per_view:
        if len(spec) != n:
            raise ValueError(f"multi_crop: {what} has {len(spec)} op lists for {n} views")
        return [build_from_specs(s, OPS) for s in spec]
    built = build_from_specs(spec, OPS)
    return [built] * n


@register_op("multi_crop")
def multi_crop(global_size: int = 224, local_size: int = 96, num_global: int = 2, num_local: int = 6,
               global_scale: Sequence[float] = (0.4, 1.0), local_scale: Sequence[float] = (0.05, 0.4),
               ratio: Sequence[float] = (3 / 4, 4 / 3), global_ops: Sequence[Any] = (),
               local_ops: Sequence[Any] = (), method: str = "bicubic"):
    """Multi-crop (Caron et al. 2020 "SwAV"; DINO's defaults, Caron et al. 2021): ``num_global``
    random-resized crops of ``global_size`` with area in ``global_scale`` and ``num_local`` of
    ``local_size`` with area in ``local_scale``, decoded once (at reduced JPEG size when every
    crop allows it). ``global_ops``/``local_ops`` are op lists run on each view (flip, colour,
    blur, normalize, ...); pass a list of op lists to give each global view its own (DINO blurs
    view 1 always and view 2 rarely, and solarizes only view 2).

    Output layout (replacing ``image``; stacked so every key keeps the batch as its leading dim):
      image_global: [num_global, global_size, global_size, C]
      image_local:  [num_local, local_size, local_size, C]   (absent when num_local = 0)
    """
    g_ops = _op_lists(global_ops, num_global, "global_ops")
    l_ops = _op_lists(local_ops, num_local, "local_ops") if num_local else []

    def op(ex, rng):
        img = ex["image"]
        h, w = image_io.image_size(img)
        boxes, sizes = [], []
        for n, size, scale in ((num_global, global_size, global_scale), (num_local, local_size, local_scale)):
            for _ in range(n):
                top, left, ch, cw = image_io.inception_box(rng, h, w, scale, ratio)
                boxes.append((left, top, left + cw, top + ch))
                sizes.append((size, size))
        if image_io.is_encoded(img):
            views = image_io.crop_resize(image_io.open_image(img), boxes, sizes, method=method)
        else:
            views = [image_io.array_crop_resize(img, b, s, method) for b, s in zip(boxes, sizes)]
        out = {k: v for k, v in ex.items() if k != "image"}
        done = [apply_ops({"image": v}, ops, rng)["image"] for v, ops in zip(views, g_ops + l_ops)]
        out["image_global"] = np.stack(done[:num_global])
        if num_local:
            out["image_local"] = np.stack(done[num_global:])
        return out
    return op


def dino_multi_crop(num_local: int = 6, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> dict[str, Any]:
    """The DINO recipe (Caron et al. 2021, appendix / official main_dino.py DataAugmentationDINO) as
    one op spec: flip + colour jitter + grayscale on every view; blur p=1.0 (global 1), p=0.1 +
    solarize p=0.2 (global 2), p=0.5 (locals); ImageNet normalization."""
    common = [dict(op="flip_lr"), dict(op="color_jitter", brightness=0.4, contrast=0.4, saturation=0.2,
                                       hue=0.1, prob=0.8), dict(op="random_grayscale", prob=0.2)]
    norm = [dict(op="normalize", mean=mean, std=std)]
    return dict(op="multi_crop", num_local=num_local,
                global_ops=[common + [dict(op="gaussian_blur", prob=1.0)] + norm,
                            common + [dict(op="gaussian_blur", prob=0.1), dict(op="solarize", prob=0.2)] + norm],
                local_ops=common + [dict(op="gaussian_blur", prob=0.5)] + norm)

