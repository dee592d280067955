"""Running a function over whole splits on the mesh: the eval step, features for the evaluators,
per-example losses.

``BatchRunner.map_batches(name, fn, params, source)`` AOT-compiles ``fn(params, batch)`` once per
name and batch shape (params sharded as the train state, the batch along ``act_batch``, outputs
replicated) and returns the per-example outputs of one ordered, padded pass with the padding
removed. It is the context evaluators use (``vitjax.evals``), so they never see the trainer.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import jax
import numpy as np
from flax import linen as nn

from vitjax import config_defaults
from vitjax import sharding as sh
from vitjax.data import eval_batches


@contextlib.contextmanager
def mesh_context(mesh, rules):
    """Mesh + rules context under which model code is traced (logical constraints resolve)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


class Prefix:
    """The first ``n`` records of a source (a random-access view)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, int(n)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


class BatchRunner:
    """Compiled, sharded passes over a split (see the module docstring).

    Attributes:
      mesh, rules: where batches live and how logical axes map onto the mesh.
      input_cfg: ``config.input`` (eval ops, threads, the bad-record budget).
      eval_batch_size: the global batch of every pass unless a call gives another.
      abstract_params: the params' ShapeDtypeStructs with their shardings (the compile target).
    """

    def __init__(self, mesh, rules, input_cfg, eval_batch_size: int, abstract_params: Any):
        self.mesh, self.rules, self.input_cfg = mesh, rules, input_cfg
        self.eval_batch_size = int(eval_batch_size)
        self.abstract_params = abstract_params
        self.param_shardings = jax.tree.map(lambda a: a.sharding, abstract_params)
        self._compiled: dict = {}

    def context(self):
        return mesh_context(self.mesh, self.rules)

    def batch_sharding(self, batch: dict) -> dict:
        return {k: sh.activation_sharding(self.mesh, self.rules, ("act_batch",) + (None,) * (np.ndim(v) - 1))
                for k, v in batch.items()}

    def abstract_batch(self, batch: dict) -> dict:
        bs = self.batch_sharding(batch)
        return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bs[k]) for k, v in batch.items()}

    def compiled(self, name: str, fn: Callable, batch: dict):
        """``fn(params, batch)`` AOT-compiled for global batches shaped like ``batch``; cached by
        name and shapes."""
        key = (name,) + tuple(sorted((k, v.shape) for k, v in batch.items()))
        if key not in self._compiled:
            jitted = jax.jit(fn, in_shardings=(self.param_shardings, self.batch_sharding(batch)),
                             out_shardings=sh.replicated(self.mesh))
            with self.context():
                self._compiled[key] = jitted.lower(self.abstract_params, self.abstract_batch(batch)).compile()
        return self._compiled[key]

    def batches(self, source, ops, batch_size: int | None = None):
        """One ordered, padded pass over ``source`` (this process's rows of each global batch), as
        global arrays."""
        inp = self.input_cfg
        for local in eval_batches(source, ops, batch_size or self.eval_batch_size,
                                  process_index=jax.process_index(), process_count=jax.process_count(),
                                  num_threads=config_defaults.get(inp, "input", "num_threads"),
                                  max_bad_fraction=config_defaults.get(inp, "input", "max_bad_fraction")):
            yield sh.host_local_to_global(local, self.mesh, self.rules)

    def map_batches(self, name: str, fn, params, source, ops=None, batch_size: int | None = None,
                    max_examples: int | None = None) -> dict[str, np.ndarray]:
        """Runs ``fn(params, batch) -> {key: [B, ...]}`` over one ordered pass of ``source`` prepared
        with ``ops`` (default: the eval ops) and returns the per-example outputs as numpy arrays with
        the padded rows removed, plus the batch's ``label`` when the source has labels. ``name`` keys
        the compile cache. The building block of representation evaluations (kNN, linear probe,
        zero-shot): features of a whole split.

        With several processes every process gets the outputs of all examples (in a process-strided
        order, the same on every process)."""
        if max_examples is not None and max_examples < len(source):
            source = Prefix(source, max_examples)

        def step(p, b):
            r = dict(fn(p, b))
            r["mask"] = b["mask"]
            if "label" in b:
                r.setdefault("label", b["label"])
            return r

        out: dict[str, list] = {}
        ops = self.input_cfg.eval_ops if ops is None else ops
        for batch in self.batches(source, ops, batch_size):
            res = jax.device_get(self.compiled(f"map:{name}", step, batch)(params, batch))
            keep = np.asarray(res.pop("mask"), bool)
            for k, v in res.items():
                out.setdefault(k, []).append(np.asarray(v)[keep])
        return {k: np.concatenate(v) for k, v in out.items()}

    def metric_means(self, fn, params, source) -> dict[str, float]:
        """``fn(params, batch) -> {name: (sum, count)}`` (an objective's ``eval_metrics``) summed over
        a whole split: ``{"eval/<name>": sum / count}``."""
        sums: dict[str, list[float]] = {}
        for batch in self.batches(source, self.input_cfg.eval_ops):
            out = jax.device_get(self.compiled("eval", fn, batch)(params, batch))
            for k, (s, c) in out.items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0] += float(s)
                acc[1] += float(c)
        return {f"eval/{k}": s / max(c, 1.0) for k, (s, c) in sums.items()}
