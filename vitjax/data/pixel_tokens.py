"""Pixel tokens for autoregressive image models (iGPT, Chen et al. 2020, sec. 3.1): a colour palette
fitted by k-means, each pixel replaced by the index of its nearest palette colour, raster order, a
start token in front.

    palette = fit_palette(pixels, k)                      # [K, C] uint8, k-means over the colours
    dict(op="pixel_tokens", palette=palette.tolist())     # image [H, W, C] -> tokens int32 [1 + H*W]

Token ids: 0..K-1 are palette colours, K is the start token (vocabulary K + 1). Raster order is
row by row, left to right (``image.reshape(H * W, C)``), so the top half of an image is a prefix of
its sequence: image completion is prompting with that prefix. ``tokens_to_image`` inverts the op.

scikit-learn's digits have 17 grey levels (0..16, stored as round(v * 255 / 16)); k-means with
k = 17 recovers exactly those levels (``DIGITS_PALETTE``), so their tokens lose nothing. For RGB
data ``fit_palette`` is plain k-means (k-means++ init, Lloyd iterations) over the distinct colours
weighted by their counts (iGPT used K = 512 over RGB).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vitjax.data.image_ops import pixels
from vitjax.data.registry import register_op

#: The digits' 17 grey levels 0..16 as the ``digits`` source stores them (uint8, round(v * 255 / 16)).
DIGITS_PALETTE = tuple((round(v * 255 / 16),) for v in range(17))


def _check_palette(palette) -> np.ndarray:
    pal = np.asarray(palette, np.float32)
    if pal.ndim != 2 or len(pal) < 1:
        raise ValueError(f"a palette is a [K, channels] list of colours, got shape {pal.shape}")
    return pal


def fit_palette(colours: np.ndarray, k: int, *, seed: int = 0, iters: int = 50) -> np.ndarray:
    """k-means palette of ``colours`` [..., C] (uint8 pixels of any shape, last dim = channels).

    Runs on the distinct colours weighted by their counts, so millions of pixels with few distinct
    values cost little. k-means++ never picks a colour twice, so with at most ``k`` distinct colours
    every one becomes a centre and the palette is exact. Returns [min(k, distinct), C] uint8, sorted
    (lexicographically by channel) so a palette does not depend on the initialisation order."""
    x = np.asarray(colours)
    if x.ndim < 2:
        raise ValueError(f"fit_palette expects pixels [..., channels], got shape {x.shape}")
    if k < 1:
        raise ValueError(f"fit_palette: k={k} must be >= 1")
    uniq, counts = np.unique(x.reshape(-1, x.shape[-1]), axis=0, return_counts=True)
    pts, w = uniq.astype(np.float64), counts.astype(np.float64)
    k = min(k, len(pts))
    rng = np.random.default_rng(seed)
    centres = [pts[rng.choice(len(pts), p=w / w.sum())]]
    d2 = ((pts - centres[0]) ** 2).sum(-1)
    for _ in range(1, k):             # k-means++: next centre drawn with probability ~ weight * D^2
        p = w * d2
        centres.append(pts[rng.choice(len(pts), p=p / p.sum())])
        d2 = np.minimum(d2, ((pts - centres[-1]) ** 2).sum(-1))
    c = np.stack(centres)
    for _ in range(iters):
        assign = ((pts[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, pts * w[:, None])
        mass = np.bincount(assign, weights=w, minlength=k)
        new = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-12)[:, None], c)
        if np.allclose(new, c):
            break
        c = new
    pal = np.clip(np.round(c), 0, 255).astype(np.uint8)
    return pal[np.lexsort(pal.T[::-1])]


def fit_palette_from_source(source, k: int, *, max_examples: int = 10_000, seed: int = 0,
                            key: str = "image") -> np.ndarray:
    """``fit_palette`` over the (decoded) images of the first ``max_examples`` records of a source."""
    n = min(len(source), max_examples)
    images = [np.asarray(pixels(source[i], key)) for i in range(n)]
    return fit_palette(np.concatenate([im.reshape(-1, im.shape[-1]) for im in images]), k, seed=seed)


def image_to_tokens(image: np.ndarray, palette) -> np.ndarray:
    """image [H, W, C] -> int32 [H * W]: each pixel's nearest palette colour (squared RGB
    distance), in raster order."""
    pal = _check_palette(palette)
    img = np.asarray(image, np.float32)
    if img.ndim != 3 or img.shape[-1] != pal.shape[1]:
        raise ValueError(f"pixel tokens: the image has shape {img.shape} but the palette has "
                         f"{pal.shape[1]}-channel colours; convert the image (e.g. op 'to_rgb' or "
                         f"'to_grayscale') or fit the palette on images like it")
    flat = img.reshape(-1, pal.shape[1])
    return ((flat[:, None] - pal[None]) ** 2).sum(-1).argmin(1).astype(np.int32)


def tokens_to_image(tokens, palette, shape: Sequence[int]) -> np.ndarray:
    """tokens [..., H * W] (palette indices, no start token) -> uint8 [..., H, W, C]. Ids outside the
    palette (a start token sampled by mistake) become palette colour 0."""
    pal = np.asarray(palette, np.uint8)
    h, w = int(shape[0]), int(shape[1])
    t = np.asarray(tokens)
    if t.shape[-1] != h * w:
        raise ValueError(f"tokens_to_image: {t.shape[-1]} tokens do not fill a {h}x{w} image")
    t = np.where((t >= 0) & (t < len(pal)), t, 0)
    return pal[t].reshape(t.shape[:-1] + (h, w, pal.shape[1]))


def start_token(palette) -> int:
    """The start token's id: one past the palette (the vocabulary is K + 1)."""
    return len(_check_palette(palette))


@register_op("pixel_tokens")
def pixel_tokens(palette: Sequence[Sequence[float]] = DIGITS_PALETTE, start: bool = True,
                 key: str = "image", out_key: str = "tokens", keep_image: bool = False):
    """image ``key`` uint8 [H, W, C] -> ``out_key`` int32 [start + H * W]: the start token (id K,
    when ``start``) then the nearest-palette-colour index of each pixel in raster order. The image
    is dropped unless ``keep_image`` (a batch carries only what the model reads)."""
    pal = _check_palette(palette)
    head = np.array([len(pal)] if start else [], np.int32)

    def op(ex: dict[str, Any], rng) -> dict[str, Any]:
        ids = np.concatenate([head, image_to_tokens(pixels(ex, key), pal)])
        out = dict(ex, **{out_key: ids})
        if not keep_image:
            out.pop(key)
        return out
    return op
