"""grain pipelines: an endless, shuffled, augmented, per-host train stream and padded eval batches.

    source -> shuffle (seeded, global, new order each epoch) -> repeat
      -> per-example ops (random_map, keyed by global position; bad records dropped)
      -> this process's rows of each global batch -> batch(local) -> batch ops (mixup...)
      -> [worker processes] -> local batch

There is one global example order. Process p reads only rows [p*local, (p+1)*local) of every global
batch, so each host decodes only its share, and the global batch, augmentation included, is the same
whatever the number of processes: a run on 2 hosts x 4 devices reproduces a run on 1 host x 8
devices. ``vitjax.sharding.host_local_to_global`` assembles the global array with
``jax.make_array_from_process_local_data``. The train iterator's position (``get_state()``) is part
of every checkpoint, so a resumed run sees exactly the batches an uninterrupted run would have seen,
provided it runs with the same seed, batch size, process count and ``num_workers``.

Batches hold only arrays: string features (file names, captions that were not tokenized) are
dropped before batching, because every key of a batch is sharded onto devices.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import numpy as np
from absl import flags

from vitjax.data import image_io
from vitjax.data.bad_input import BadInputMonitor, SkipExample
from vitjax.data.batch_ops import build_batch_ops
from vitjax.data.ops import apply_ops, build_ops

#: Keys that identify a record in messages and never reach a batch.
METADATA_KEYS = ("file_name",)


def _check_batch(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by the {process_count} processes")
    return global_batch // process_count


def _process_seed(seed: int, process_index: int, stream: int = 0) -> int:
    """Process 0, stream 0 keeps ``seed`` itself; other processes get independent seeds, so that
    the i-th example of every host does not draw the same augmentation."""
    if process_index == 0 and stream == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), process_index, stream]).generate_state(1)[0])


def record_name(ex: Mapping[str, Any]) -> str:
    name = ex.get("file_name")
    if isinstance(name, (bytes, np.bytes_)):
        name = bytes(name).decode("utf-8", "replace")
    return str(name) if name is not None else "a record without file_name"


def finalize(ex: dict) -> dict:
    """Drops metadata and string features; an image still in encoded bytes is a config error."""
    out = {}
    for k, v in ex.items():
        if k in METADATA_KEYS:
            continue
        if isinstance(v, str) or image_io.is_encoded(v):
            if k.startswith("image"):
                raise ValueError(
                    f"example key {k!r} is still encoded image bytes after the preprocessing ops; "
                    f"start the op list with a decoding op, e.g. dict(op='decode_random_resized_crop', "
                    f"size=224) for training or dict(op='decode_center_crop', size=224) for eval")
            continue
        out[k] = v
    return out


class ExampleFn:
    """ops + finalize for one example; returns None (grain drops it) for a skipped example."""

    def __init__(self, ops: Sequence[Callable], monitor: BadInputMonitor):
        self.ops = list(ops)
        self.monitor = monitor

    def __call__(self, ex: Mapping[str, Any], rng: np.random.Generator | None) -> dict | None:
        try:
            out = apply_ops(dict(ex), self.ops, rng)
        except SkipExample as e:
            self.monitor.skipped(record_name(ex), e)
            return None
        self.monitor.good()
        return finalize(out)


class BatchFn:
    """Batch ops (``batch_ops``) on one local batch, with grain's per-batch generator."""

    def __init__(self, ops: Sequence[Callable]):
        self.ops = list(ops)

    def __call__(self, batch: dict, rng: np.random.Generator) -> dict:
        for op in self.ops:
            batch = op(batch, rng)
        return batch


class _ProcessRows(grain.MapDataset):
    """Element i of process p = element (i // local) * global + p * local + i % local of the parent:
    this process's rows of each global batch."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, local: int, process_index: int):
        super().__init__(parent)
        self._global, self._local, self._offset = global_batch, local, process_index * local
        self._length = len(parent) // global_batch * local

    def __len__(self) -> int:
        return self._length

    def _index(self, i: int) -> int:
        b, r = divmod(i, self._local)
        return b * self._global + self._offset + r

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._index(index)]

    def __str__(self) -> str:
        return f"ProcessRows(offset={self._offset}, local={self._local}, global={self._global})"


def _absl_flags_parsed() -> None:
    # grain 0.2.18 worker processes read an absl flag and fail when flags were never parsed.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def train_iterator(source, ops: Sequence[dict], global_batch: int, *, seed: int,
                   process_index: int = 0, process_count: int = 1, num_threads: int = 2,
                   num_workers: int = 0, prefetch: int = 4,
                   batch_ops: Sequence[dict] | None = None, max_bad_fraction: float = 0.01):
    """An infinite iterator of local batches ``{"image": [b, ...], "label": [b], ...}``; supports
    ``get_state()`` / ``set_state()`` and grain's orbax checkpoint handler.

    Args:
      ops: per-example op list (``vitjax.data.ops``).
      num_threads: threads per process that run the per-example ops (PIL releases the GIL).
      num_workers: worker processes (0: none); each builds whole batches.
      prefetch: local batches' worth of examples buffered ahead.
      batch_ops: batch-level op list (``vitjax.data.batch_ops``, e.g. mixup/cutmix).
      max_bad_fraction: stop with TooManyBadExamplesError when more than this fraction of the
        records read (per process, per worker) fail to decode; they are skipped until then.
    """
    local = _check_batch(global_batch, process_count)
    if len(source) < global_batch:
        raise ValueError(f"the dataset has {len(source)} examples, fewer than one batch of "
                         f"{global_batch}; lower input.batch_size")
    fn = ExampleFn(build_ops(ops), BadInputMonitor(max_bad_fraction, "train"))
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None).random_map(fn)
    if process_count > 1:
        ds = _ProcessRows(ds, global_batch, local, process_index)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                 prefetch_buffer_size=max(1, prefetch) * local))
    it_ds = it_ds.batch(local, drop_remainder=True)
    built_batch_ops = build_batch_ops(batch_ops)
    if built_batch_ops:
        it_ds = it_ds.random_map(BatchFn(built_batch_ops), seed=_process_seed(seed, process_index, 1))
    if num_workers > 0:
        _absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def eval_batches(source, ops: Sequence[dict], global_batch: int, *, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 2,
                 max_bad_fraction: float = 0.01) -> Iterator[dict[str, Any]]:
    """One pass over the source in order, in fixed-shape local batches; the last ones are padded and
    ``mask`` [b] marks real examples, so every example counts exactly once. Every process yields
    the same number of batches. Undecodable records are skipped (they shift later examples forward
    and leave one more padded slot at the end)."""
    local = _check_batch(global_batch, process_count)
    n = len(source)
    per_process = -(-n // process_count)
    num_batches = -(-per_process // local)
    monitor = BadInputMonitor(max_bad_fraction, "eval")
    fn = ExampleFn(build_ops(ops), monitor)
    shard = grain.MapDataset.source(source)[process_index::process_count]
    ds = shard.map(lambda ex: fn(ex, None))
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)))
    template = None
    for _ in range(num_batches):
        rows = []
        for ex in it:
            rows.append(ex)
            if len(rows) == local:
                break
        if rows:
            template = rows[0]
        if template is None:       # every record so far was bad: past any threshold
            monitor.check()
            raise RuntimeError("eval: no example of this process's shard could be decoded")
        real = len(rows)
        rows += [template] * (local - real)
        batch = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in template}
        batch["mask"] = np.arange(local) < real
        yield batch
    monitor.check()
