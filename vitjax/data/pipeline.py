"""grain pipelines: an endless, shuffled, augmented, per-host train stream and padded eval batches.

Each process reads only its own slice of the source (``index % process_count == process_index``)
and yields its *local* batch; ``vitjax.sharding.host_local_to_global`` assembles the global array.
The train iterator's position is part of every checkpoint, so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import grain
import numpy as np

from vitjax.data.ops import apply_ops, build_ops


def _check_batch(global_batch: int, process_count: int) -> int:
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by the {process_count} processes")
    return global_batch // process_count


def train_iterator(source, ops: Sequence[dict], global_batch: int, *, seed: int,
                   process_index: int = 0, process_count: int = 1, num_threads: int = 2,
                   num_workers: int = 0, prefetch: int = 4):
    """An infinite iterator of local batches ``{"image": [b, ...], "label": [b]}``; supports
    ``get_state()`` / ``set_state()`` and grain's orbax checkpoint handler."""
    local = _check_batch(global_batch, process_count)
    shard = grain.MapDataset.source(source)[process_index::process_count]
    if len(shard) < local:
        raise ValueError(f"this process's data shard has {len(shard)} examples, fewer than its local "
                         f"batch of {local}; lower input.batch_size")
    built = build_ops(ops)
    ds = (shard.seed(seed).shuffle().repeat(None)
          .random_map(lambda ex, rng: apply_ops(dict(ex), built, rng))
          .batch(local, drop_remainder=True))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    if num_workers > 0:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it_ds)


def eval_batches(source, ops: Sequence[dict], global_batch: int, *, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 2) -> Iterator[dict[str, Any]]:
    """One pass over the source in order, in fixed-shape local batches; the last one is padded and
    ``mask`` [b] marks real examples, so every example counts exactly once."""
    local = _check_batch(global_batch, process_count)
    n = len(source)
    per_process = -(-n // process_count)
    num_batches = -(-per_process // local)
    built = build_ops(ops)
    shard = grain.MapDataset.source(source)[process_index::process_count]
    ds = shard.map(lambda ex: apply_ops(dict(ex), built, None))
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
        real = len(rows)
        rows += [template] * (local - real)
        batch = {k: np.stack([np.asarray(r[k]) for r in rows]) for k in template}
        batch["mask"] = np.arange(local) < real
        yield batch
