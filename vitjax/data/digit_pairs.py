"""``digit_pairs``: two handwritten digits of the same class stacked into one 16x8 image, the
long-context data of the Perceiver AR demo (``configs/perceiver_ar_digits.py``).

Example i of a split is that split's digit i on top and its *partner* below: another image of the
same class, drawn once by a seeded permutation within each class (each image is on top once and
below once), so the pairing is the same in every run and process. In raster order the 128 pixels
are the first digit then the second, so predicting the second half needs the first: what class it
is lives 64 tokens back. The splits are the ``digits`` source's (1,437 train / 360 test pairs).

Examples: {"image": uint8 [16, 8, 1], "label": int32 (the class of both), "file_name": str}.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vitjax.data.digits import DigitsSource
from vitjax.data.registry import register_source

PAIRING_SEED = 0


@functools.lru_cache(maxsize=None)
def partners(split: str) -> np.ndarray:
    """[N] index of each image's partner: within each class, image perm[j] is followed by perm[j+1]
    (cyclically) for a permutation drawn with ``PAIRING_SEED``."""
    labels = DigitsSource(split).labels
    rng = np.random.default_rng(PAIRING_SEED)
    out = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        perm = rng.permutation(np.flatnonzero(labels == c))
        out[perm] = np.roll(perm, -1)
    return out


@register_source("digit_pairs")
class DigitPairsSource:
    """Pairs of same-class digits: {"image": uint8 [16, 8, 1], "label": int32, "file_name": str}."""
    num_classes = 10
    class_names = DigitsSource.class_names

    def __init__(self, split: str = "train", *, data_dir: str | None = None):
        self.digits = DigitsSource(split, data_dir=data_dir)
        self.split = split
        self.partner = partners(split)

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.partner[i])
        image = np.concatenate([self.digits.images[i], self.digits.images[j]], axis=0)
        return {"image": image, "label": self.digits.labels[i],
                "file_name": f"digit_pairs/{self.split}[{i}]+[{j}]"}

    def __repr__(self):
        return f"DigitPairsSource(split={self.split!r}, n={len(self)})"
