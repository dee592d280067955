"""``digits``: scikit-learn's 1,797 handwritten 8x8 digits as a random-access source.

The images ship inside the scikit-learn wheel, so the source needs no network and no ``data_dir``.
They are split once into 1,437 train / 360 test images, stratified, seed 0. ``captions`` builds the
``digit_captions`` image-text source on the same split.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vitjax.data.registry import register_source

DIGITS_NUM_CLASSES = 10
DIGITS_TEST_SIZE = 360


@functools.lru_cache(maxsize=None)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits  # scikit-learn is heavy (~1.5 s); only digits need it
    from sklearn.model_selection import train_test_split  # (same: heavy, digits only)

    d = load_digits()
    # 0..16 grey levels -> 0..255 uint8, with a channel dim: [N, 8, 8, 1].
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int32)
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=DIGITS_TEST_SIZE,
                                              stratify=labels, random_state=0)
    return {"train": (tr_x, tr_y), "test": (te_x, te_y)}


@register_source("digits")
class DigitsSource:
    """scikit-learn digits as a random-access source: {"image": uint8 [8, 8, 1], "label": int32}."""
    num_classes = DIGITS_NUM_CLASSES
    class_names = tuple(str(i) for i in range(10))

    def __init__(self, split: str = "train", *, data_dir: str | None = None):
        del data_dir                    # embedded in scikit-learn
        arrays = _digits_arrays()
        if split not in arrays:
            raise ValueError(f"the digits dataset has splits {sorted(arrays)}, not {split!r}")
        self.split = split
        self.images, self.labels = arrays[split]

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every record at once ({"image": [N, 8, 8, 1], "label": [N]}): the pipeline's in-memory path."""
        return {"image": self.images, "label": self.labels}

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.labels[i]}

    def __repr__(self):
        return f"DigitsSource(split={self.split!r}, n={len(self)})"
