"""``synthetic_digits``: procedurally drawn 16x16 digits, as many distinct training images as asked for.

Each image is one of the ten digits drawn as pen strokes (a hand-made skeleton of polylines and arcs
per class), with every control point jittered, the whole glyph randomly rotated / sheared / scaled /
shifted, drawn with a random pen width and ink contrast (anti-aliased), then covered with Gaussian
pixel noise. Example ``i`` of a split is a pure function of ``(seed, split, i)``: images are made in
chunks of :data:`CHUNK` from ``numpy.random.default_rng([seed, split_code, chunk])``, so

* any prefix is the same whatever length is asked for (``train[:20000]`` is the start of
  ``train[:100000]``), and a process can regenerate any example without storing the dataset;
* ``train`` and ``test`` come from disjoint seed streams (split codes 0 and 1).

The point of it is scaling-law sweeps on a CPU: unlike scikit-learn's 1,437 training digits, a run can
see D fresh images for any D (no repeated epochs), and the test split is large (10,000 images by
default), so the eval loss is measured to about 1-3% (one standard error) instead of ~8%.

Irreducible loss: :data:`LABEL_NOISE` (5%) of the labels, in train and test alike, are redrawn
uniformly from the 10 classes, so even a model that knows the drawn class cannot expect a test
cross-entropy below :func:`label_noise_floor` (0.2824 nats); images that the jitter and noise make
ambiguous add to that. A scaling law's irreducible term E has a known lower bound here, and the
largest runs of a CPU sweep approach it, as real datasets' losses do (Zhai et al. 2022).

Splits: ``train`` (100,000 images unless sliced: ``train[:N]`` takes the first N of an unbounded
stream, any N up to 10^8, generated on first use) and ``test`` (10,000; ``test[:N]`` likewise); also
``[a:b]`` slices. Examples: ``{"image": uint8 [16, 16, 1], "label": int32, "file_name": str}``.
Drawing costs about 0.1 s per 1,024 images on one CPU core (10 s per 100,000, once per process:
chunks are cached in memory, 256 bytes per image).

    --config.input.data.name=synthetic_digits --config.input.data.split='train[:50000]'
"""
from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from vitjax.data.registry import register_source

NUM_CLASSES = 10
IMAGE_SIZE = 16
CHUNK = 1024
SPLITS = {"train": (0, 100_000), "test": (1, 10_000)}     # name -> (seed-stream code, default size)
MAX_SIZE = 10 ** 8
DEFAULT_SEED = 0

# ------------------------------------------------------------------------------------------ glyphs


def _arc(cx, cy, rx, ry, t0, t1, n):
    t = np.deg2rad(np.linspace(t0, t1, n))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]   # y grows downwards


# Strokes (polylines) of each digit in a unit box, x to the right, y down.
_STROKES = {
    0: [_arc(0.5, 0.5, 0.27, 0.39, 0, 360, 13)],
    1: [[(0.33, 0.27), (0.52, 0.1), (0.52, 0.9)]],
    2: [_arc(0.5, 0.33, 0.26, 0.22, 200, 390, 6) + [(0.22, 0.9), (0.8, 0.9)]],
    3: [_arc(0.5, 0.3, 0.24, 0.2, 200, 450, 7), _arc(0.5, 0.7, 0.27, 0.2, 270, 520, 7)],
    4: [[(0.63, 0.9), (0.63, 0.1), (0.18, 0.62), (0.82, 0.62)]],
    5: [[(0.76, 0.1), (0.32, 0.1), (0.29, 0.47)] + _arc(0.5, 0.66, 0.27, 0.23, 225, 500, 7)],
    6: [[(0.7, 0.1), (0.5, 0.21), (0.35, 0.4)] + _arc(0.5, 0.68, 0.23, 0.21, 190, 550, 11)],
    7: [[(0.22, 0.12), (0.78, 0.12), (0.42, 0.9)]],
    8: [_arc(0.5, 0.29, 0.21, 0.19, 90, 450, 10), _arc(0.5, 0.7, 0.26, 0.21, 270, 630, 10)],
    9: [_arc(0.5, 0.32, 0.23, 0.21, 0, 360, 11) + [(0.72, 0.6), (0.62, 0.9)]],
}


