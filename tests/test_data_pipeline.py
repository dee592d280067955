"""grain pipelines: determinism, exact resumption (also through orbax), bad records at read time,
per-process shards, eval padding, multi-crop and batch ops, worker processes."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import data_files as files  # noqa: E402
from vitjax.data import bad_input, eval_batches, train_iterator  # noqa: E402
from vitjax.data.bad_input import TooManyBadExamplesError  # noqa: E402

TRAIN_OPS = [dict(op="decode_random_resized_crop", size=24), dict(op="flip_lr"),
             dict(op="randaugment", num_ops=2, magnitude=9), dict(op="normalize")]
MIX = [dict(op="mixup_cutmix", num_classes=4)]


def photos(n=40, bad=()):
    """A list source of JPEG records; indices in ``bad`` hold undecodable bytes."""
    odd = files.odd_images()
    out = []
    for i in range(n):
        data = files.jpeg(36 + i % 5, 48, seed=i)
        if i in bad:
            data = odd["garbage.jpg"] if i % 2 else odd["truncated.jpg"]
        out.append({"image": data, "label": np.int32(i % 4), "file_name": f"img{i:03d}.jpg"})
    return out


def take(it, n):
    return [next(it) for _ in range(n)]


def same(a, b):
    return len(a) == len(b) and all(sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_same_seed_same_batches():
    src = photos()
    a = take(train_iterator(src, TRAIN_OPS, 8, seed=3, batch_ops=MIX), 7)
    b = take(train_iterator(src, TRAIN_OPS, 8, seed=3, batch_ops=MIX, num_threads=1), 7)
    c = take(train_iterator(src, TRAIN_OPS, 8, seed=4, batch_ops=MIX), 7)
    assert same(a, b) and not same(a, c)
    assert sorted(a[0]) == ["image", "label", "label_dist"]
    assert a[0]["image"].shape == (8, 24, 24, 3) and a[0]["label_dist"].shape == (8, 4)
    # Every epoch is a new permutation of the whole shard.
    epoch = [b["label"] for b in a[:5]]
    assert sum(len(e) for e in epoch) == 40


def test_resume_yields_exactly_the_remaining_batches():
    src = photos(bad=(5,))
    kw = dict(seed=0, batch_ops=MIX, max_bad_fraction=0.5)
    it = train_iterator(src, TRAIN_OPS, 8, **kw)
    first = take(it, 4)
    state = it.get_state()
    rest = take(it, 8)                                    # crosses two epoch boundaries
    it2 = train_iterator(src, TRAIN_OPS, 8, **kw)
    it2.set_state(state)
    assert same(rest, take(it2, 8))
    fresh = take(train_iterator(src, TRAIN_OPS, 8, **kw), 12)
    assert same(first + rest, fresh)


def test_iterator_state_round_trips_through_orbax(tmp_path):
    import grain
    import orbax.checkpoint as ocp

    src = photos(24)
    it = train_iterator(src, TRAIN_OPS, 6, seed=1)
    take(it, 3)
    mgr = ocp.CheckpointManager(str(tmp_path / "ckpt"), options=ocp.CheckpointManagerOptions(
        enable_async_checkpointing=False))
    mgr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    expect = take(it, 5)
    it2 = train_iterator(src, TRAIN_OPS, 6, seed=1)
    mgr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it2)))
    mgr.close()
    assert same(expect, take(it2, 5))


def test_bad_records_are_skipped_counted_and_named_once(caplog):
    bad_input.reset_counts()
    src = photos(30, bad=(3, 17))
    with caplog.at_level(logging.WARNING, logger="vitjax.data"):
        batches = take(train_iterator(src, [dict(op="decode_center_crop", size=16)], 7, seed=0,
                                      max_bad_fraction=0.2, num_threads=1), 12)   # 84 reads: ~3 epochs
    assert all(b["image"].shape == (7, 16, 16, 3) for b in batches)
    seen = np.concatenate([b["label"] for b in batches])
    assert len(seen) == 84
    assert bad_input.counts()["bad_examples"] >= 4
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("img003.jpg" in m for m in msgs) == 1 and sum("img017.jpg" in m for m in msgs) == 1
    assert any(m.startswith("train: skipping img017.jpg: not an image (no known image format)") for m in msgs)


def test_too_many_bad_records_stop_with_a_clear_error():
    src = photos(12, bad=(1, 2))
    it = train_iterator(src, [dict(op="decode_center_crop", size=16)], 4, seed=0, num_threads=1)
    with pytest.raises(TooManyBadExamplesError, match=(
            r"^train: \d+ of the 1\d\d examples read so far could not be decoded \(1\d\.\d% > "
            r"input.max_bad_fraction=1.0%\); the last was img00[12].jpg: .*re-create it with "
            r"`python -m vitjax.data convert ...`.*or raise --config.input.max_bad_fraction\.")):
        take(it, 60)


def test_eval_pads_masks_and_skips_bad_records():
    src = photos(10, bad=(4,))
    ops = [dict(op="decode_center_crop", size=16), dict(op="normalize")]
    batches = list(eval_batches(src, ops, 4, max_bad_fraction=0.5))
    assert len(batches) == 3 and all(b["image"].shape == (4, 16, 16, 3) for b in batches)
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 1]
    real = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert sorted(real.tolist()) == sorted(i % 4 for i in range(10) if i != 4)
    with pytest.raises(TooManyBadExamplesError, match=r"^eval: 1 of the 10 examples read so far"):
        list(eval_batches(src, ops, 4))


def test_each_process_reads_a_disjoint_shard():
    src = [{"image": np.full((4, 4, 1), i, np.uint8), "label": np.int32(i)} for i in range(24)]
    train, evals = [], []
    for p in range(3):
        it = train_iterator(src, [], 12, seed=0, process_index=p, process_count=3)
        train.append(np.concatenate([b["label"] for b in take(it, 2)]))       # one epoch of 8
        ev = list(eval_batches(src, [], 9, process_index=p, process_count=3))
        evals.append(np.concatenate([b["label"][b["mask"]] for b in ev]))
        assert len(ev) == 3                                                   # same count everywhere
    assert sorted(np.concatenate(train).tolist()) == list(range(24))
    assert sorted(np.concatenate(evals).tolist()) == list(range(24))
    # Different processes draw different augmentation streams.
    a = take(train_iterator(src, [dict(op="random_pad_crop", pad=1)], 6, seed=0, process_index=0,
                            process_count=2), 1)[0]
    b = take(train_iterator(src, [dict(op="random_pad_crop", pad=1)], 6, seed=0, process_index=1,
                            process_count=2), 1)[0]
    assert not np.array_equal(a["label"], b["label"]) or not np.array_equal(a["image"], b["image"])


def test_processes_together_yield_the_single_process_global_batch():
    """2 hosts x local 6 == 1 host x 12, augmentation included: multi-host runs reproduce 1-host runs."""
    src = [{"image": np.full((4, 4, 1), i, np.uint8), "label": np.int32(i)} for i in range(30)]
    ops = [dict(op="random_pad_crop", pad=1)]
    one = take(train_iterator(src, ops, 12, seed=3), 4)
    parts = [take(train_iterator(src, ops, 12, seed=3, process_index=p, process_count=2), 4) for p in range(2)]
    for step in range(4):
        for key in ("image", "label"):
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, one[step][key])


def test_batches_hold_only_arrays():
    src = [{"image": files.jpeg(20, 20, i), "text": "a caption", "file_name": f"{i}.jpg",
            "label": np.int32(0)} for i in range(4)]
    (b,) = take(train_iterator(src, [dict(op="decode_center_crop", size=8)], 4, seed=0), 1)
    assert sorted(b) == ["image", "label"]
    with pytest.raises(ValueError) as e:
        take(train_iterator(src, [dict(op="flip_lr", prob=0.0)], 4, seed=0), 1)
    assert str(e.value) == (
        "example key 'image' is still encoded image bytes after the preprocessing ops; start the op list "
        "with a decoding op, e.g. dict(op='decode_random_resized_crop', size=224) for training or "
        "dict(op='decode_center_crop', size=224) for eval")


def test_multi_crop_batches():
    from vitjax.data.augment import dino_multi_crop
    spec = dict(dino_multi_crop(num_local=3), global_size=24, local_size=12)
    (b,) = take(train_iterator(photos(8), [spec], 4, seed=0), 1)
    assert b["image_global"].shape == (4, 2, 24, 24, 3) and b["image_local"].shape == (4, 3, 12, 12, 3)
    assert b["image_global"].dtype == np.float32 and "image" not in b


def test_worker_processes_give_the_same_batches_and_resume():
    src = photos(16)
    ref = take(train_iterator(src, TRAIN_OPS, 4, seed=2, batch_ops=MIX), 6)
    it = train_iterator(src, TRAIN_OPS, 4, seed=2, batch_ops=MIX, num_workers=1)
    got = take(it, 3)
    state = it.get_state()
    got += take(it, 3)
    assert same(ref, got)
    it2 = train_iterator(src, TRAIN_OPS, 4, seed=2, batch_ops=MIX, num_workers=1)
    it2.set_state(state)
    assert same(ref[3:], take(it2, 3))


class ArraySource:
    """Records held as arrays (as the digits are): the pipeline's in-memory fast path applies."""

    def __init__(self, n=30):
        self.images = np.stack([np.full((4, 4, 1), i, np.uint8) for i in range(n)])
        self.images[:, 0, 0] = 255                                 # a corner that shows shifts and flips
        self.labels = np.arange(n, dtype=np.int32)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}

    def arrays(self):
        return {"image": self.images, "label": self.labels}


