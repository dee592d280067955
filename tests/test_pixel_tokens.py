"""Pixel tokens (k-means palettes, image <-> token ops) and the token data path through grain: the
same global order, per-process rows and exact resume as images, for pixel tokens and text tokens."""
from __future__ import annotations

import numpy as np
import pytest

from vitjax.data import eval_batches, get_source, train_iterator
from vitjax.data.digit_pairs import partners
from vitjax.data.ops import build_ops
from vitjax.data.pixel_tokens import (DIGITS_PALETTE, fit_palette, fit_palette_from_source, image_to_tokens,
                                      start_token, tokens_to_image)

PAL = [list(c) for c in DIGITS_PALETTE]
PIXEL_OPS = [dict(op="pixel_tokens", palette=PAL)]


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_kmeans_recovers_the_17_digit_grey_levels_exactly():
    src = get_source("digits", "train")
    assert fit_palette_from_source(src, 17).ravel().tolist() == \
        [0, 16, 32, 48, 64, 80, 96, 112, 128, 143, 159, 175, 191, 207, 223, 239, 255]
    assert np.array_equal(fit_palette(src.images, 17), np.asarray(DIGITS_PALETTE, np.uint8))


def test_kmeans_on_rgb_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[20, 30, 200], [200, 40, 40], [90, 220, 90]], float)
    pts = np.concatenate([c + rng.normal(0, 4, (500, 3)) for c in centres])
    pal = fit_palette(np.clip(pts, 0, 255).astype(np.uint8).reshape(30, 50, 3), 3, seed=1)
    order = np.lexsort(centres.T[::-1])
    assert pal.dtype == np.uint8 and pal.shape == (3, 3)
    np.testing.assert_allclose(pal, centres[order], atol=1.0)


def test_tokens_are_raster_order_with_a_start_token_and_decode_back():
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [9, 9, 9]], np.uint8)
    ids = np.array([[0, 1, 2], [3, 4, 5]])
    image = np.clip(pal[ids].astype(int) + np.array([3, -2, 1]), 0, 255).astype(np.uint8)   # near each colour
    (op,) = build_ops([dict(op="pixel_tokens", palette=pal.tolist())])
    out = op({"image": image, "label": np.int32(1)}, None)
    assert sorted(out) == ["label", "tokens"] and out["tokens"].dtype == np.int32
    assert out["tokens"].tolist() == [6, 0, 1, 2, 3, 4, 5] and start_token(pal) == 6
    np.testing.assert_array_equal(tokens_to_image(out["tokens"][1:], pal, (2, 3)), pal[ids])
    with pytest.raises(ValueError) as e:
        image_to_tokens(np.zeros((2, 3, 1), np.uint8), pal)
    assert str(e.value) == ("pixel tokens: the image has shape (2, 3, 1) but the palette has 3-channel colours; "
                            "convert the image (e.g. op 'to_rgb' or 'to_grayscale') or fit the palette on images "
                            "like it")


def test_digit_pairs_are_same_class_deterministic_and_use_each_image_twice():
    src = get_source("digit_pairs", "test")
    digits = get_source("digits", "test")
    p = partners("test")
    assert len(src) == 360 and sorted(p.tolist()) == list(range(360)) and np.all(p != np.arange(360))
    assert np.array_equal(digits.labels[p], digits.labels)
    ex = src[5]
    assert ex["image"].shape == (16, 8, 1) and ex["label"] == digits.labels[5]
    np.testing.assert_array_equal(ex["image"][:8], digits.images[5])
    np.testing.assert_array_equal(ex["image"][8:], digits.images[p[5]])
    (op,) = build_ops(PIXEL_OPS)
    tokens = op(dict(ex), None)["tokens"]
    assert tokens.shape == (129,) and tokens[0] == 17
    np.testing.assert_array_equal(tokens_to_image(tokens[1:], PAL, (16, 8)), ex["image"])


@pytest.fixture(scope="module")
def captions():
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return [{"text": f"a handwritten {words[i % 10]} no. {i}", "label": np.int32(i % 10)} for i in range(30)]


@pytest.mark.parametrize("kind", ["pixels", "text"])
def test_token_batches_resume_exactly_and_split_across_processes(kind, captions):
    if kind == "pixels":
        src, ops, key, width = get_source("digit_pairs", "train"), PIXEL_OPS, "tokens", 129
    else:
        src, ops, key, width = captions, [dict(op="tokenize", tokenizer="bytes", context_length=24)], "tokens", 24
    it = train_iterator(src, ops, 12, seed=3)
    first = take(it, 2)
    state = it.get_state()
    rest = take(it, 4)
    assert sorted(first[0]) == ["label", "tokens"] and first[0][key].shape == (12, width)
    assert first[0][key].dtype == np.int32
    it2 = train_iterator(src, ops, 12, seed=3)
    it2.set_state(state)
    assert same(rest, take(it2, 4))
    assert not same(first, take(train_iterator(src, ops, 12, seed=4), 2))
    # Two processes' rows of each global batch are the one-process global batch, in order.
    parts = [take(train_iterator(src, ops, 12, seed=3, process_index=p, process_count=2), 6) for p in range(2)]
    for step, whole in enumerate(first + rest):
        np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[key])


def test_token_eval_batches_are_padded_and_masked():
    src = get_source("digit_pairs", "test")
    batches = list(eval_batches(src, PIXEL_OPS, 100))
    assert [int(b["mask"].sum()) for b in batches] == [100, 100, 100, 60]
    assert all(b["tokens"].shape == (100, 129) for b in batches)
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    np.testing.assert_array_equal(labels, get_source("digits", "test").labels)