@functools.lru_cache(maxsize=None)
def _templates():
    """Control points [10, K, 2] and segments as point-index pairs [10, S] with a mask."""
    K = max(sum(len(s) for s in strokes) for strokes in _STROKES.values())
    S = max(sum(len(s) - 1 for s in strokes) for strokes in _STROKES.values())
    pts = np.full((NUM_CLASSES, K, 2), 0.5)
    a = np.zeros((NUM_CLASSES, S), np.int64)
    b = np.zeros((NUM_CLASSES, S), np.int64)
    mask = np.zeros((NUM_CLASSES, S), bool)
    for c, strokes in _STROKES.items():
        k = s = 0
        for stroke in strokes:
            pts[c, k:k + len(stroke)] = stroke
            for j in range(len(stroke) - 1):
                a[c, s], b[c, s], mask[c, s] = k + j, k + j + 1, True
                s += 1
            k += len(stroke)
    return pts, a, b, mask


# The distortion of each image (unit-box coordinates; 1 pixel = 1/16).
JITTER = 0.03            # std of each control point's displacement
ROTATE = 0.25            # std of the rotation, radians (~14 degrees)
SHEAR = 0.25             # std of the horizontal shear
LOG_SCALE = 0.12         # std of log x/y scale
SHIFT = 0.06             # std of the translation
PEN = (0.035, 0.085)     # half-width of the pen, uniform
CONTRAST = (0.6, 1.0)    # ink intensity, uniform
NOISE = (0.0, 0.15)      # std of the Gaussian pixel noise, uniform per image
LABEL_NOISE = 0.05       # this fraction of labels is redrawn uniformly from the 10 classes


def label_noise_floor(noise: float = None) -> float:
    """The test cross-entropy of the best possible model given the drawn class: the entropy of the
    noisy label, -(1 - e + e/10) ln(1 - e + e/10) - 9 (e/10) ln(e/10) for label noise e."""
    e = LABEL_NOISE if noise is None else float(noise)
    p_true, p_other = 1.0 - e + e / NUM_CLASSES, e / NUM_CLASSES
    return float(-p_true * np.log(p_true) - (NUM_CLASSES - 1) * (p_other * np.log(p_other) if p_other > 0 else 0.0)) + 0.0


