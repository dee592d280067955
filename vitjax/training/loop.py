"""Pieces of the train loop that are not the step: the window of train metrics between log steps
(with throughput and MFU), SIGTERM handling for preemptible machines, and the progress bar."""
from __future__ import annotations

import signal
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm


class MetricWindow:
    """Train metrics of the steps since the last log step, and their wall-clock time.

    The compile and first step, and every evaluation, are left out of the timing
    (``start_timing``), so ``train/step_time`` is the steady-state step.
    """

    def __init__(self, batch_size: int, steps_per_epoch: int, peak_flops: float | None):
        self.batch_size, self.steps_per_epoch, self.peak = batch_size, steps_per_epoch, peak_flops
        self.metrics: list[dict] = []
        self.t0: float | None = None
        self.steps = 0

    @property
    def timing(self) -> bool:
        return self.t0 is not None

    def start_timing(self) -> None:
        self.t0, self.steps = time.time(), 0

    def tick(self) -> None:
        self.steps += 1

    def add(self, metrics: dict) -> None:
        self.metrics.append(metrics)

    def record(self, done: int, flops_per_device: float | None) -> dict[str, float]:
        """The log record of the window (means of the metrics, the last lr), then a fresh window."""
        w = self.metrics
        record = {k: float(np.mean([m[k] for m in w])) for k in w[-1]}
        record["train/lr"] = float(w[-1]["train/lr"])
        record["train/epoch"] = done / self.steps_per_epoch
        if self.steps > 0:
            dt = (time.time() - self.t0) / self.steps
            record["train/step_time"] = dt
            record["train/img_per_sec"] = self.batch_size / dt
            if flops_per_device:
                record["train/tflops_per_device"] = flops_per_device / dt / 1e12
                if self.peak:
                    record["train/mfu"] = flops_per_device / dt / self.peak
        self.metrics = []
        self.start_timing()
        return record


class Preemption:
    """SIGTERM (what TPU/cloud preemption sends) -> stop at the next step boundary after a checkpoint.

    With several processes the flag is OR-reduced across them each step, so every host stops at the
    same step (a host that misses the signal still joins the save).
    """

    def __init__(self):
        self.flag = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.flag = True

    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self.flag
        return bool(np.any(multihost_utils.process_allgather(np.array(self.flag))))

    def restore(self):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def progress_bar(total: int, initial: int, enabled: bool):
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)
