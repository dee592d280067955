"""The one training loop: any model, any objective, any mesh.

    config -> data (grain) -> model (Flax) -> objective (loss, metrics) -> train step (jit, sharded)
           -> checkpoint (orbax) -> evaluation -> export

The step (``vitjax.training.step``) is ``jax.jit`` with explicit in/out ``NamedSharding``s derived
from the logical-axis rules (``vitjax.sharding``), and donates the old state. Parameters are created
already sharded by jitting the init with ``out_shardings``. A rerun with the same workdir resumes
from the latest checkpoint, including the data iterator, and reproduces the uninterrupted run's
losses step for step. ``train()`` returns a ``RunSummary``.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vitjax import config as config_lib
from vitjax import config_defaults
from vitjax import sharding as sh
from vitjax.data import get_source, train_iterator
from vitjax.data.batch_ops import batch_ops_for_model
from vitjax.data.sources import get_eval_source
from vitjax.evals import EvalContext, build_evaluators, run_evaluators
from vitjax.models import build_model
from vitjax.objectives import create_objective
from vitjax.objectives.base import RunInfo
from vitjax.param_tree import strip_boxes
from vitjax.training import compile_cache
from vitjax.training import dry_run as dry_run_lib
from vitjax.training.batches import BatchRunner, mesh_context
from vitjax.training.checkpoint import Checkpointer
from vitjax.training.exports import check_export_targets, write_export_targets
from vitjax.training.flops import compiled_flops, device_peak_flops
from vitjax.training.init_weights import init_params
from vitjax.training.loop import (DeviceFeed, MetricFetcher, MetricWindow, NonFiniteError, Preemption, check_start,
                                  progress_bar)
from vitjax.training.metrics import MetricWriter
from vitjax.training.optim import make_optimizer, with_objective_freezing
from vitjax.training.step import StepFn, TrainState
from vitjax.training.summary import RunSummary
from vitjax.training.workdir import record_run
from vitjax.training.workdir_lock import lock_workdir

log = logging.getLogger("vitjax")

__all__ = ["NonFiniteError", "RunSummary", "TrainState", "Trainer"]


class Trainer:
    """Builds everything a run needs from a config; ``train()`` runs it, ``evaluate()`` scores it."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None, load_data: bool = True):
        config_lib.validate(config)
        self.config = config
        compile_cache.configure(config.train)     # before anything compiles
        self.workdir = os.path.abspath(workdir)
        try:
            self.mesh = sh.make_mesh(config.get("mesh", {"data": -1}), devices)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from e
        self.rules = sh.rules_from_config(config.get("sharding_rules"))
        try:   # a model, objective or evaluator option out of range is a config mistake, reported as one
            self.model = build_model(config)
            self.objective = create_objective(config.objective)
            self.objective.check_model(self.model)
            self.evaluators = build_evaluators(self.objective, config)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from e
        inp = config.input
        self.batch_size = int(inp.batch_size)
        split = sh.batch_axes_size(self.mesh, self.rules)
        if self.batch_size % split:
            raise config_lib.ConfigError(f"input.batch_size={self.batch_size} is not divisible by the {split} ways "
                                         f"the mesh {dict(self.mesh.shape)} splits the batch")
        micro = int(config_defaults.get(config.train, "train", "micro_batch_size") or 0)
        if micro and (self.batch_size % micro or micro % split):
            raise config_lib.ConfigError(
                f"train.micro_batch_size={micro} must divide input.batch_size={self.batch_size} and be "
                f"divisible by the {split} ways the mesh splits the batch")
        self.num_micro = self.batch_size // micro if micro else 1
        self.eval_batch_size = int(inp.get("eval_batch_size", self.batch_size))
        if self.eval_batch_size % split:
            raise config_lib.ConfigError(f"input.eval_batch_size={self.eval_batch_size} is not divisible by the "
                                         f"{split} ways the mesh splits the batch")
        if load_data:
            self.train_source = get_source(**inp.data)
            self.eval_source = get_eval_source(inp.data, inp.get("eval_data"))
            # Labels beyond the head's logits give a NaN loss deep in the run: refuse them here.
            n_model = getattr(self.model, "num_classes", None)
            for what, src in (("training", self.train_source), ("eval", self.eval_source)):
                n_data = getattr(src, "num_classes", None)
                if isinstance(n_model, int) and isinstance(n_data, int) and 0 < n_model < n_data:
                    raise config_lib.ConfigError(
                        f"model.num_classes={n_model} is smaller than the {n_data} classes of the {what} data "
                        f"({src!r}): labels >= {n_model} have no logit and the loss would be NaN; set "
                        f"--config.model.num_classes={n_data}")
        else:   # a dry run: shapes come from the model, the schedule length does not matter
            self.train_source, self.eval_source = range(self.batch_size), None
        tc = config.train
        self.steps_per_epoch = max(1, len(self.train_source) // self.batch_size)
        self.total_steps = int(tc.total_steps) if tc.get("total_steps", -1) > 0 \
            else int(math.ceil(tc.num_epochs * self.steps_per_epoch))
        if not load_data:   # the schedule length is unknown without the dataset and irrelevant here
            self.total_steps = max(self.total_steps,
                                   int(config_defaults.get(config.optim, "optim", "warmup_steps") or 0) + 1)
        self.run_info = RunInfo(mesh=self.mesh, rules=self.rules, steps_per_epoch=self.steps_per_epoch,
                                total_steps=self.total_steps, batch_size=self.batch_size,
                                eval_batch_size=self.eval_batch_size)
        self._base_tx, self.lr_fn = make_optimizer(config.optim, self.total_steps, self.steps_per_epoch)
        self.tx = self._base_tx
        self.seed = int(config_defaults.get(tc, "train", "seed"))
        # "rbg" draws dropout/drop-path masks much faster than threefry on CPU and TPU (digits demo:
        # 162 vs 319 ms per step), at no cost to quality; "threefry2x32" is jax's default.
        self.prng_impl = config_defaults.get(tc, "train", "prng_impl")
        self.eval_context = EvalContext(model=self.model, objective=self.objective, config=config,
                                        train_source=self.train_source, eval_source=self.eval_source,
                                        map_batches=self.map_batches)
        # trace: jax tracing + lowering to HLO (every start); compile: XLA, or a compile-cache load
        self.flops_per_device, self.compile_seconds, self.trace_seconds = None, None, None
        self.state, self.batches, self._compiled_step = None, None, None

    # ----------------------------------------------------------------- state and shardings
    def mesh_context(self):
        """Mesh + rules context under which model code is traced (logical constraints resolve)."""
        return mesh_context(self.mesh, self.rules)

    def _init_variables(self, rng):
        n = sh.batch_axes_size(self.mesh, self.rules)
        dummy = {k: jnp.zeros(v.shape, v.dtype)
                 for k, v in self.objective.example_batch(self.model, n).items()}
        return self.model.init({"params": rng, "dropout": rng}, *self.objective.init_inputs(dummy), train=False)

    def setup_state(self):
        """Abstract state + shardings, and a jitted init that creates the params already sharded."""
        rng = jax.random.key(self.seed, impl=self.prng_impl)
        with self.mesh_context():
            boxed = jax.eval_shape(self._init_variables, rng)["params"]
        param_sh = sh.logical_shardings(boxed, self.mesh, self.rules)
        abstract_params = strip_boxes(boxed)
        self.tx = with_objective_freezing(self._base_tx, self.objective, abstract_params, self.run_info)
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        rep = sh.replicated(self.mesh)
        opt_sh = optax_shardings(self.tx, abstract_opt, param_sh, rep)
        with self.mesh_context():   # the objective's own state (e.g. a teacher's weights), with its shardings
            abstract_extra, extra_sh = self.objective.abstract_state(self.model, self.run_info, abstract_params,
                                                                     param_sh)
        self.state_sharding = TrainState(step=rep, params=param_sh, opt_state=opt_sh, extra=extra_sh)

        def init_fn(rng):
            params = strip_boxes(self._init_variables(rng)["params"])
            return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=self.tx.init(params), extra={})

        with self.mesh_context():
            self.abstract_state = jax.eval_shape(init_fn, rng).replace(extra=abstract_extra)
        self._init_jit = jax.jit(init_fn, out_shardings=self.state_sharding.replace(extra={}))
        self._init_rng = rng
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state, self.state_sharding)
        self.batches = BatchRunner(self.mesh, self.rules, self.config.input, self.eval_batch_size,
                                   self.abstract_state.params)
        self.step_fn = StepFn(self.model, self.objective, self.tx, self.lr_fn, self.run_info, self.num_micro,
                              self.seed, self.prng_impl)
        return self.abstract_state

    def init_state(self) -> TrainState:
        with self.mesh_context():
            state = self._init_jit(self._init_rng)
        extra = self.objective.init_state(self.model, self.run_info, state.params)
        return state.replace(extra=jax.device_put(extra, self.state_sharding.extra))

    def load_init_params(self, params):
        """``params`` with the pretrained groups ``config.init`` names (``vitjax.training.init_weights``),
        placed on the mesh as the train state's params."""
        merged = init_params(self.config.init, self.model, jax.device_get(params))
        return jax.device_put(merged, self.state_sharding.params)

    def loss_and_grads(self, params, batch, rng, extra=None, step=None):
        """(loss, metrics, aux, grads) of one (micro-batched) step; trace under ``mesh_context()``."""
        return self.step_fn.loss_and_grads(params, batch, rng, extra, step)

    # ------------------------------------------------------------------------- steps
    def compiled_train_step(self, batch):
        """The AOT-compiled step for global batches shaped like ``batch`` (compiled once)."""
        if self._compiled_step is None:
            try:   # data that do not fit the model: one config error, not a shape error from the compile
                self.objective.check_batch(self.model, batch)
            except ValueError as e:
                raise config_lib.ConfigError(str(e)) from e
            bs = self.batches.batch_sharding(batch)
            jitted = jax.jit(self.step_fn, in_shardings=(self.state_sharding, bs),
                             out_shardings=(self.state_sharding, sh.replicated(self.mesh)),
                             donate_argnums=(0,))
            with self.mesh_context():
                t0 = time.time()
                traced = jitted.trace(self.abstract_state, self.batches.abstract_batch(batch))
                lowered = traced.lower()
                t1 = time.time()
                self._compiled_step = lowered.compile()
                self.trace_seconds, self.compile_seconds = t1 - t0, time.time() - t1
            # XLA reports the per-device program's FLOPs under SPMD partitioning (loops: scaled by the jaxpr).
            self.flops_per_device = compiled_flops(self._compiled_step, traced.jaxpr)
        return self._compiled_step

    def dry_run(self) -> dict[str, Any]:
        """Compiles the train step for the configured model, batch and mesh without reading data or
        allocating parameters, and reports per-device memory and the collectives per step."""
        self.setup_state()
        return dry_run_lib.dry_run_report(self)

    # ---------------------------------------------------------------------- evaluation
    def map_batches(self, name: str, fn, params, source, ops=None, batch_size: int | None = None,
                    max_examples: int | None = None) -> dict[str, np.ndarray]:
        """Per-example outputs of ``fn(params, batch)`` over a whole split (``BatchRunner.map_batches``)."""
        return self.batches.map_batches(name, fn, params, source, ops, batch_size, max_examples)

    def evaluate(self, params) -> dict[str, float]:
        """Metrics over the whole eval split, as ``{"eval/<name>": value}`` (the objective's
        per-batch ``eval_metrics``), then the evaluators' (kNN, linear probe, zero-shot...)."""
        if self.eval_source is None:
            return {}
        result = self.batches.metric_means(lambda p, b: self.objective.eval_metrics(self.model, p, b), params,
                                           self.eval_source)
        result.update(run_evaluators(self.evaluators, self.eval_context, params))
        return result

    def eval_losses(self, params) -> np.ndarray | None:
        """Per-example eval losses [N] of ``params`` (for standard errors), or None."""
        if self.eval_source is None or jax.process_count() != 1:
            return None
        with self.mesh_context():    # None when the objective defines no per-example loss
            defined = jax.eval_shape(lambda p, b: self.objective.eval_losses(self.model, p, b),
                                     self.abstract_state.params, self.objective.example_batch(self.model, 1))
        if defined is None:
            return None
        out = self.map_batches("eval_losses", lambda p, b: {"loss": self.objective.eval_losses(self.model, p, b)},
                               params, self.eval_source)
        return np.asarray(out.get("loss", np.zeros(0)), np.float64)

    # ------------------------------------------------------------------------ the loop
    def train(self, eval_loss_per_example: bool = False) -> RunSummary:
        """Trains to ``total_steps`` (resuming from the workdir's latest checkpoint) and returns the
        run's summary; ``eval_loss_per_example`` adds the final params' per-example eval losses.
        One run per workdir: ``<workdir>/run.lock`` is held meanwhile (``vitjax.training.workdir_lock``)."""
        check_start(self.config, self.batch_size, len(self.train_source), self.workdir)
        check_export_targets(self.config, self.model)    # config.export.formats: every blocker, before training
        lock = lock_workdir(self.workdir)
        try:
            return self._train(eval_loss_per_example)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, eval_loss_per_example: bool) -> RunSummary:
        cfg, tc = self.config, self.config.train
        is_main = jax.process_index() == 0
        os.makedirs(self.workdir, exist_ok=True)
        self.setup_state()
        ckpt = Checkpointer(self.workdir, keep=int(config_defaults.get(tc, "train", "keep_checkpoints")))
        data_it = train_iterator(self.train_source, cfg.input.train_ops, self.batch_size, seed=self.seed,
                                 process_index=jax.process_index(), process_count=jax.process_count(),
                                 num_threads=config_defaults.get(cfg.input, "input", "num_threads"),
                                 num_workers=config_defaults.get(cfg.input, "input", "num_workers"),
                                 batch_ops=batch_ops_for_model(cfg.input.get("batch_ops"),
                                                               cfg.model.get("num_classes")),
                                 max_bad_fraction=config_defaults.get(cfg.input, "input", "max_bad_fraction"),
                                 in_memory=config_defaults.get(cfg.input, "input", "in_memory"))
        # Refuses a checkpoint of another model before touching anything; sets damaged steps aside.
        resumed = ckpt.resume(self.abstract_state, data_it)
        latest = None if resumed is None else resumed[0]
        if resumed is not None:
            state = resumed[1]
            log.info("resumed from %s at step %d", ckpt.directory, latest)
        else:
            state = self.init_state()
            if cfg.get("init") and cfg.init.get("path"):
                state = state.replace(params=self.load_init_params(state.params))
        if is_main:   # config.json (changes on resume logged, old file kept), class_names.json
            record_run(self.workdir, cfg, latest, self.train_source, getattr(self.model, "num_classes", None))
        start = int(jax.device_get(state.step))
        writer = MetricWriter.from_config(self.workdir, cfg)
        n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.abstract_state.params))
        if is_main:
            print(f"vitjax: {n_params / 1e6:.2f}M params, mesh {dict(self.mesh.shape)}, "
                  f"global batch {self.batch_size}, {self.total_steps} steps "
                  f"({self.steps_per_epoch} per epoch), workdir {self.workdir}", file=sys.stderr)

        log_every = int(config_defaults.get(tc, "train", "log_every_steps"))
        eval_every = int(config_defaults.get(tc, "train", "eval_every_steps")) or self.total_steps
        ckpt_every = int(config_defaults.get(tc, "train", "checkpoint_every_steps")) or self.total_steps
        window = MetricWindow(self.batch_size, self.steps_per_epoch, device_peak_flops())
        bar = None                # opened after the first step, so its ETA leaves out the compile
        final_eval: dict[str, float] = {}
        self.preempted_at, self.stop_signal = None, None
        preemption = Preemption()
        done = start
        feed = DeviceFeed(data_it, lambda b: sh.host_local_to_global(b, self.mesh, self.rules))

        def on_log(step_no):
            record = window.record(step_no, self.flops_per_device)
            writer.write(step_no, record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['train/loss']:.4f}",
                                img_s=f"{record.get('train/img_per_sec', 0):.0f}", refresh=False)

        fetcher = MetricFetcher(window, lambda: (ckpt.wait(), ckpt.latest_step(), ckpt.directory)[1:], on_log)
        try:
            for step in range(start, self.total_steps):
                batch = feed.next()
                state, metrics = self.compiled_train_step(batch)(state, batch)   # returns before the step ends
                done = step + 1
                last = done == self.total_steps
                stopping = preemption.requested(done)
                log_now = done % log_every == 0 or last or stopping
                save_now = done % ckpt_every == 0 or last or stopping
                eval_now = (done % eval_every == 0 or last) and not stopping
                if not (last or stopping):
                    feed.prefetch()                     # the next batch goes up while this step runs
                fetcher.push(done, metrics, log_now)    # the previous step's metrics
                if bar is None:                         # compile + first step: out of the timing and ETA
                    fetcher.drain()
                    if is_main:
                        flops = (f"; {self.flops_per_device / 1e9:.2f} GFLOP per device per step (XLA)"
                                 if self.flops_per_device else "")
                        print(f"vitjax: step traced in {self.trace_seconds:.1f}s, compiled in {self.compile_seconds:.1f}s"
                              f"{flops}", file=sys.stderr)
                    bar = progress_bar(self.total_steps, done, is_main)
                    window.start_timing()
                else:
                    bar.update(1)
                if save_now or eval_now:                # a NaN step is never saved: check it first
                    fetcher.drain()
                if eval_now:
                    final_eval = self.evaluate(self.objective.eval_params(state.params, state.extra))
                    if final_eval:
                        writer.write(done, final_eval)
                        if is_main:
                            bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in final_eval.items()),
                                      file=sys.stderr)
                    window.start_timing()
                if save_now:
                    ckpt.save(done, state, feed.checkpoint_iterator(), meta={"model": cfg.model.to_dict()})
                if stopping:
                    self.preempted_at, self.stop_signal = done, preemption.received or "SIGTERM"
                    if is_main:
                        bar.write(f"vitjax: {preemption.describe()}; saved the step-{done} checkpoint and stopped. "
                                  f"Rerun the same command to resume.", file=sys.stderr)
                    break
            fetcher.drain()
        except NonFiniteError as err:   # the summary of the run up to the last finite step (a sweep records it)
            self.state = state
            err.summary = self._summary(state, {}, done, False, status="diverged")   # no final eval
            raise
        finally:
            preemption.restore()
            if bar is not None:
                bar.close()
            writer.close()
            ckpt.close()
            data_it.close()      # stops grain's prefetch threads and worker processes
        self.state = state
        if self.preempted_at is None and jax.process_index() == 0:     # config.export.formats
            write_export_targets(self.workdir, cfg, self.model, self.objective.eval_params(state.params, state.extra))
        return self._summary(state, final_eval, done, eval_loss_per_example)

    def _summary(self, state, final_eval, done: int, eval_loss_per_example: bool,
                 status: str | None = None) -> RunSummary:
        if self._compiled_step is None:       # complete before this process started: measure FLOPs
            self.compiled_train_step(self.batches.abstract_batch(
                self.objective.example_batch(self.model, self.batch_size)))
        status = status or ("preempted" if self.preempted_at else "finished")
        losses, t0 = None, time.time()
        if eval_loss_per_example and status == "finished":
            losses = self.eval_losses(self.objective.eval_params(state.params, state.extra))
        return RunSummary(
            final_metrics=dict(final_eval), status=status,
            step=int(done), total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
            batch_size=self.batch_size, train_examples=len(self.train_source),
            params=sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.abstract_state.params)),
            devices=int(self.mesh.devices.size), device_kind=str(self.mesh.devices.flat[0].device_kind),
            flops_per_device=self.flops_per_device, compile_seconds=self.compile_seconds, eval_losses=losses,
            eval_losses_seconds=time.time() - t0 if losses is not None else None)


def optax_shardings(tx, abstract_opt, param_shardings, replicated):
    """Shardings of the optimizer state: per-parameter moments follow their parameter's sharding,
    everything else (counts, scalars) is replicated."""
    return optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_shardings,
                                 transform_non_params=lambda _: replicated)
