"""Decoding encoded images (JPEG, PNG, WebP, ...) to 8-bit RGB with Pillow, and crop boxes.

The train and eval hot paths decode straight to a crop: ``decode_crop`` asks libjpeg for the
smallest DCT-scaled version (1/1, 1/2, 1/4 or 1/8, Pillow's ``Image.draft``) that still has at
least the output's resolution inside the crop box, then resizes only the box. On a 2,000-pixel web
photo cropped to 224 this skips most of the decoding; on a 500x375 ImageNet photo it changes little.

Every mode Pillow reads becomes RGB the same way (``to_rgb``): grey and CMYK are converted,
transparency is composited onto white, and 16-bit grey is scaled (not clipped) to 8 bits.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitjax.data.bad_input import BadExampleError

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
            "lanczos": Image.LANCZOS, "box": Image.BOX}

# Box = (left, top, right, bottom) in pixels of the full-size image, floats allowed.
Box = tuple[float, float, float, float]


def is_encoded(x) -> bool:
    """True for encoded image bytes (as tfds ``SkipDecoding``, ArrayRecord or a list source give them)."""
    if isinstance(x, (bytes, bytearray, memoryview, np.bytes_)):
        return True
    return isinstance(x, np.ndarray) and x.dtype == object and x.size == 1


def _as_bytes(x) -> bytes:
    return bytes(x.item()) if isinstance(x, np.ndarray) else bytes(x)


def open_image(data) -> Image.Image:
    """Parses the header only (the pixels are decoded by ``load``); BadExampleError if not an image."""
    try:
        return Image.open(io.BytesIO(_as_bytes(data)))
    except UnidentifiedImageError as e:
        raise BadExampleError("not an image (no known image format)") from e
    except Exception as e:  # Pillow raises many types for junk input; the scope is this one call
        raise BadExampleError(f"not a readable image ({type(e).__name__}: {e})") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparent pixels become white (not whatever colour the file
    stored under alpha 0); 16/32-bit grey is rescaled from its full range."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            a = a * 255.0 if a.size and a.max() <= 1.0 else a
        elif mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0                      # 65535 -> 255
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return img.convert("RGB")              # L, 1, P, CMYK, YCbCr, LAB, HSV


def load(img: Image.Image, *, mode: str = "RGB") -> Image.Image:
    """Decodes the pixels of an opened image and converts them to ``mode`` ("RGB" or "L")."""
    try:
        img.load()
        out = to_rgb(img)
        return out.convert("L") if mode == "L" else out
    except BadExampleError:
        raise
    except Exception as e:  # truncated data, bad Huffman tables, decompression bombs, ...
        raise BadExampleError(f"cannot decode image ({type(e).__name__}: {e})") from e


def decode(data, *, channels: int = 3) -> np.ndarray:
    """Encoded bytes -> uint8 [H, W, 3] (or [H, W, 1] with channels=1)."""
    img = load(open_image(data), mode="L" if channels == 1 else "RGB")
    a = np.asarray(img)
    return a[..., None] if a.ndim == 2 else a


def decode_crop(data, box: Box, size: tuple[int, int], *, method: str = "bilinear",
                channels: int = 3) -> np.ndarray:
    """Decodes only what is needed to resize ``box`` (full-size pixel coordinates) to ``size``
    (height, width): reduced-size JPEG decoding when the box has pixels to spare."""
    img = open_image(data)
    return crop_resize(img, [box], [size], method=method, channels=channels)[0]


def crop_resize(img: Image.Image, boxes: Sequence[Box], sizes: Sequence[tuple[int, int]], *,
                method: str = "bilinear", channels: int = 3) -> list[np.ndarray]:
    """Resizes each box of an opened (not yet loaded) image to its (height, width), decoding once at
    the coarsest JPEG scale that keeps every box at or above its output resolution."""
    w, h = img.size
    # The largest fraction of full resolution that any box needs to keep its output resolution.
    need = max(max(ow / max(r - l, 1e-6), oh / max(b - t, 1e-6))
               for (l, t, r, b), (oh, ow) in zip(boxes, sizes))
    if img.format == "JPEG" and need < 0.5:
        try:
            # draft picks the largest 1/2^k reduction whose size is still >= the requested size.
            img.draft("RGB", (math.ceil(w * need), math.ceil(h * need)))
        except Exception as e:
            raise BadExampleError(f"cannot decode image ({type(e).__name__}: {e})") from e
    pil = load(img, mode="L" if channels == 1 else "RGB")
    sx, sy = pil.size[0] / w, pil.size[1] / h
    resample = RESAMPLE[method]
    out = []
    for (l, t, r, b), (oh, ow) in zip(boxes, sizes):
        crop = pil.resize((ow, oh), resample, box=(l * sx, t * sy, r * sx, b * sy))
        a = np.asarray(crop)
        out.append(a[..., None] if a.ndim == 2 else a)
    return out


def array_crop_resize(img: np.ndarray, box: Box, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """The same crop-and-resize on an already decoded uint8 [H, W, C] array."""
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    a = np.asarray(pil.resize((size[1], size[0]), RESAMPLE[method], box=box))
    return a[..., None] if a.ndim == 2 else a


def image_size(x) -> tuple[int, int]:
    """(height, width) of encoded bytes (header only) or of an array."""
    if is_encoded(x):
        w, h = open_image(x).size
        return h, w
    return int(x.shape[0]), int(x.shape[1])


def inception_box(rng: np.random.Generator, h: int, w: int, scale: Sequence[float] = (0.08, 1.0),
                  ratio: Sequence[float] = (3 / 4, 4 / 3), attempts: int = 10) -> tuple[int, int, int, int]:
    """Inception-style crop (Szegedy et al. 2015, "Going deeper with convolutions", sec. 6): an area
    fraction uniform in ``scale``, an aspect ratio log-uniform in ``ratio``; after ``attempts``
    misses, the central square. Returns (top, left, crop_h, crop_w)."""
    area = h * w
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            return int(top), int(left), ch, cw
    ch = cw = min(h, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_box(h: int, w: int, crop_fraction: float) -> Box:
    """The central square whose side is ``crop_fraction`` of the shorter side."""
    side = crop_fraction * min(h, w)
    left, top = (w - side) / 2, (h - side) / 2
    return (left, top, left + side, top + side)