IN_MEMORY_OPS = [dict(op="resize", size=6), dict(op="random_pad_crop", pad=1), dict(op="flip_lr"),
                 dict(op="normalize")]


def test_in_memory_path_keeps_order_resume_and_multi_host_guarantees(caplog):
    src = ArraySource()
    with caplog.at_level(logging.INFO, logger="vitjax.data"):
        it = train_iterator(src, IN_MEMORY_OPS, 12, seed=3)
    assert "in-memory fast path: 30 records; 1 deterministic op(s) applied once, 3 per batch" in caplog.text
    first = take(it, 5)
    state = it.get_state()
    rest = take(it, 3)
    assert same(first, take(train_iterator(src, IN_MEMORY_OPS, 12, seed=3), 5))
    assert not same(first, take(train_iterator(src, IN_MEMORY_OPS, 12, seed=4), 5))
    again = train_iterator(src, IN_MEMORY_OPS, 12, seed=3)
    again.set_state(state)
    assert same(rest, take(again, 3))
    # Each epoch is a permutation of every record: 60 rows = 2 epochs.
    labels = np.concatenate([b["label"] for b in first])
    assert sorted(labels[:30]) == list(range(30)) and sorted(labels[30:60]) == list(range(30))
    parts = [take(train_iterator(src, IN_MEMORY_OPS, 12, seed=3, process_index=p, process_count=2), 5)
             for p in range(2)]
    for step in range(5):
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]),
                                          first[step][key])


