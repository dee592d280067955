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

import logging
import sys
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import numpy as np
from absl import flags

from vitjax.data import image_io
from vitjax.data.bad_input import BadInputMonitor, SkipExample
from vitjax.data.batch_ops import build_batch_ops
from vitjax.data.ops import apply_ops, build_ops

log = logging.getLogger("vitjax.data")

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


class _ArrayBatches(grain.MapDataset):
    """Local batch i of an endless stream of epochs of in-memory records.

    Each epoch is a seeded permutation of the records (``np.random.default_rng([seed, epoch])``);
    global batch i is stream rows i*G .. i*G+G-1. The batched ops run on the whole global batch with
    the generator ``np.random.default_rng([seed, 1, i])`` and this process keeps its ``local`` rows
    (offset ``process_index * local``), so every process count sees the same global batches, the
    augmentation included. One fancy index per key and one call per op per batch, instead of a
    shuffle lookup, a record and every op per example."""

    def __init__(self, arrays: Mapping[str, np.ndarray], batched: Sequence[Callable], seed: int,
                 global_batch: int, local: int, process_index: int):
        super().__init__()
        self.arrays, self.batched = dict(arrays), list(batched)
        self._n = len(next(iter(self.arrays.values())))
        self._seed, self._global, self._local, self._offset = int(seed), global_batch, local, process_index * local
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self._seed, epoch]).permutation(self._n)
        return self._perms[epoch]

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        rows = index * self._global + np.arange(self._global)
        epochs, pos = np.divmod(rows, self._n)
        idx = np.empty_like(rows)
        for e in np.unique(epochs):
            sel = epochs == e
            idx[sel] = self._perm(int(e))[pos[sel]]
        batch = {k: v[idx] for k, v in self.arrays.items()}
        rng = np.random.default_rng([self._seed, 1, index])
        for op in self.batched:
            batch = op(batch, rng)
        return {k: v[self._offset:self._offset + self._local] for k, v in batch.items()}

    def __str__(self) -> str:
        return f"ArrayBatches(n={self._n}, local={self._local}, global={self._global})"


class DataPathMismatchError(ValueError):
    """A checkpoint's data position was saved by the other input path (in-memory / per-example)."""


class _TaggedIterator(grain.DatasetIterator):
    """The pipeline's iterator, its state tagged with the path that made it (``pipeline``:
    in_memory / per_example), so a checkpoint is never resumed by the other path, whose indices
    count other things (batches / examples). Untagged states predate the in-memory path."""

    def __init__(self, inner, path: str):
        super().__init__(inner if isinstance(inner, grain.DatasetIterator) else ())
        self._inner, self._path = inner, path

    def __next__(self):
        return next(self._inner)

    def get_state(self):
        return dict(self._inner.get_state(), pipeline=self._path)

    def set_state(self, state):
        state = dict(state)
        saved = state.pop("pipeline", "per_example")
        if saved != self._path:
            raise DataPathMismatchError(
                f"the checkpoint's data position was saved by the {saved.replace('_', '-')} input pipeline but "
                f"this run uses the {self._path.replace('_', '-')} one; resume with "
                f"--config.input.in_memory={saved == 'in_memory'}")
        self._inner.set_state(state)

    def start_prefetch(self):
        if hasattr(self._inner, "start_prefetch"):
            self._inner.start_prefetch()

    def close(self):
        if hasattr(self._inner, "close"):
            self._inner.close()


def in_memory_plan(source, ops: Sequence[Callable], max_bytes: int = 1 << 30):
    """The in-memory fast path, when it applies: ``(arrays, batched_ops)``, else None.

    It applies to a source that holds its records as arrays (``source.arrays()`` -> {key: [N, ...]},
    e.g. the digits) when the op list is a run of deterministic ops (``image_ops.deterministic``)
    followed by ops that have a batch form (``image_ops.with_batched``). The deterministic run is
    applied once per record here (the same per-example code, so the same values), and the rest runs
    on whole batches with one generator per batch: the per-example Python work that would otherwise
    cost more CPU than a small model's step is gone. The random draws differ from the per-example
    path's (both are seeded and resumable)."""
    arrays_fn = getattr(source, "arrays", None)
    if arrays_fn is None:
        return None
    k = 0
    while k < len(ops) and getattr(ops[k], "deterministic", False):
        k += 1
    if not all(hasattr(op, "batched") for op in ops[k:]):
        return None
    arrays = arrays_fn()
    n = len(source)
    if not (isinstance(arrays, Mapping) and arrays
            and all(hasattr(v, "__len__") and len(v) == n for v in arrays.values())):
        log.info("data: %s.arrays() does not give {key: [%d, ...]}; using the per-example path",
                 type(source).__name__, n)
        return None

    def record(i):
        return finalize(apply_ops({key: v[i] for key, v in arrays.items()}, ops[:k], None))

    try:
        first = record(0)
        if sum(np.asarray(v).nbytes for v in first.values()) * n > max_bytes:
            return None
        rows = [first] + [record(i) for i in range(1, n)]
    except SkipExample:
        return None                       # records the per-example path would skip: it counts them
    shapes = {key: np.shape(v) for key, v in first.items()}
    if any({key: np.shape(v) for key, v in r.items()} != shapes for r in rows):
        return None                       # records of different shapes after the deterministic ops
    stacked = {key: np.stack([np.asarray(r[key]) for r in rows]) for key in shapes}
    return stacked, [op.batched for op in ops[k:]]


def _absl_flags_parsed() -> None:
    # grain 0.2.18 worker processes read an absl flag and fail when flags were never parsed.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def train_iterator(source, ops: Sequence[dict], global_batch: int, *, seed: int,
                   process_index: int = 0, process_count: int = 1, num_threads: int = 2,
                   num_workers: int = 0, prefetch: int = 4,
                   batch_ops: Sequence[dict] | None = None, max_bad_fraction: float = 0.01,
                   in_memory: bool = True):
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
      in_memory: take the in-memory fast path (``in_memory_plan``) when the source and ops allow
        it (``config.input.in_memory``).
    """
    local = _check_batch(global_batch, process_count)
    if len(source) < global_batch:
        raise ValueError(f"the dataset has {len(source)} examples, fewer than one batch of "
                         f"{global_batch}; lower input.batch_size")
    built = build_ops(ops)
    plan = in_memory_plan(source, built) if in_memory else None
    if plan is not None:
        arrays, batched = plan
        log.info("data: in-memory fast path: %d records; %d deterministic op(s) applied once, %d per batch",
                 len(source), len(built) - len(batched), len(batched))
        ds = _ArrayBatches(arrays, batched, seed, global_batch, local, process_index)
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=max(1, prefetch)))
    else:
        fn = ExampleFn(built, BadInputMonitor(max_bad_fraction, "train"))
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
    return _TaggedIterator(iter(it_ds), "per_example" if plan is None else "in_memory")


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
