"""Random-access data sources, selected by ``config.input.data = dict(name=..., split=..., data_dir=...)``.

A source has ``__len__`` and ``__getitem__(i) -> dict`` (``image``: uint8 [H, W, C], ``label``: int),
which is what grain needs to shuffle globally and to checkpoint its position.

* ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (shipped inside the scikit-learn wheel, so
  it needs no network), split once into 1,437 train / 360 test images, stratified, seed 0.
* any other name: a TFDS dataset prepared in ArrayRecord format under ``data_dir``
  (``tfds build NAME --data_dir DIR --file_format=array_record``).
"""
from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

DIGITS_NUM_CLASSES = 10
DIGITS_TEST_SIZE = 360


@functools.lru_cache(maxsize=None)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    # 0..16 grey levels -> 0..255 uint8, with a channel dim: [N, 8, 8, 1].
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = d.target.astype(np.int32)
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=DIGITS_TEST_SIZE,
                                              stratify=labels, random_state=0)
    return {"train": (tr_x, tr_y), "test": (te_x, te_y)}


class DigitsSource:
    """scikit-learn digits as a random-access source: {"image": uint8 [8, 8, 1], "label": int32}."""
    num_classes = DIGITS_NUM_CLASSES
    class_names = tuple(str(i) for i in range(10))

    def __init__(self, split: str = "train"):
        arrays = _digits_arrays()
        if split not in arrays:
            raise ValueError(f"the digits dataset has splits {sorted(arrays)}, not {split!r}")
        self.split = split
        self.images, self.labels = arrays[split]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.labels[i]}

    def __repr__(self):
        return f"DigitsSource(split={self.split!r}, n={len(self)})"


class TfdsSource:
    """A TFDS dataset prepared as ArrayRecord, read with ``tfds.data_source`` (no TensorFlow)."""

    def __init__(self, name: str, split: str, data_dir: str | None):
        import tensorflow_datasets as tfds

        data_dir = os.path.expanduser(data_dir) if data_dir else None
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # unknown name, unreadable folder
            raise FileNotFoundError(self._how_to_prepare(name, data_dir, f"({type(e).__name__}: {e})")) from e
        if not builder.is_prepared():
            raise FileNotFoundError(self._how_to_prepare(name, data_dir, "it is not prepared there"))
        if split not in builder.info.splits:
            raise ValueError(f"dataset {name!r} in {data_dir} has splits {list(builder.info.splits)}, "
                             f"not {split!r}; set config.input.data.split")
        self._src = builder.as_data_source(split=split)
        self.split = split
        label = builder.info.features.get("label") if hasattr(builder.info.features, "get") else None
        self.num_classes = getattr(label, "num_classes", None)
        self.class_names = tuple(label.names) if getattr(label, "names", None) else None

    @staticmethod
    def _how_to_prepare(name, data_dir, why):
        return (f"TFDS dataset {name!r} was not found in data_dir={data_dir!r}: {why}. Prepare it with\n"
                f"  tfds build {name} --data_dir {data_dir or '~/tensorflow_datasets'} --file_format=array_record\n"
                f"(ImageNet needs its archives placed in the manual dir first; see the TFDS catalog page), "
                f"or point --config.input.data.data_dir at the folder that holds it.")

    def __len__(self) -> int:
        return len(self._src)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self._src[i]
        return {"image": np.asarray(ex["image"]), "label": np.int32(ex.get("label", -1))}


def get_source(name: str, split: str, data_dir: str | None = None):
    if name == "digits":
        return DigitsSource(split)
    return TfdsSource(name, split, data_dir)
