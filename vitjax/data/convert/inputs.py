"""Finding what to convert: image-folder trees, webdataset shards and (path, caption) tables.

Scanning only lists files and reads captions; images are opened later, in the encoding workers.
Every skipped entry is returned as ``(name, reason)`` for the summary.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import json
import os
import re
import tarfile
from typing import Any, Iterable, Sequence

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".json")
SPLIT_DIRS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
PATH_COLUMNS = ("path", "image", "image_path", "filepath", "file", "filename", "img")
CAPTION_COLUMNS = ("caption", "text", "title", "captions", "txt")
UNDECODABLE = "undecodable image"        # the skip reason that counts toward max_bad_fraction


class ConvertError(ValueError):
    """A problem with the input of a conversion; the message says what to fix or run."""


@dataclasses.dataclass
class Item:
    """One image to convert. ``offset`` >= 0: bytes [offset, offset + size) of the tar ``source``."""
    split: str
    source: str
    name: str
    label: int = -1
    text: str | None = None
    offset: int = -1
    size: int = 0
    data: bytes | None = None
    boxes: Any = None              # detection (--coco): float32 [n, 4] xyxy pixels
    box_labels: Any = None         # detection: int64 [n]


def _image_files(folder: str, skipped: list) -> list[str]:
    """Image files under ``folder`` (recursive, sorted); other non-hidden files go to ``skipped``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            path = os.path.join(dirpath, f)
            if os.path.splitext(f)[1].lower() in IMAGE_EXTS:
                out.append(path)
            else:
                skipped.append((path, "not an image file (by its extension)"))
    return out


def _subdirs(folder: str) -> list[str]:
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def scan_image_folder(root: str, holdout: float | None, seed: int, rerun: str):
    """Returns ({split: [Item]}, class_names, skipped [(path, reason)]) for an image-folder tree."""
    if not os.path.isdir(root):
        raise ConvertError(f"--image-folder {root} is not a folder")
    skipped: list[tuple[str, str]] = []
    top = _subdirs(root)
    train_dir = os.path.join(root, "train")
    split_mode = "train" in top and bool(_subdirs(train_dir))
    if split_mode:
        trees = {}
        for d in top:
            if d in SPLIT_DIRS:
                split = SPLIT_DIRS[d]
                if split in trees:
                    raise ConvertError(f"{root} has both val/ and validation/; keep one of them")
                trees[split] = os.path.join(root, d)
            else:
                skipped.append((os.path.join(root, d), "folder beside train/ that is not val/ or test/"))
        for split, tree in trees.items():
            if not _subdirs(tree):
                raise ConvertError(
                    f"{tree} holds no class folders (images must be in {tree}/<class>/). For ImageNet's "
                    f"flat val/ folder, sort the images into class folders first (the devkit's ground "
                    f"truth), or delete it and let `{rerun} --holdout 0.1` hold out part of train/")
    else:
        if not top:
            raise ConvertError(f"{root} has no class folders; expected {root}/<class>/<image> or "
                               f"{root}/train/<class>/<image>")
        trees = {"train": root}
    class_names = sorted({c for tree in trees.values() for c in _subdirs(tree)})
    index = {c: i for i, c in enumerate(class_names)}
    splits: dict[str, list[Item]] = {}
    for split, tree in trees.items():
        for f in sorted(os.listdir(tree)):
            if not f.startswith(".") and os.path.isfile(os.path.join(tree, f)):
                skipped.append((os.path.join(tree, f), "file outside the class folders"))
        items = []
        for c in _subdirs(tree):
            files = _image_files(os.path.join(tree, c), skipped)
            if not files:
                raise ConvertError(
                    f"class folder {os.path.join(tree, c)} holds no images (JPEG/PNG/WebP/...). Add "
                    f"images or remove it (rmdir '{os.path.join(tree, c)}'), then rerun: {rerun}")
            items += [Item(split, p, os.path.relpath(p, root), label=index[c]) for p in files]
        splits[split] = items
    skipped = [(os.path.relpath(p, root), why) for p, why in skipped]
    if holdout is None:
        holdout = 0.0 if "validation" in splits else 0.1
    if holdout > 0 and "validation" not in splits:
        splits["train"], splits["validation"] = _hold_out(splits["train"], holdout, seed)
    return splits, class_names, skipped


