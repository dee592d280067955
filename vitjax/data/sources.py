"""Random-access data sources, selected by ``config.input.data = dict(name=..., split=..., data_dir=...)``.

A source has ``__len__`` and ``__getitem__(i) -> dict``, which is what grain needs to shuffle
globally and to checkpoint its position. Examples hold ``image`` (uint8 [H, W, C], or the encoded
bytes for datasets stored encoded: the decoding ops decode them), ``label`` (int32) when the
dataset has labels, ``text`` (str) for image-text datasets, and ``file_name`` (str, for messages).

* ``digits``: scikit-learn's 1,797 handwritten 8x8 digits (``vitjax/data/digits.py``; shipped inside
  the scikit-learn wheel, so it needs no network), split once into 1,437 train / 360 test images,
  stratified, seed 0.
* ``synthetic_digits``: procedurally drawn 16x16 digits (``vitjax/data/synthetic_digits.py``), any
  number of distinct training images (``train[:N]``) and a 10,000-image test set from a disjoint
  seed stream, 5% label noise: fresh data for scaling-law sweeps.
* ``digit_captions``: the digits paired with generated captions (``vitjax/data/captions.py``), the
  offline image-text data of the CLIP demo.
* ``digit_pairs``: two same-class digits stacked into a 16x8 image (``vitjax/data/digit_pairs.py``),
  the long-context data of the Perceiver AR demo.
* any other name: a dataset in TFDS's ArrayRecord format under ``data_dir``: one from the TFDS
  catalog (``tfds build NAME --data_dir DIR --file_format=array_record``, e.g. imagenet2012,
  cifar10) or one made by ``python -m vitjax.data convert ... --out DIR --name NAME``. Both are read
  with ``tfds`` (no TensorFlow), with image features left encoded.

Splits accept TFDS slicing, e.g. ``train[:10%]`` or ``train[:1000]+validation``.

The first four are entries of ``vitjax.data.registry.SOURCES``, each registered with
``@register_source(NAME)`` in its own module; this module imports those modules, so ``get_source``
sees them. A new source registers the same way (``factory(split, data_dir=None)``).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np

from vitjax.data import captions, digit_pairs, digits, shapes_scenes, synthetic_digits  # noqa: F401  (they fill SOURCES)
from vitjax.data.dataset_writer import INCOMPLETE_PREFIX
from vitjax.data.digits import DigitsSource  # noqa: F401  (re-exported)
from vitjax.data.registry import SOURCES, register_source  # noqa: F401  (re-exported)

DEFAULT_DATA_DIR = "~/tensorflow_datasets"


class DatasetNotPreparedError(FileNotFoundError):
    """The named dataset is not prepared in data_dir; the message says what to run."""


def _is_tfds_catalog_name(name: str) -> bool:
    import tensorflow_datasets as tfds  # heavy (~0.5 s); only datasets read through TFDS need it
    return name.split("/")[0].split(":")[0] in tfds.list_builders(with_community_datasets=False)


def how_to_prepare(name: str, data_dir: str | None, why: str) -> str:
    """The error text for a dataset that is not ready to read: what to run to make it ready."""
    shown = data_dir or DEFAULT_DATA_DIR
    base = name.split(":")[0].split("/")[0]
    unfinished = other_versions = ""
    folder = os.path.join(os.path.expanduser(shown), base)
    if os.path.isdir(folder):
        entries = sorted(os.listdir(folder))
        stale = [f for f in entries if f.startswith(INCOMPLETE_PREFIX)]
        if stale:
            unfinished = (f" {os.path.join(folder, stale[0])} is an unfinished conversion (interrupted); "
                          f"rerun the convert command.")
        versions = [f for f in entries if re.fullmatch(r"\d+\.\d+\.\d+", f)
                    and os.path.isfile(os.path.join(folder, f, "dataset_info.json"))]
        if versions and ":" not in name:
            other_versions = (f" Versions prepared there: {versions}; to read one, name it as "
                              f"{base}:{versions[-1]}.")
    if _is_tfds_catalog_name(name):
        return (f"TFDS dataset {name!r} is not prepared in data_dir={shown}: {why}.{unfinished}"
                f"{other_versions} Prepare it once with\n"
                f"  tfds build {base} --data_dir {shown} --file_format=array_record\n"
                f"(`tfds build` needs TensorFlow for most datasets; run it in a separate environment "
                f"with tensorflow-cpu, vitjax reads the result without TensorFlow. ImageNet needs its "
                f"archives in the manual dir first, see the TFDS catalog page), or point "
                f"--config.input.data.data_dir at the folder that holds it.")
    return (f"dataset {name!r} was not found in data_dir={shown}: {why}.{unfinished} It is not in the "
            f"TFDS catalog, so create it with\n"
            f"  python -m vitjax.data convert --image-folder DIR --out {shown} --name {base}\n"
            f"(or --pairs SHARDS for image-text pairs), or point --config.input.data.data_dir at the "
            f"folder that holds it.")


class TfdsSource:
    """A dataset in TFDS ArrayRecord format, read with ``tfds`` (no TensorFlow), images undecoded.

    Attributes:
      num_classes, class_names: from the ``label`` ClassLabel feature (None without one).
      features: the TFDS FeaturesDict.
    """

    def __init__(self, name: str, split: str, data_dir: str | None):
        import tensorflow_datasets as tfds  # heavy (~0.5 s); the embedded sources do without it

        self.name, self.split = name, split
        data_dir = os.path.expanduser(data_dir) if data_dir else None
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # unknown name, unreadable folder, bad version string
            why = "no dataset of that name is there" if type(e).__name__ == "DatasetNotFoundError" \
                else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise DatasetNotPreparedError(how_to_prepare(name, data_dir, why)) from e
        if not builder.is_prepared():
            raise DatasetNotPreparedError(how_to_prepare(name, data_dir, "it is not prepared there"))
        info = builder.info
        fmt = getattr(info.file_format, "value", str(info.file_format))
        if fmt not in ("array_record", "parquet"):
            raise DatasetNotPreparedError(
                f"dataset {name!r} in {builder.data_dir} is stored as {fmt}, which has no random "
                f"access. Rebuild it with\n  tfds build {name.split(':')[0]} --data_dir "
                f"{data_dir or DEFAULT_DATA_DIR} --file_format=array_record")
        # "train[:10%]+validation" -> {"train", "validation"}
        base_splits = {part.split("[")[0].strip() for part in split.split("+")}
        missing = sorted(s for s in base_splits if s not in info.splits)
        if missing:
            raise ValueError(f"dataset {name!r} in {builder.data_dir} has splits {sorted(info.splits)}, "
                             f"not {missing[0]!r}; set config.input.data.split (a converted image folder "
                             f"gets a 'validation' split from `python -m vitjax.data convert ... "
                             f"--holdout 0.1`)")
        self.features = info.features
        decoders = {k: tfds.decode.SkipDecoding() for k, f in info.features.items()
                    if isinstance(f, tfds.features.Image)}
        self._image_keys = tuple(decoders)
        self._src = builder.as_data_source(split=split, decoders=decoders or None)
        label = info.features["label"] if "label" in info.features else None
        self.num_classes = getattr(label, "num_classes", None)
        self.class_names = tuple(label.names) if getattr(label, "names", None) else None

    def __len__(self) -> int:
        return len(self._src)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ex = self._src[i]
        out = {}
        for k, v in ex.items():
            if k in self._image_keys:
                out[k] = v                       # encoded bytes
            elif k == "label":
                out[k] = np.int32(v)
            elif isinstance(v, bytes):
                out[k] = v.decode("utf-8", "replace")
            else:
                out[k] = v
        out.setdefault("file_name", f"{self.name}/{self.split}[{i}]")
        return out

    def __repr__(self):
        return f"TfdsSource({self.name!r}, split={self.split!r}, n={len(self)})"


def get_source(name: str, split: str, data_dir: str | None = None):
    """The source that ``config.input.data`` names: ``get_source(**config.input.data)``. A name
    registered in ``SOURCES`` (``@register_source``) is built as ``factory(split, data_dir=data_dir)``;
    any other name is a TFDS-format dataset in ``data_dir``."""
    if name in SOURCES:
        return SOURCES.get(name)(split, data_dir=data_dir)
    return TfdsSource(name, split, data_dir)


EVAL_SPLITS = ("validation", "test", "val")


def get_eval_source(train: Mapping[str, Any], eval_data: Mapping[str, Any] | None):
    """The eval source for ``config.input.eval_data``. Unset fields follow ``config.input.data``: a
    missing ``name``/``data_dir`` means the training dataset's, and a missing ``split`` means the first
    of validation/test/val that the dataset has. So ``--config.input.data.name=NAME
    --config.input.data.data_dir=DIR`` moves training and evaluation to another dataset together."""
    if eval_data is None:
        return None
    name = eval_data.get("name") or train["name"]
    data_dir = eval_data.get("data_dir") or (train.get("data_dir") if name == train["name"] else None)
    if eval_data.get("split"):
        return get_source(name, eval_data["split"], data_dir)
    last = None
    for split in EVAL_SPLITS:
        try:
            return get_source(name, split, data_dir)
        except ValueError as e:   # that split is absent; DatasetNotPreparedError propagates
            last = e
    raise ValueError(f"dataset {name!r} has none of the eval splits {EVAL_SPLITS}; set "
                     f"config.input.eval_data.split ({last})")
