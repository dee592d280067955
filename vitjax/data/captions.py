"""Image-text pairs made from scikit-learn's digits: the offline stand-in for a web caption dataset.

``config.input.data = dict(name="digit_captions", split="train")`` gives the same 1,437 train / 360
test images as the ``digits`` source, each with a generated English caption, e.g.

    "a photo of the number seven", "handwritten 7", "a bold handwritten seven", "a thin digit 7"

The caption template, the spelling of the digit (word or numeral) and the style words are chosen per
example from a seeded generator, so a given (split, index) always has the same caption. Style words
describe the image itself: "thin"/"bold" from the ink coverage (the lightest/heaviest third of its
class) and "small"/"wide" from the width of the inked columns. They make captions partly
image-specific, which is what gives text retrieval (several images per class) something to find.

Examples: {"image": uint8 [8, 8, 1], "label": int32, "text": str, "file_name": str}.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vitjax.data.digits import DigitsSource
from vitjax.data.registry import register_source

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# {d}: the digit as a word or a numeral (chosen per example); {s}: a style word ("thin", "bold",
# "small", "wide"), templates with {s} are only used when the image has one.
TEMPLATES = (
    "a photo of the number {d}",
    "handwritten {d}",
    "a handwritten {d}",
    "the digit {d}",
    "a picture of a {d}",
    "an image of the numeral {d}",
    "a scan of a handwritten {d}",
    "{d}",
    "a low resolution photo of the number {d}",
    "someone wrote the number {d}",
    "a {s} handwritten {d}",
    "a {s} digit {d}",
    "a {s} {d}",
    "a photo of a {s} number {d}",
)

SPLIT_SEEDS = {"train": 0, "test": 1}


@functools.lru_cache(maxsize=None)
def _styles(split: str) -> tuple[tuple[str, ...], ...]:
    """Per-example style words from the pixels: ink tertiles within the class, and inked width."""
    src = DigitsSource(split)
    imgs = src.images[..., 0].astype(np.float32)
    ink = imgs.mean(axis=(1, 2))
    cols = (imgs.max(axis=1) > 64).sum(axis=1)          # inked columns out of 8
    out = []
    lo_hi = {}
    for c in range(10):
        v = ink[src.labels == c]
        lo_hi[c] = (np.quantile(v, 1 / 3), np.quantile(v, 2 / 3))
    for i in range(len(src)):
        lo, hi = lo_hi[int(src.labels[i])]
        words = []
        if ink[i] <= lo:
            words.append("thin")
        elif ink[i] >= hi:
            words.append("bold")
        if cols[i] <= 4:
            words.append("small")
        elif cols[i] >= 8:
            words.append("wide")
        out.append(tuple(words))
    return tuple(out)


def make_caption(label: int, styles: tuple[str, ...], rng: np.random.Generator) -> str:
    usable = [t for t in TEMPLATES if "{s}" not in t or styles]
    template = usable[int(rng.integers(len(usable)))]
    digit = NUMBER_WORDS[label] if rng.random() < 0.5 else str(label)
    style = styles[int(rng.integers(len(styles)))] if styles else ""
    return template.format(d=digit, s=style)


@register_source("digit_captions")
class DigitCaptionSource:
    """scikit-learn digits with generated captions: {"image", "label", "text", "file_name"}."""
    num_classes = 10
    class_names = NUMBER_WORDS

    def __init__(self, split: str = "train", seed: int = 0, *, data_dir: str | None = None):
        del data_dir                    # embedded in scikit-learn
        self._digits = DigitsSource(split)          # raises ValueError naming the valid splits
        self.split = split
        self._styles = _styles(split)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self._digits)

    def caption(self, i: int) -> str:
        rng = np.random.default_rng([self.seed, SPLIT_SEEDS[self.split], int(i)])
        return make_caption(int(self._digits.labels[i]), self._styles[i], rng)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every record at once ({"image", "label", "text"}): the pipeline's in-memory path."""
        return dict(self._digits.arrays(), text=np.array([self.caption(i) for i in range(len(self))]))

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self._digits[i]
        return dict(ex, text=self.caption(i), file_name=f"digit_captions/{self.split}[{i}]")

    def __repr__(self):
        return f"DigitCaptionSource(split={self.split!r}, n={len(self)})"