def test_in_memory_batches_are_what_the_per_example_ops_make():
    from vitjax.data.ops import apply_ops, build_ops
    src = ArraySource()
    batches = take(train_iterator(src, IN_MEMORY_OPS, 12, seed=0), 10)
    per_example = take(train_iterator(src, IN_MEMORY_OPS, 12, seed=0, in_memory=False), 1)[0]
    assert batches[0]["image"].dtype == per_example["image"].dtype == np.float32
    assert batches[0]["image"].shape == per_example["image"].shape == (12, 6, 6, 1)
    # Every image is its record resized, shifted by some (dy, dx) in -1..1 and maybe flipped.
    resize_shift_flip = build_ops(IN_MEMORY_OPS[:1])
    norm = build_ops(IN_MEMORY_OPS[3:])
    seen = set()
    for b in batches:
        for img, label in zip(b["image"], b["label"]):
            base = apply_ops(dict(src[int(label)]), resize_shift_flip, None)["image"]
            matches = []
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    shifted = np.zeros_like(base)
                    shifted[max(dy, 0):6 + min(dy, 0), max(dx, 0):6 + min(dx, 0)] = \
                        base[max(-dy, 0):6 - max(dy, 0), max(-dx, 0):6 - max(dx, 0)]
                    for flip in (False, True):
                        want = apply_ops({"image": shifted[:, ::-1] if flip else shifted}, norm, None)["image"]
                        if np.array_equal(img, want):
                            matches.append((dy, dx, flip))
            assert matches, f"record {label}: not a shifted/flipped copy"
            seen.update(matches)
    assert len({m[:2] for m in seen}) == 9 and {m[2] for m in seen} == {False, True}


def test_in_memory_path_steps_aside_for_ops_without_a_batch_form():
    src = ArraySource()
    ops = [dict(op="randaugment", num_ops=1, magnitude=5), dict(op="normalize")]
    a = take(train_iterator(src, ops, 6, seed=1), 3)
    b = take(train_iterator(src, ops, 6, seed=1, in_memory=False), 3)
    assert same(a, b)


def test_a_checkpoint_resumes_only_on_the_pipeline_path_that_saved_it():
    src = ArraySource()
    fast, slow = (train_iterator(src, IN_MEMORY_OPS, 12, seed=0, in_memory=m) for m in (True, False))
    take(fast, 2), take(slow, 2)
    with pytest.raises(ValueError) as e:
        train_iterator(src, IN_MEMORY_OPS, 12, seed=0, in_memory=False).set_state(fast.get_state())
    assert str(e.value) == ("the checkpoint's data position was saved by the in-memory input pipeline but this "
                            "run uses the per-example one; resume with --config.input.in_memory=True")
    untagged = {k: v for k, v in slow.get_state().items() if k != "pipeline"}     # saved before the tag
    with pytest.raises(ValueError, match="saved by the per-example input pipeline but this run uses the "
                                         "in-memory one; resume with --config.input.in_memory=False"):
        train_iterator(src, IN_MEMORY_OPS, 12, seed=0).set_state(untagged)


