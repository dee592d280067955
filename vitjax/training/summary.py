"""``RunSummary``: what ``Trainer.train()`` returns, so that callers (the scaling sweep, scripts)
never read the trainer's internals."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class RunSummary(Mapping):
    """A finished (or preempted) run. It reads as the mapping of its final metrics
    (``summary["eval/top1"]``), so code that wants only those needs nothing else.

    Attributes:
      final_metrics: the last evaluation, ``{"eval/loss": ..., "eval/top1": ...}`` ({} when the
        run has no eval data, diverged, or was preempted before its end).
      status: "finished", "preempted" (SIGTERM: a checkpoint was saved and the loop stopped) or
        "diverged" (attached as ``NonFiniteError.summary``: the loss or gradient became NaN/Inf).
      step: the step the run stopped at; total_steps, steps_per_epoch, batch_size: the schedule.
      train_examples: records in the training source.
      params: number of parameters; devices and device_kind: the mesh's.
      flops_per_device: XLA's FLOPs of one train step on one device (None if not measurable).
      compile_seconds: compile time of the train step.
      eval_losses: the per-example eval losses of the final parameters, [num_eval_examples] (only
        with ``train(eval_loss_per_example=True)`` and an objective that defines them);
      eval_losses_seconds: the time that extra pass took.
    """
    final_metrics: dict[str, float]
    status: str
    step: int
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    train_examples: int
    params: int
    devices: int
    device_kind: str
    flops_per_device: float | None
    compile_seconds: float | None
    eval_losses: np.ndarray | None = None
    eval_losses_seconds: float | None = None

    def __getitem__(self, key: str) -> float:
        return self.final_metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.final_metrics)

    def __len__(self) -> int:
        return len(self.final_metrics)

    def eval_loss_stats(self) -> dict[str, Any] | None:
        """``{"n", "mean", "std", "se", "rel_se"}`` of ``eval_losses`` (``se = std / sqrt(n)``: the
        standard error of the mean over test examples), or None with fewer than two."""
        if self.eval_losses is None or self.eval_losses.size < 2:
            return None
        ce = np.asarray(self.eval_losses, np.float64)
        mean, std = float(ce.mean()), float(ce.std(ddof=1))
        se = std / math.sqrt(ce.size)
        return {"n": int(ce.size), "mean": mean, "std": std, "se": se, "rel_se": se / mean if mean > 0 else None}
