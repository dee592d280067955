"""``shapes_scenes``: generated detection scenes, the offline data of the DETR/YOLOS demos.

Each example is a 64x64 RGB canvas (a random dark background colour plus pixel noise) with 1-5
filled shapes of 3 classes, ``0 square``, ``1 circle``, ``2 triangle`` (upward), each of a random
bright colour and a side/diameter of 12-26 px, placed so that no two boxes overlap by more than 20%
IoU (a shape may partly hide an earlier one). Boxes are the shapes' pixel extents, (x0, y0, x1, y1)
with x1/y1 exclusive: ``{"image": uint8 [64, 64, 3], "boxes": float32 [n, 4], "labels": int32 [n],
"file_name": str}`` (the format of ``vitjax.data.detection``).

Example ``i`` of a split is a pure function of ``(seed, split, i)`` (``numpy.random.default_rng([seed,
split code, i])``): nothing is stored, any prefix is stable, and ``train`` (default 20,000 scenes,
sliced as ``train[:N]`` for any N up to 10^8) and ``test`` (1,000 held-out scenes) come from disjoint
streams.

    config.input.data = dict(name="shapes_scenes", split="train")
    config.input.eval_data = dict(name="shapes_scenes", split="test")
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from vitjax.data.registry import register_source

SIZE = 64
CLASS_NAMES = ("square", "circle", "triangle")
SPLITS = {"train": (0, 20_000), "test": (1, 1_000)}       # name -> (seed-stream code, default size)
MAX_SIZE = 10 ** 8
MAX_SHAPES = 5
SHAPE_SIZE = (12, 26)
MAX_IOU = 0.2


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _mask(kind: int, x0: int, y0: int, s: int) -> np.ndarray:
    """Boolean [SIZE, SIZE] mask of one shape whose s x s box starts at (x0, y0)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    u, v = (xx - x0) / s, (yy - y0) / s                     # box coordinates in [0, 1)
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    if kind == 0:
        return inside
    if kind == 1:
        return inside & ((u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25)
    return inside & (v >= 1 - 2 * u) & (v >= 2 * u - 1)   # apex at the top centre, base at the bottom


def render_scene(seed: int, split_code: int, index: int) -> dict[str, np.ndarray]:
    """One scene: image uint8 [64, 64, 3], boxes float32 [n, 4] (xyxy pixels), labels int32 [n]."""
    rng = np.random.default_rng([int(seed), int(split_code), int(index)])
    img = rng.uniform(0, 60, 3)[None, None] + rng.normal(0, 6, (SIZE, SIZE, 3))
    n = int(rng.integers(1, MAX_SHAPES + 1))
    boxes, labels = [], []
    for _ in range(40 * n):
        if len(boxes) == n:
            break
        s = int(rng.integers(SHAPE_SIZE[0], SHAPE_SIZE[1] + 1))
        x0, y0 = (int(v) for v in rng.integers(0, SIZE - s + 1, 2))
        box = (x0, y0, x0 + s, y0 + s)
        if any(_iou(box, b) > MAX_IOU for b in boxes):
            continue
        kind = int(rng.integers(0, len(CLASS_NAMES)))
        colour = rng.uniform(120, 255, 3)
        m = _mask(kind, x0, y0, s)
        img[m] = colour
        ys, xs = np.nonzero(m)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
        labels.append(kind)
    # A later shape may cover part of an earlier one; the earlier box keeps its full extent, as an
    # annotator would draw the object's outline.
    return {"image": np.clip(np.round(img), 0, 255).astype(np.uint8),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int32)}


def _parse_split(split: str) -> tuple[str, int, int]:
    m = re.fullmatch(r"\s*(\w+)\s*(?:\[\s*(\d*)\s*:\s*(\d*)\s*\])?\s*", split)
    if not m or m.group(1) not in SPLITS:
        raise ValueError(f"the shapes_scenes dataset has splits {sorted(SPLITS)} (sliced as e.g. "
                         f"'train[:5000]'), not {split!r}")
    name = m.group(1)
    start = int(m.group(2)) if m.group(2) else 0
    stop = int(m.group(3)) if m.group(3) else SPLITS[name][1]
    if not 0 <= start < stop <= MAX_SIZE:
        raise ValueError(f"shapes_scenes split {split!r}: need 0 <= start < stop <= {MAX_SIZE:,}")
    return name, start, stop


@register_source("shapes_scenes")
class ShapesScenesSource:
    """``shapes_scenes`` as a random-access source (see the module docstring)."""
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, split: str = "train", seed: int = 0, *, data_dir: str | None = None):
        del data_dir                        # generated, not read
        self.split, self.seed = split, int(seed)
        self.base, self.start, self.stop = _parse_split(split)
        self.code = SPLITS[self.base][0]

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {self!r}")
        j = self.start + i
        return dict(render_scene(self.seed, self.code, j), file_name=f"shapes_scenes/{self.base}[{j}]")

    def __repr__(self):
        return f"ShapesScenesSource(split={self.split!r}, n={len(self)})"
