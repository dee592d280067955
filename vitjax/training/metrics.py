"""Metric sinks: ``<workdir>/metrics.jsonl`` (one JSON object per log step) and TensorBoard events.

TensorBoard files are written with tensorboardX, which needs no TensorFlow. Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

import jax
from tensorboardX import SummaryWriter


def _plain(v: Any):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


class MetricWriter:
    def __init__(self, workdir: str, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            self._fh = open(self.path, "a", buffering=1)
            if tensorboard:
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, float):
                    self._tb.add_scalar(k, v, int(step))

    def flush(self):
        if self.active:
            self._fh.flush()
            if self._tb is not None:
                self._tb.flush()

    def close(self):
        if self.active:
            self._fh.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl. A resumed run appends: later records for a step
    replace earlier ones."""
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
