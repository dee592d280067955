"""Writes a dataset in TFDS's ArrayRecord format without TensorFlow, atomically.

Layout (what ``tfds build --file_format=array_record`` writes, so ``tfds.data_source``,
``tfds.builder_from_directory`` and ``vitjax.data.get_source`` all open it):

    DATA_DIR/NAME/1.0.0/NAME-SPLIT.array_record-00000-of-0000N   records: serialized tf.train.Example
                       /dataset_info.json, features.json, label.labels.txt
                       /vitjax_conversion.json                    how it was made, what was skipped

Everything is written into ``DATA_DIR/NAME/.incomplete-1.0.0-<pid>-<random>/`` and renamed to
``1.0.0`` only after the last byte and the metadata are on disk: a conversion that is interrupted
(error, Ctrl-C, kill) never leaves a folder that TFDS or vitjax would read as a complete dataset.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from typing import Any

from array_record.python import array_record_module as arm

INCOMPLETE_PREFIX = ".incomplete-"
VERSION = "1.0.0"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# tfds writes ArrayRecord with one record per chunk: the fastest random access.
ARRAY_RECORD_OPTIONS = "group_size:1"


def check_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        fixed = re.sub(r"[^a-z0-9_]", "_", (name or "data").lower()).strip("_") or "data"
        if not fixed[0].isalpha():
            fixed = "d_" + fixed
        raise ValueError(f"dataset name {name!r} must be lower-case letters, digits and underscores, "
                         f"starting with a letter (TFDS's rule), e.g. --name {fixed}")


def check_target(data_dir: str, name: str, overwrite: bool) -> str:
    """Checks the name and that ``data_dir/name/1.0.0`` may be written; returns that path."""
    check_name(name)
    final = os.path.join(os.path.abspath(os.path.expanduser(data_dir)), name, VERSION)
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"{final} already holds a dataset; pass --overwrite to replace it "
                              f"(the old one stays until the new one is complete)")
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_incomplete(folder: str) -> list[str]:
    """Deletes unfinished conversions in ``folder`` whose process (on this host) is gone."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for entry in sorted(os.listdir(folder)):
        if not entry.startswith(INCOMPLETE_PREFIX):
            continue
        m = re.match(re.escape(INCOMPLETE_PREFIX) + r"[^-]+-(\d+)-", entry)
        if m and _pid_alive(int(m.group(1))) and int(m.group(1)) != os.getpid():
            continue
        shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)
        removed.append(os.path.join(folder, entry))
    return removed


class DatasetWriter:
    """Sharded ArrayRecord writer for one dataset; use as a context manager.

    ``write(split, record)`` takes a serialized example (``serializer(features)``); ``finish()``
    writes the metadata and publishes the folder; leaving the ``with`` block without ``finish()``
    (an exception) deletes the temporary folder.

    Args:
      data_dir: the TFDS data_dir (``--out``); the dataset goes to ``data_dir/name/1.0.0``.
      features: the ``tfds.features.FeaturesDict`` of the records.
      shard_bytes: a new shard file starts after this many bytes.
      overwrite: replace an existing ``data_dir/name/1.0.0`` (only when ``finish()`` succeeds).
    """

    def __init__(self, data_dir: str, name: str, features, *, shard_bytes: int = 256 << 20,
                 overwrite: bool = False):
        self.final = check_target(data_dir, name, overwrite)
        self.name, self.features, self.shard_bytes = name, features, int(shard_bytes)
        self.parent = os.path.dirname(self.final)
        os.makedirs(self.parent, exist_ok=True)
        self.removed_stale = remove_stale_incomplete(self.parent)
        self.tmp = os.path.join(self.parent, f"{INCOMPLETE_PREFIX}{VERSION}-{os.getpid()}-{secrets.token_hex(4)}")
        os.makedirs(self.tmp)
        self._shards: dict[str, list[list]] = {}   # split -> [[path, writer, n_records, n_bytes], ...]
        self.finished = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.finished:
            self.abort()
        return False

    def _shard_path(self, split: str, index: int) -> str:
        return os.path.join(self.tmp, f"{self.name}-{split}.array_record-{index:05d}.partial")

    def write(self, split: str, record: bytes) -> None:
        shards = self._shards.setdefault(split, [])
        if not shards or shards[-1][3] >= self.shard_bytes:
            if shards:
                shards[-1][1].close()
            path = self._shard_path(split, len(shards))
            shards.append([path, arm.ArrayRecordWriter(path, ARRAY_RECORD_OPTIONS), 0, 0])
        shard = shards[-1]
        shard[1].write(record)
        shard[2] += 1
        shard[3] += len(record)

    @property
    def num_bytes(self) -> int:
        return sum(s[3] for shards in self._shards.values() for s in shards)

    def split_sizes(self) -> dict[str, int]:
        return {split: sum(s[2] for s in shards) for split, shards in self._shards.items()}

    def finish(self, *, description: str = "", extra: dict[str, Any] | None = None) -> str:
        """Closes the shards, writes TFDS metadata (+ ``vitjax_conversion.json``) and renames the
        temporary folder to ``data_dir/name/1.0.0``. Returns that path."""
        import tensorflow_datasets as tfds  # heavy (~0.5 s); only needed to publish the metadata

        if not self._shards:
            raise ValueError("no records were written; there is nothing to publish")
        split_infos = []
        for split, shards in self._shards.items():
            shards[-1][1].close()
            n = len(shards)
            for i, (path, _, _, _) in enumerate(shards):
                os.rename(path, os.path.join(self.tmp, f"{self.name}-{split}.array_record-{i:05d}-of-{n:05d}"))
            split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[s[2] for s in shards],
                                                   num_bytes=sum(s[3] for s in shards)))
        tfds.folder_dataset.write_metadata(data_dir=self.tmp, features=self.features,
                                           split_infos=split_infos, version=VERSION,
                                           check_data=False, description=description)
        with open(os.path.join(self.tmp, "vitjax_conversion.json"), "w") as fh:
            json.dump(dict(extra or {}), fh, indent=1, default=str)
        if os.path.exists(self.final):               # --overwrite: swap, then delete the old one
            old = os.path.join(self.parent, f"{INCOMPLETE_PREFIX}old-{os.getpid()}-{secrets.token_hex(4)}")
            os.rename(self.final, old)
            os.rename(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.tmp, self.final)
        self.finished = True
        return self.final

    def abort(self) -> None:
        for shards in self._shards.values():
            for s in shards:
                try:
                    s[1].close()
                except Exception:  # already closed or failed mid-write; the folder goes anyway
                    pass
        self._shards = {}
        shutil.rmtree(self.tmp, ignore_errors=True)


def serializer(features):
    """``example dict -> bytes``: tfds's encoding + tf.train.Example serialization, no TensorFlow."""
    from tensorflow_datasets.core import example_serializer  # heavy (~0.5 s); converters only

    ser = example_serializer.ExampleSerializer(features.get_serialized_info())

    def serialize(example: dict) -> bytes:
        # deterministic=True orders the proto's feature map; otherwise the bytes depend on the
        # process's hash seed, and conversions with different worker counts would differ.
        return ser.get_tf_example(features.encode_example(example)).SerializeToString(deterministic=True)
    return serialize
