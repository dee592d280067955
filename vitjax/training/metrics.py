"""Metric sinks: ``<workdir>/metrics.jsonl`` (one JSON object per log step), TensorBoard events and,
optionally, Weights & Biases.

TensorBoard files are written with tensorboardX, which needs no TensorFlow. W&B (``train.wandb=True``;
``train.wandb_mode="offline"`` writes under ``<workdir>/wandb`` for ``wandb sync`` later) logs the same
records; the run id is kept in ``<workdir>/wandb_run_id`` so a resumed run continues the same W&B run.
Only process 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from typing import Any, Mapping

import jax
from tensorboardX import SummaryWriter

from vitjax import config_defaults
from vitjax.config import ConfigError

WANDB_ID_FILE = "wandb_run_id"


def _plain(v: Any):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else str(f)


def _wandb_run(workdir: str, project: str, mode: str | None, config: Mapping[str, Any] | None):
    """A W&B run logging into ``workdir`` (resuming the workdir's run id when it has one)."""
    try:
        import wandb  # optional dependency: only runs with train.wandb=True need it
    except ImportError as e:
        raise ConfigError("train.wandb=True needs the wandb package: pip install 'vitjax[wandb]' (or set "
                          "--config.train.wandb=False)") from e
    id_path = os.path.join(workdir, WANDB_ID_FILE)
    if os.path.isfile(id_path):
        run_id = open(id_path).read().strip()
    else:
        run_id = secrets.token_hex(4)            # W&B run ids: lower-case letters and digits
        with open(id_path, "w") as fh:
            fh.write(run_id + "\n")
    return wandb.init(project=project, id=run_id, resume="allow", dir=workdir, mode=mode,
                      name=os.path.basename(os.path.normpath(workdir)), config=dict(config or {}))


class MetricWriter:
    def __init__(self, workdir: str, tensorboard: bool = True, wandb: dict | None = None):
        """``wandb``: None (off) or dict(project, mode, config) for a W&B run (``_wandb_run``)."""
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = self._wb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            self._fh = open(self.path, "a", buffering=1)
            if tensorboard:
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            if wandb is not None:
                self._wb = _wandb_run(workdir, **wandb)

    @classmethod
    def from_config(cls, workdir: str, config) -> "MetricWriter":
        """The sinks ``config.train`` asks for (``tensorboard``, ``wandb``, ``wandb_project``, ``wandb_mode``)."""
        tc = config.get("train")
        wb = None
        if config_defaults.get(tc, "train", "wandb"):
            wb = dict(project=config_defaults.get(tc, "train", "wandb_project"),
                      mode=config_defaults.get(tc, "train", "wandb_mode"), config=config.to_dict())
        return cls(workdir, tensorboard=config_defaults.get(tc, "train", "tensorboard"), wandb=wb)

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, float):
                    self._tb.add_scalar(k, v, int(step))
        if self._wb is not None:
            self._wb.log({k: v for k, v in record.items() if k != "step" and isinstance(v, float)}, step=int(step))

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
            if self._wb is not None:
                self._wb.finish()


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl. A resumed run appends: later records for a step
    replace earlier ones."""
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]
