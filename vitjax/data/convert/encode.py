"""Encoding and writing: check each image by decoding it, store RGB JPEGs as they are and
re-encode the rest, serialize to tf.train.Example in worker processes, write shards in order."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import logging
import multiprocessing as mp
import os
import sys
import time
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from vitjax.data import image_io
from vitjax.data.bad_input import BadExampleError
from vitjax.data.convert.inputs import UNDECODABLE, ConvertError, Item
from vitjax.data.dataset_writer import DatasetWriter, serializer

log = logging.getLogger("vitjax.data")


@dataclasses.dataclass
class EncodeOptions:
    """What the encoding workers need to know (picklable: it is sent to each worker)."""
    kind: str                      # "classes", "pairs" or "detection"
    class_names: tuple[str, ...] = ()
    quality: int = 95
    max_short_side: int | None = None


def features_for(opts: EncodeOptions):
    import tensorflow_datasets as tfds  # heavy (~0.5 s): not for `python -m vitjax.data --help`

    f = {"image": tfds.features.Image(encoding_format="jpeg"), "file_name": tfds.features.Text()}
    if opts.kind == "classes":
        f["label"] = tfds.features.ClassLabel(names=list(opts.class_names))
    elif opts.kind == "detection":      # vitjax.data.convert.coco; class names go to the summary
        f["boxes"] = tfds.features.Tensor(shape=(None, 4), dtype=np.float32)
        f["labels"] = tfds.features.Tensor(shape=(None,), dtype=np.int64)
    else:
        f["text"] = tfds.features.Text()
    return tfds.features.FeaturesDict(f)


_WORKER: dict[str, Any] = {}


def _init_worker(opts: EncodeOptions) -> None:
    _WORKER["opts"] = opts
    _WORKER["serialize"] = serializer(features_for(opts))


def _read(item: Item) -> bytes:
    if item.data is not None:
        return item.data
    with open(item.source, "rb") as fh:
        if item.offset >= 0:
            fh.seek(item.offset)
            return fh.read(item.size)
        return fh.read()


def encode_image(data: bytes, quality: int, max_short_side: int | None) -> tuple[bytes, str]:
    """Checks ``data`` by decoding it and returns (JPEG bytes, how). Raises BadExampleError."""
    img = image_io.open_image(data)
    fmt, mode = img.format, img.mode
    try:
        orientation = img.getexif().get(0x0112, 1) if fmt in ("JPEG", "TIFF", "WEBP", "PNG") else 1
        rotated = orientation not in (0, 1)
        too_big = max_short_side is not None and min(img.size) > max_short_side
        if fmt == "JPEG" and mode == "RGB" and not rotated and not too_big:
            # A 1/8-scale decode still entropy-decodes every byte, so truncation and corrupt data
            # are caught, at ~80% of the cost of a full decode.
            img.draft("RGB", (1, 1))
            image_io.load(img)
            return data, "stored as is (RGB JPEG)"
        img.load()
        if rotated:
            img = ImageOps.exif_transpose(img)
        rgb = image_io.load(img)
        if too_big:
            s = max_short_side / min(rgb.size)
            rgb = rgb.resize((max(1, round(rgb.width * s)), max(1, round(rgb.height * s))), Image.BICUBIC,
                             reducing_gap=3.0)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=quality)
    except BadExampleError:
        raise
    except Exception as e:  # the same broad net as image_io.load: any decoder failure is bad input
        raise BadExampleError(f"cannot decode image ({type(e).__name__}: {e})") from e
    why = "resized" if too_big else "rotated (EXIF)" if rotated else f"{fmt} {mode}"
    return buf.getvalue(), f"re-encoded as JPEG ({why})"


def encode_item(item: Item) -> tuple[bytes | None, str, int]:
    """Worker task: (serialized record, how, image bytes) or (None, skip reason + detail, 0)."""
    opts: EncodeOptions = _WORKER["opts"]
    try:
        data = _read(item)
    except OSError as e:
        return None, f"unreadable file: {type(e).__name__}: {e}", 0
    try:
        jpeg, how = encode_image(data, opts.quality, opts.max_short_side)
    except BadExampleError as e:
        return None, f"{UNDECODABLE}: {e.reason}", 0
    ex = {"image": jpeg, "file_name": item.name}
    if opts.kind == "classes":
        ex["label"] = item.label
    elif opts.kind == "detection":
        ex["boxes"], ex["labels"] = item.boxes, item.box_labels
    else:
        ex["text"] = item.text
    return _WORKER["serialize"](ex), how, len(jpeg)


def _results(items: list[Item], opts: EncodeOptions, workers: int):
    if workers <= 1:
        _init_worker(opts)
        for it in items:
            yield encode_item(it)
        return
    # spawn, not fork: the parent may hold threads (tfds, absl) that fork would copy mid-lock.
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(opts,)) as pool:
        yield from pool.imap(encode_item, items, chunksize=16)


def run_conversion(splits: dict[str, list[Item]], opts: EncodeOptions, *, out: str, name: str,
                   source: str, skipped: list, workers: int | None, seed: int, max_bad_fraction: float,
                   overwrite: bool, shard_bytes: int, progress: bool, rerun: str) -> dict[str, Any]:
    """Encodes and writes every item; returns the summary (also printed and stored in the dataset)."""
    t0 = time.time()
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    order = []
    rng = np.random.default_rng(seed)
    for split in sorted(splits):
        if not splits[split]:
            raise ConvertError(f"split {split!r} has no images to convert")
        # Shuffled once so that every shard mixes classes (grain shuffles again when reading).
        order += [splits[split][i] for i in rng.permutation(len(splits[split]))]
    for path, reason in skipped:
        log.warning("skipping %s: %s", path, reason)
    reasons = collections.Counter(r for _, r in skipped)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    for path, r in skipped:
        examples[r].append(path)
    hows: collections.Counter = collections.Counter()
    bad = 0
    limit = max_bad_fraction * len(order)
    bar = tqdm(total=len(order), unit="img", disable=not progress, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5, desc=f"convert {name}")
    results = _results(order, opts, workers)
    with bar, contextlib.closing(results), DatasetWriter(out, name, features_for(opts),
                                                         shard_bytes=shard_bytes, overwrite=overwrite) as w:
        for stale in w.removed_stale:
            log.warning("removed an unfinished earlier conversion: %s", stale)
        for item, (record, how, nbytes) in zip(order, results):
            bar.update(1)
            if record is None:
                reason = how.split(":")[0]
                log.warning("skipping %s: %s", item.name, how)
                reasons[reason] += 1
                examples[reason].append(f"{item.name} ({how[len(reason) + 2:]})" if ":" in how else item.name)
                if reason == UNDECODABLE:
                    bad += 1
                    if bad > limit:
                        raise ConvertError(
                            f"{bad} of the {len(order)} images could not be decoded (more than "
                            f"--max-bad-fraction={max_bad_fraction:.1%}; the last was {item.name}: {how}). "
                            f"Nothing was written. Remove or repair the bad files and rerun: {rerun} "
                            f"(or pass a higher --max-bad-fraction)")
                continue
            hows[how] += 1
            w.write(item.split, record)
        seconds = time.time() - t0
        sizes = w.split_sizes()
        summary = {
            "name": name, "source": source, "data_dir": os.path.abspath(os.path.expanduser(out)),
            "path": w.final,
            "splits": sizes, "images": sum(sizes.values()), "num_classes": len(opts.class_names) or None,
            "bytes": w.num_bytes, "skipped": dict(reasons), "skipped_total": sum(reasons.values()),
            "skipped_files": {r: v for r, v in examples.items()}, "encoding": dict(hows),
            "seconds": round(seconds, 3), "workers": workers, "command": rerun,
        }
        if opts.kind in ("classes", "detection"):
            summary["class_names"] = list(opts.class_names)
        w.finish(description=f"Converted by vitjax from {source}.", extra=summary)
    return summary