def _hold_out(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A seeded, stratified hold-out of round(fraction * N) items (at least 1): each class gives
    floor(fraction * n_c), the remainder goes to the classes with the largest fractional parts,
    and no class gives its last item."""
    if not 0.0 < fraction < 1.0:
        raise ConvertError(f"--holdout must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_label: dict[int, list[Item]] = collections.defaultdict(list)
    for it in items:
        by_label[it.label].append(it)
    labels = sorted(by_label)
    sizes = np.array([len(by_label[c]) for c in labels])
    quota = fraction * sizes
    take = np.minimum(np.floor(quota).astype(int), sizes - 1)
    want = max(1, int(round(fraction * sizes.sum())))
    tie = rng.random(len(labels))            # seeded tie-break among equal remainders
    for j in sorted(range(len(labels)), key=lambda j: (-(quota[j] - np.floor(quota[j])), tie[j])):
        if take.sum() >= want:
            break
        if take[j] < sizes[j] - 1:
            take[j] += 1
    train, val = [], []
    for label, k in zip(labels, take):
        group = by_label[label]
        chosen = set(rng.permutation(len(group))[:k].tolist())
        for i, it in enumerate(group):
            (val if i in chosen else train).append(it)
    if not val:
        raise ConvertError(f"--holdout {fraction} leaves no image for validation ({len(items)} images in "
                           f"{len(labels)} classes of one image each); add images or pass --holdout 0")
    for it in val:
        it.split = "validation"
    return train, val


def expand_braces(pattern: str) -> list[str]:
    """webdataset-style ranges: ``shard-{000..012}.tar`` -> 13 names (zero-padded like the bounds)."""
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    width = len(lo) if lo.startswith("0") else 0
    out = []
    for i in range(int(lo), int(hi) + 1):
        out += expand_braces(pattern[:m.start()] + str(i).zfill(width) + pattern[m.end():])
    return out


def _pair_inputs(paths: Sequence[str]) -> list[str]:
    files = []
    for p in paths:
        for q in expand_braces(os.path.expanduser(p)):
            if os.path.isdir(q):
                found = sorted(glob.glob(os.path.join(q, "*.tar")) + glob.glob(os.path.join(q, "*.tar.gz")))
                if not found:
                    raise ConvertError(f"--pairs {q} is a folder without .tar shards")
                files += found
            elif any(c in q for c in "*?["):
                found = sorted(glob.glob(q))
                if not found:
                    raise ConvertError(f"--pairs {q} matches no file")
                files += found
            elif os.path.isfile(q):
                files.append(q)
            else:
                raise ConvertError(f"--pairs {q} does not exist")
    return files


def _scan_tar(path: str, skipped: list) -> list[Item]:
    """Groups a webdataset shard's members by key (the name up to the first dot of its basename)."""
    items = []
    seekable = not path.endswith((".gz", ".tgz", ".bz2", ".xz"))
    groups: dict[str, dict[str, Any]] = collections.OrderedDict()
    shard = os.path.basename(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                d, base = os.path.split(m.name)
                if base.startswith("."):
                    continue
                key, _, ext = base.partition(".")
                g = groups.setdefault(os.path.join(d, key), {})
                ext = "." + ext.lower()
                if ext in IMAGE_EXTS and "image" not in g:
                    g["image"] = m if seekable else (m, tar.extractfile(m).read())
                elif ext == ".txt":
                    g["txt"] = tar.extractfile(m).read().decode("utf-8", "replace")
                elif ext == ".json":
                    try:
                        meta = json.loads(tar.extractfile(m).read())
                        if isinstance(meta, dict) and isinstance(meta.get("caption"), str):
                            g["json"] = meta["caption"]
                    except ValueError:
                        pass
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ConvertError(f"cannot read tar shard {path}: {type(e).__name__}: {e}") from e
    for key, g in groups.items():
        name = f"{shard}/{key}"
        caption = g.get("txt", g.get("json"))
        if "image" not in g:
            skipped.append((name, "sample without an image"))
            continue
        if caption is None:
            skipped.append((name, "no caption"))
            continue
        if not caption.strip():
            skipped.append((name, "empty caption"))
            continue
        entry = g["image"]
        if seekable:
            items.append(Item("train", path, f"{shard}/{entry.name}", text=caption.strip(),
                              offset=entry.offset_data, size=entry.size))
        else:
            m, data = entry
            items.append(Item("train", path, f"{shard}/{m.name}", text=caption.strip(), data=data))
    return items


def _table_rows(path: str) -> Iterable[tuple[Any, Any]]:
    if path.lower().endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise ConvertError(f"{path}:{n} is not a JSON object per line ({e})") from e
                p = next((row[k] for k in PATH_COLUMNS if k in row), None)
                c = next((row[k] for k in CAPTION_COLUMNS if k in row), None)
                if p is None:
                    raise ConvertError(f"{path}:{n} has none of the path keys {PATH_COLUMNS}")
                yield p, c
        return
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t" if path.lower().endswith(".tsv") else ",")
        rows = iter(reader)
        first = next(rows, None)
        if first is None:
            return
        lower = [h.strip().lower() for h in first]
        pi = next((lower.index(k) for k in PATH_COLUMNS if k in lower), None)
        ci = next((lower.index(k) for k in CAPTION_COLUMNS if k in lower), None)
        if pi is None:                       # no header: path, caption
            pi, ci = 0, 1
            rows = iter([first] + list(rows))
        for row in rows:
            if row:
                yield row[pi] if pi < len(row) else "", row[ci] if ci is not None and ci < len(row) else None


def _scan_table(path: str, skipped: list) -> list[Item]:
    items = []
    here = os.path.dirname(os.path.abspath(path))
    for p, caption in _table_rows(path):
        p = str(p).strip()
        name = p
        if re.match(r"^[a-z]+://", p):
            skipped.append((name, "URL (download the images first, e.g. with img2dataset)"))
            continue
        full = p if os.path.isabs(p) else os.path.join(here, p)
        if not os.path.isfile(full):
            skipped.append((name, "file not found"))
            continue
        if caption is None:
            skipped.append((name, "no caption"))
            continue
        caption = caption if isinstance(caption, str) else " ".join(map(str, caption)) \
            if isinstance(caption, list) else str(caption)
        if not caption.strip():
            skipped.append((name, "empty caption"))
            continue
        items.append(Item("train", full, name, text=caption.strip()))
    return items


def scan_pairs(paths: Sequence[str], holdout: float, seed: int):
    """Returns ({split: [Item]}, skipped) for webdataset shards and/or (path, caption) tables."""
    skipped: list[tuple[str, str]] = []
    items: list[Item] = []
    for f in _pair_inputs(paths):
        low = f.lower()
        if low.endswith((".tar", ".tar.gz", ".tgz")):
            items += _scan_tar(f, skipped)
        elif low.endswith(TABLE_EXTS):
            items += _scan_table(f, skipped)
        else:
            raise ConvertError(f"--pairs {f}: expected webdataset .tar shards or a .csv/.tsv/.jsonl table")
    splits = {"train": items}
    if holdout:
        if not 0.0 < holdout < 1.0:
            raise ConvertError(f"--holdout must be in [0, 1), got {holdout}")
        perm = np.random.default_rng(seed).permutation(len(items))
        k = int(round(holdout * len(items)))
        val_idx = set(perm[:k].tolist())
        splits = {"train": [it for i, it in enumerate(items) if i not in val_idx],
                  "validation": [it for i, it in enumerate(items) if i in val_idx]}
        for it in splits["validation"]:
            it.split = "validation"
    return splits, skipped
