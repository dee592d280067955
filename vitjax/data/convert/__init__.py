"""Converters: an image-folder tree or image-text pairs -> a TFDS-format ArrayRecord dataset.

    python -m vitjax.data convert --image-folder DIR --out DATA_DIR --name NAME [--holdout 0.1]
    python -m vitjax.data convert --pairs 'shards/{00000..00099}.tar' --out DATA_DIR --name NAME
    python -m vitjax.data convert --pairs captions.csv --out DATA_DIR --name NAME
    python -m vitjax.data convert --coco ANNOTATIONS.json --images DIR --out DATA_DIR --name NAME

Inputs:
* image folder: ``DIR/<class>/<image>`` (sub-folders inside a class are fine), or ``DIR/train/<class>/``
  with ``DIR/val/<class>/`` (split "validation") and/or ``DIR/test/<class>/``. Without a val tree a
  seeded, per-class hold-out fraction becomes "validation". Labels are the sorted class-folder names.
* coco: a COCO object-detection annotation file and its image folder (``convert/coco.py``).
* pairs: webdataset ``.tar`` shards (``KEY.jpg`` + ``KEY.txt``, or ``KEY.json`` with "caption", as
  img2dataset writes them), or a CSV/TSV/JSONL table of (path, caption), paths relative to the table.

Every image is decoded once to check it (corrupt, truncated and non-image files are skipped, counted
and named once). RGB JPEGs are stored as they are; everything else (PNG, WebP, grey, CMYK, RGBA,
16-bit, EXIF-rotated, or larger than ``max_short_side``) is converted to RGB and stored as JPEG.
Encoding runs in ``workers`` processes; output order is deterministic. More than
``max_bad_fraction`` undecodable images stops the conversion and leaves nothing behind.
"""
from __future__ import annotations

from typing import Any, Sequence

from vitjax.data.dataset_writer import check_target
from vitjax.data.convert.coco import scan_coco
from vitjax.data.convert.encode import EncodeOptions, run_conversion
from vitjax.data.convert.inputs import (ConvertError, Item, expand_braces, scan_image_folder,  # noqa: F401
                                        scan_pairs)


def format_summary(s: dict[str, Any]) -> str:
    images, secs = s["images"], max(s["seconds"], 1e-9)
    lines = [f"converted {s['source']} -> {s['path']} in {secs:.1f} s "
             f"({images / secs:.0f} images/s with {s['workers']} worker(s))",
             "  splits: " + ", ".join(f"{k} {v}" for k, v in sorted(s["splits"].items()))
             + (f"; classes: {s['num_classes']}" if s.get("num_classes") else ""),
             f"  bytes: {s['bytes'] / 2**20:.1f} MiB ({s['bytes'] / max(images, 1) / 1024:.1f} KiB per image); "
             + ", ".join(f"{how}: {n}" for how, n in sorted(s["encoding"].items()))]
    if s["skipped_total"]:
        lines.append(f"  skipped {s['skipped_total']} file(s):")
        for reason, n in sorted(s["skipped"].items()):
            eg = s["skipped_files"][reason][:2]
            lines.append(f"    {reason}: {n} (e.g. {'; '.join(eg)})")
    else:
        lines.append("  skipped: none")
    lines.append(f"  read it with: --config.input.data.name={s['name']} "
                 f"--config.input.data.data_dir={s['data_dir']}")
    return "\n".join(lines)


def convert_image_folder(root: str, out: str, name: str, *, holdout: float | None = None, seed: int = 0,
                         workers: int | None = None, max_short_side: int | None = None, quality: int = 95,
                         max_bad_fraction: float = 0.01, overwrite: bool = False,
                         shard_bytes: int = 256 << 20, progress: bool = True) -> dict[str, Any]:
    """Converts an image-folder tree; see the module docstring. Returns the summary dict."""
    check_target(out, name, overwrite)
    _refuse_catalog_name(name)
    rerun = f"python -m vitjax.data convert --image-folder {root} --out {out} --name {name}"
    splits, class_names, skipped = scan_image_folder(root, holdout, seed, rerun)
    opts = EncodeOptions("classes", tuple(class_names), quality, max_short_side)
    return run_conversion(splits, opts, out=out, name=name, source=root, skipped=skipped, workers=workers,
                          seed=seed, max_bad_fraction=max_bad_fraction, overwrite=overwrite,
                          shard_bytes=shard_bytes, progress=progress, rerun=rerun)


def convert_pairs(paths: Sequence[str] | str, out: str, name: str, *, holdout: float = 0.0, seed: int = 0,
                  workers: int | None = None, max_short_side: int | None = None, quality: int = 95,
                  max_bad_fraction: float = 0.01, overwrite: bool = False,
                  shard_bytes: int = 256 << 20, progress: bool = True) -> dict[str, Any]:
    """Converts image-text pairs (webdataset shards or a table); see the module docstring."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    check_target(out, name, overwrite)
    _refuse_catalog_name(name)
    rerun = f"python -m vitjax.data convert --pairs {' '.join(paths)} --out {out} --name {name}"
    splits, skipped = scan_pairs(paths, holdout, seed)
    if not splits["train"]:
        raise ConvertError(f"--pairs {' '.join(paths)}: no usable (image, caption) pair was found "
                           f"({len(skipped)} skipped)")
    opts = EncodeOptions("pairs", (), quality, max_short_side)
    return run_conversion(splits, opts, out=out, name=name, source=" ".join(paths), skipped=skipped,
                          workers=workers, seed=seed, max_bad_fraction=max_bad_fraction,
                          overwrite=overwrite, shard_bytes=shard_bytes, progress=progress, rerun=rerun)


def convert_coco(annotations: str, images: str, out: str, name: str, *, holdout: float = 0.0, seed: int = 0,
                 workers: int | None = None, max_short_side: int | None = None, quality: int = 95,
                 max_bad_fraction: float = 0.01, overwrite: bool = False,
                 shard_bytes: int = 256 << 20, progress: bool = True) -> dict[str, Any]:
    """Converts COCO-format detection annotations + images (``vitjax.data.convert.coco``)."""
    if images is None:
        raise ConvertError("--coco needs --images DIR, the folder its file_name entries are relative to")
    if max_short_side is not None:
        raise ConvertError("--max-short-side is not supported with --coco: resizing would move the boxes; "
                           "convert at full size and resize with the det_resize op")
    check_target(out, name, overwrite)
    _refuse_catalog_name(name)
    rerun = f"python -m vitjax.data convert --coco {annotations} --images {images} --out {out} --name {name}"
    splits, class_names, skipped = scan_coco(annotations, images, holdout, seed)
    opts = EncodeOptions("detection", tuple(class_names), quality, None)
    return run_conversion(splits, opts, out=out, name=name, source=annotations, skipped=skipped, workers=workers,
                          seed=seed, max_bad_fraction=max_bad_fraction, overwrite=overwrite,
                          shard_bytes=shard_bytes, progress=progress, rerun=rerun)


def _refuse_catalog_name(name: str) -> None:
    import tensorflow_datasets as tfds  # heavy (~0.5 s): not for `python -m vitjax.data --help`
    if name in tfds.list_builders(with_community_datasets=False):
        raise ConvertError(f"--name {name} is a TFDS catalog dataset, and tfds would look for its own "
                           f"version of it instead of this conversion; choose another name, e.g. "
                           f"--name my_{name}")
