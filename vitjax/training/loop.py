"""Pieces of the train loop that are not the step: the window of train metrics between log steps
(with throughput and MFU), the device feed and the late metric fetch that keep the host from
waiting on the device between steps, SIGTERM/Ctrl-C handling, the checks a run makes before any
work (``check_start``), and the progress bar.

How a step overlaps (``Trainer._train``): step N is dispatched (jax returns at once), then the host
reads and places batch N+1 on the devices (``DeviceFeed.prefetch``), then fetches the metrics of
step N-1 (``MetricFetcher``), which are ready or nearly so while step N runs. The host only waits
for the current step where it must: before a checkpoint (a NaN step is never saved), an
evaluation, and the run's end.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from vitjax.config import ConfigError

# With several processes the preemption flag is agreed by an all-gather, which waits for the step
# in flight; asking every step would make every step wait. A preemption notice gives ~30 s.
PREEMPTION_CHECK_STEPS = 10


class NonFiniteError(FloatingPointError):
    """Loss or gradient norm became NaN/Inf; the run stops without saving the bad state."""


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


class DeviceFeed:
    """The train batches, each read and placed on the devices (``put``: host-local -> global array)
    while the previous step runs.

    The data iterator is one batch ahead while a batch waits here, so a checkpoint must record the
    iterator as it was before that batch: ``checkpoint_iterator()`` gives what to save, and a resume
    replays the waiting batch exactly.
    """

    def __init__(self, data_it, put):
        self.data_it, self.put = data_it, put
        self._ready = None                # (global batch, iterator state before it was read)

    def prefetch(self) -> None:
        """Reads and places the next batch (no-op when one is waiting)."""
        if self._ready is None:
            before = self.data_it.get_state()
            self._ready = (self.put(next(self.data_it)), before)

    def next(self):
        self.prefetch()
        batch, self._ready = self._ready[0], None
        return batch

    def checkpoint_iterator(self):
        """What ``Checkpointer.save`` should record for the data: the iterator, or its state before
        the batch that is waiting (grain's checkpoint handler reads ``get_state()`` as JSON bytes)."""
        if self._ready is None:
            return self.data_it
        return _IteratorState(self._ready[1])


class _IteratorState:
    def __init__(self, state):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state, indent=4).encode()


class MetricFetcher:
    """Fetches each step's metrics from the device ``lag`` steps after dispatching it, checks them
    (NaN/Inf stops the run), adds them to the window, and calls ``on_log(step)`` for log steps.

    Attributes:
      window: the ``MetricWindow`` the fetched metrics go to; a fetch counts one timed step.
      last_good: callable giving (latest checkpoint step, checkpoint folder) for the NaN message
        (it waits for pending saves first).
    """

    def __init__(self, window: MetricWindow, last_good, on_log, lag: int = 1):
        self.window, self.last_good, self.on_log, self.lag = window, last_good, on_log, lag
        self.pending: collections.deque = collections.deque()

    def push(self, step: int, metrics, log: bool) -> None:
        self.pending.append((step, metrics, log))
        while len(self.pending) > self.lag:
            self._fetch(*self.pending.popleft())

    def drain(self) -> None:
        """Waits for every dispatched step and fetches its metrics."""
        while self.pending:
            self._fetch(*self.pending.popleft())

    def _fetch(self, step: int, m, log: bool) -> None:
        m = jax.device_get(m)
        if not bool(m.pop("train/finite")):
            latest, directory = self.last_good()
            raise NonFiniteError(
                f"loss or gradient norm is NaN/Inf at step {step} (loss={float(m['train/loss'])}, "
                f"grad_norm={float(m['train/grad_norm'])}). Stopped without saving it; the last good "
                f"checkpoint is step {latest} in {directory}. Lower optim.lr, raise "
                f"optim.warmup_steps or set optim.clip_norm, then rerun to resume from there.")
        self.window.add(m)
        if self.window.timing:
            self.window.tick()
        if log:
            self.on_log(step)


class Preemption:
    """SIGTERM (what TPU/cloud preemption sends) or Ctrl-C (SIGINT) -> stop at the next step boundary
    after a checkpoint. A second Ctrl-C raises KeyboardInterrupt at once (no checkpoint).

    With several processes the flag is OR-reduced across them each step, so every host stops at the
    same step (a host that misses the signal still joins the save). ``received`` names the signal
    ("SIGTERM" or "SIGINT") this process got, None if none.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.flag = False
        self.received: str | None = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.flag:     # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.flag = True
        self.received = self.received or signal.Signals(signum).name

    def requested(self, step: int | None = None) -> bool:
        """This process's flag; with several processes the flag OR-reduced across them, asked only
        every ``PREEMPTION_CHECK_STEPS`` steps (``step``: the steps done, the same on every process)."""
        if jax.process_count() == 1:
            return self.flag
        if step is not None and step % PREEMPTION_CHECK_STEPS:
            return False
        return bool(np.any(multihost_utils.process_allgather(np.array(self.flag))))

    def describe(self) -> str:
        """How the stop was asked for, for the one-line message."""
        if self.received == "SIGINT":
            return "Ctrl-C (SIGINT) received"
        return f"{self.received or 'SIGTERM'} received" if self.flag else "stop requested on another process"

    def restore(self):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


def check_start(config, batch_size: int, train_examples: int, workdir: str) -> None:
    """The mistakes that would otherwise fail deep inside a run, as one-line ConfigErrors before any
    work: a global batch larger than the dataset, and (for a run without checkpoints, the only kind
    that reads it) a ``config.init.path`` that is not there."""
    if train_examples < batch_size:
        raise ConfigError(f"the global batch input.batch_size={batch_size} is larger than the {train_examples} "
                          f"training examples; set --config.input.batch_size to at most {train_examples} "
                          f"(or train on a larger dataset)")
    path = (config.get("init") or {}).get("path")
    ckpts = os.path.join(workdir, "checkpoints")
    resuming = os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))
    if not path or resuming:
        return
    if not os.path.exists(path):
        raise ConfigError(f"config.init.path={path!r} does not exist; give an existing vitjax workdir or "
                          f"PyTorch weights file (.safetensors/.bin/.pt/.pth), or unset config.init.path")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")) and not any(
            os.path.isfile(os.path.join(path, n)) for n in ("model.safetensors", "pytorch_model.bin")):
        raise ConfigError(f"config.init.path={path!r} is a folder with neither a vitjax run (config.json, "
                          f"checkpoints/) nor model.safetensors/pytorch_model.bin; point it at one of those")


def progress_bar(total: int, initial: int, enabled: bool):
    """The step bar. The trainer opens it once the first step has compiled and run, so its rate and
    ETA never count the compile, and its own lines go through ``bar.write`` (no torn bar)."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)
