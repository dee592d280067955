"""Random translations by whole pixels, per axis: ``random_translate`` (iGPT-style augmentation of
small images, where a crop would lose too much of the digit).

    dict(op="random_translate", max_dy=0, max_dx=1)     # image [H, W, C] -> [H, W, C], same dtype

Each example moves by dy in -max_dy..max_dy rows and dx in -max_dx..max_dx columns (uniform, drawn
from the example's rng); the uncovered border is ``fill`` (the digits' background, 0). With
max_dy = max_dx = p the shifts have the distribution of ``random_pad_crop(pad=p)``'s. ``max_dy=0``
keeps each row's content in its row, so a digit's top half stays the top half (what image completion
is prompted with).
"""
from __future__ import annotations

import numpy as np

from vitjax.data.image_ops import pixels
from vitjax.data.registry import register_op


def translate(img: np.ndarray, dy: int, dx: int, fill=0) -> np.ndarray:
    """``img`` [H, W, ...] moved down ``dy`` rows and right ``dx`` columns (negative: up / left);
    uncovered pixels are ``fill``."""
    hh, ww = img.shape[:2]
    out = np.full_like(img, fill)
    if abs(dy) < hh and abs(dx) < ww:
        out[max(dy, 0):hh + min(dy, 0), max(dx, 0):ww + min(dx, 0)] = \
            img[max(-dy, 0):hh - max(dy, 0), max(-dx, 0):ww - max(dx, 0)]
    return out


@register_op("random_translate")
def random_translate(max_dy: int = 1, max_dx: int = 1, fill: int = 0):
    if max_dy < 0 or max_dx < 0:
        raise ValueError(f"random_translate: max_dy={max_dy} and max_dx={max_dx} must be >= 0")

    def op(ex, rng):
        dy = int(rng.integers(-max_dy, max_dy + 1))
        dx = int(rng.integers(-max_dx, max_dx + 1))
        return dict(ex, image=translate(pixels(ex), dy, dx, fill))
    return op