def render_chunk(seed: int, split_code: int, chunk: int, clean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [CHUNK, 16, 16, 1] and labels int32 [CHUNK] of one chunk: a pure function of
    its arguments. ``clean=True``: the drawn class instead of the (noisy) label."""
    rng = np.random.default_rng([int(seed), int(split_code), int(chunk)])
    n = CHUNK
    P, A, B, M = _templates()
    y = rng.integers(0, NUM_CLASSES, n)
    pts = P[y] + rng.normal(0, JITTER, (n, P.shape[1], 2))
    # Random affine about the box centre: rotation x shear x anisotropic scale, then a shift.
    th = rng.normal(0, ROTATE, n)
    sh = rng.normal(0, SHEAR, n)
    sx, sy = np.exp(rng.normal(0, LOG_SCALE, (2, n)))
    cos, sin = np.cos(th), np.sin(th)
    R = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)          # [n, 2, 2]
    Sh = np.zeros((n, 2, 2))
    Sh[:, 0, 0] = sx
    Sh[:, 0, 1] = sh * sy
    Sh[:, 1, 1] = sy
    T = R @ Sh
    pts = np.einsum("nij,nkj->nki", T, pts - 0.5) + 0.5 + rng.normal(0, SHIFT, (n, 1, 2))
    pen = rng.uniform(*PEN, n)
    contrast = rng.uniform(*CONTRAST, n)
    noise = rng.uniform(*NOISE, n)
    # Distance from every pixel centre to every segment of the glyph (float32, x and y apart: the
    # [n, S, 256] arrays are the whole cost).
    g = ((np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE).astype(np.float32)
    gx = np.tile(g, IMAGE_SIZE)[None, None]                                          # [1, 1, 256]
    gy = np.repeat(g, IMAGE_SIZE)[None, None]
    pts = pts.astype(np.float32)
    p0 = np.take_along_axis(pts, A[y][..., None], 1)                                 # [n, S, 2]
    p1 = np.take_along_axis(pts, B[y][..., None], 1)
    dx, dy = (p1 - p0)[..., 0:1], (p1 - p0)[..., 1:2]                                # [n, S, 1]
    inv = 1.0 / np.maximum(dx * dx + dy * dy, 1e-12)
    rx, ry = gx - p0[..., 0:1], gy - p0[..., 1:2]                                    # [n, S, 256]
    t = np.clip((rx * dx + ry * dy) * inv, 0.0, 1.0)
    rx -= t * dx
    ry -= t * dy
    dist2 = rx * rx + ry * ry
    dist2[~M[y]] = np.inf
    dist = np.sqrt(dist2.min(1))                                                     # [n, 256]
    ink = np.clip((pen[:, None] - dist) * IMAGE_SIZE + 0.5, 0.0, 1.0) * contrast[:, None]
    img = ink + rng.normal(0, 1, ink.shape) * noise[:, None]
    img = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    label = np.where(rng.random(n) < LABEL_NOISE, rng.integers(0, NUM_CLASSES, n), y)
    return img.reshape(n, IMAGE_SIZE, IMAGE_SIZE, 1), (y if clean else label).astype(np.int32)


@functools.lru_cache(maxsize=4096)
def _chunk(seed: int, split_code: int, chunk: int):
    return render_chunk(seed, split_code, chunk)


def _parse_split(split: str) -> tuple[str, int, int]:
    m = re.fullmatch(r"\s*(\w+)\s*(?:\[\s*(\d*)\s*:\s*(\d*)\s*\])?\s*", split)
    if not m or m.group(1) not in SPLITS:
        raise ValueError(f"the synthetic_digits dataset has splits {sorted(SPLITS)} (sliced as e.g. "
                         f"'train[:50000]' or 'test[1000:2000]'), not {split!r}")
    name, lo, hi = m.group(1), m.group(2), m.group(3)
    start = int(lo) if lo else 0
    stop = int(hi) if hi else SPLITS[name][1]
    if not (0 <= start < stop <= MAX_SIZE):
        raise ValueError(f"synthetic_digits split {split!r}: need 0 <= start < stop <= {MAX_SIZE:,}")
    return name, start, stop


@register_source("synthetic_digits")
class SyntheticDigitsSource:
    """``synthetic_digits`` as a random-access source (see the module docstring)."""
    num_classes = NUM_CLASSES
    class_names = tuple(str(i) for i in range(NUM_CLASSES))

    def __init__(self, split: str = "train", seed: int = DEFAULT_SEED, *, data_dir: str | None = None):
        del data_dir                    # generated, not read
        self.split = split
        self.seed = int(seed)
        self.base, self.start, self.stop = _parse_split(split)
        self.code = SPLITS[self.base][0]

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {self!r}")
        j = self.start + i
        images, labels = _chunk(self.seed, self.code, j // CHUNK)
        return {"image": images[j % CHUNK], "label": labels[j % CHUNK],
                "file_name": f"synthetic_digits/{self.base}[{j}]"}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every record at once, in order: {"image": [n, 16, 16, 1], "label": [n]} (the pipeline's
        in-memory path)."""
        first, last = self.start // CHUNK, (self.stop - 1) // CHUNK
        parts = [_chunk(self.seed, self.code, c) for c in range(first, last + 1)]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        off = first * CHUNK
        return {"image": images[self.start - off:self.stop - off], "label": labels[self.start - off:self.stop - off]}

    def __repr__(self):
        return f"SyntheticDigitsSource(split={self.split!r}, n={len(self)})"