def test_resuming_with_the_other_input_path_is_refused_and_keeps_the_checkpoint(tmp_path):
    import jax
    import jax.numpy as jnp

    from vitjax.training.checkpoint import Checkpointer, CheckpointMismatchError
    from vitjax.training.step import TrainState
    state = TrainState(step=jnp.asarray(2, jnp.int32), params={"w": jnp.ones((3,))}, opt_state=(), extra={})
    src = ArraySource()
    it = train_iterator(src, IN_MEMORY_OPS, 12, seed=0, in_memory=False)
    take(it, 2)
    ck = Checkpointer(str(tmp_path), async_save=False)
    ck.save(2, state, it)
    ck.wait()
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    with pytest.raises(CheckpointMismatchError) as e:
        Checkpointer(str(tmp_path), async_save=False).resume(abstract, train_iterator(src, IN_MEMORY_OPS, 12, seed=0))
    assert str(e.value) == (f"checkpoint step 2 in {tmp_path}/checkpoints: the checkpoint's data position was saved "
                            f"by the per-example input pipeline but this run uses the in-memory one; resume with "
                            f"--config.input.in_memory=False. Nothing was changed.")
    again = train_iterator(src, IN_MEMORY_OPS, 12, seed=0, in_memory=False)
    step, _ = Checkpointer(str(tmp_path), async_save=False).resume(abstract, again)
    assert step == 2 and same(take(again, 2), take(it, 2))


def test_in_memory_captions_tokenized_once_per_record_and_empty_ones_fall_back(caplog):
    """digit_captions + tokenize (deterministic, so run once per record): every batch row's tokens are
    its own record's caption tokenized; a source with an empty caption (SkipExample) keeps the
    per-example path, which skips and counts it."""
    from vitjax.data.captions import DigitCaptionSource
    from vitjax.data.text import get_tokenizer
    src = DigitCaptionSource("test")
    ops = [dict(op="resize", size=8), dict(op="tokenize", tokenizer="bytes", context_length=128),
           dict(op="random_pad_crop", pad=1), dict(op="normalize")]
    with caplog.at_level(logging.INFO, logger="vitjax.data"):
        batches = take(train_iterator(src, ops, 16, seed=0), 3)
    assert "in-memory fast path: 360 records; 2 deterministic op(s) applied once, 2 per batch" in caplog.text
    tok = get_tokenizer("bytes")
    texts = src.arrays()["text"]
    rows = 0
    for b in batches:
        assert sorted(b) == ["image", "label", "tokens"] and b["tokens"].shape == (16, 128)
        # the row's record: the one whose label and caption tokens match (captions repeat rarely)
        for label, ids in zip(b["label"], b["tokens"]):
            want = [i for i, t in enumerate(texts) if np.array_equal(tok.tokenize(str(t), 128)[0], ids)]
            assert want and all(int(src[i]["label"]) == int(label) for i in want)
            rows += 1
    assert rows == 48

    class WithEmpty(DigitCaptionSource):
        def arrays(self):
            a = super().arrays()
            a["text"][5] = " "
            return a

        def __getitem__(self, i):
            ex = super().__getitem__(i)
            return dict(ex, text=" ") if i == 5 else ex
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vitjax.data"):
        it = train_iterator(WithEmpty("test"), ops, 16, seed=0)
        take(it, 1)
    assert "in-memory fast path" not in caplog.text


def test_scaling_sweeps_synthetic_digits_take_the_in_memory_path(caplog):
    """configs/scaling_digits.py's data (synthetic_digits, normalize only): the in-memory path, whose
    rows are the records normalised; a source whose arrays() is not {key: [N, ...]} keeps the
    per-example path instead of failing."""
    from vitjax.data.synthetic_digits import SyntheticDigitsSource
    src = SyntheticDigitsSource("train[:300]")
    ops = [dict(op="normalize", mean=0.5, std=0.5)]
    with caplog.at_level(logging.INFO, logger="vitjax.data"):
        batch = take(train_iterator(src, ops, 100, seed=0), 3)
    assert "in-memory fast path: 300 records; 1 deterministic op(s) applied once, 0 per batch" in caplog.text
    want = src.arrays()
    labels = np.concatenate([b["label"] for b in batch])
    assert sorted(labels.tolist()) == sorted(want["label"].tolist())           # one epoch: every record
    img = batch[0]["image"][0]
    matches = [i for i in range(300) if np.allclose(img, (want["image"][i] / 255.0 - 0.5) / 0.5, atol=1e-6)]
    assert matches and want["label"][matches[0]] == batch[0]["label"][0]

    class TupleArrays(SyntheticDigitsSource):
        def arrays(self):
            return tuple(super().arrays().values())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vitjax.data"):
        other = take(train_iterator(TupleArrays("train[:300]"), ops, 100, seed=0), 1)
    assert "TupleArrays.arrays() does not give {key: [300, ...]}; using the per-example path" in caplog.text
    assert other[0]["image"].shape == (100, 16, 16, 1)
