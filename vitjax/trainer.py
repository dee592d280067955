"""The one training loop: any model, any objective, any mesh.

    config -> data (grain) -> model (Flax) -> objective (loss, metrics) -> train step (jit, sharded)
           -> checkpoint (orbax) -> evaluation -> export

The step is ``jax.jit`` with explicit in/out ``NamedSharding``s derived from the logical-axis rules
(``vitjax.sharding``), and donates the old state. Parameters are created already sharded by jitting
the init with ``out_shardings``. A rerun with the same workdir resumes from the latest checkpoint,
including the data iterator, and reproduces the uninterrupted run's losses step for step.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn

from vitjax import config as config_lib
from vitjax import sharding as sh
from vitjax.checkpoint import Checkpointer, is_workdir
from vitjax.data import eval_batches, get_source, train_iterator
from vitjax.data.sources import get_eval_source
from vitjax.flops import compiled_flops, device_peak_flops
from vitjax.metrics import MetricWriter
from vitjax.objectives import create_objective
from vitjax.optim import freeze_until, make_optimizer, scale_per_param
from vitjax.registry import create_model

log = logging.getLogger("vitjax")


class NonFiniteError(FloatingPointError):
    """Loss or gradient norm became NaN/Inf; the run stops without saving the bad state."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    extra: Any  # objective-owned state (e.g. an EMA teacher); {} for plain classification


def build_model(config: ml_collections.ConfigDict):
    kwargs = dict(config.model)
    name = kwargs.pop("name", "vit")
    return create_model(name, **kwargs)


class Trainer:
    """Builds everything a run needs from a config; ``train()`` runs it, ``evaluate()`` scores it."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None, load_data: bool = True):
        config_lib.validate(config)
        self.config = config
        self.workdir = os.path.abspath(workdir)
        try:
            self.mesh = sh.make_mesh(config.get("mesh", {"data": -1}), devices)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from e
        self.rules = sh.rules_from_config(config.get("sharding_rules"))
        try:   # a model or objective option out of range is a config mistake, reported as one
            self.model = build_model(config)
            self.objective = create_objective(config.objective)
            self.objective.check_model(self.model)
        except ValueError as e:
            raise config_lib.ConfigError(str(e)) from e
        inp = config.input
        self.batch_size = int(inp.batch_size)
        split = sh.batch_axes_size(self.mesh, self.rules)
        if self.batch_size % split:
            raise config_lib.ConfigError(f"input.batch_size={self.batch_size} is not divisible by the {split} ways "
                             f"the mesh {dict(self.mesh.shape)} splits the batch")
        micro = int(config.train.get("micro_batch_size", 0) or 0)
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
        else:   # a dry run: shapes come from the model, the schedule length does not matter
            self.train_source, self.eval_source = range(self.batch_size), None
        tc = config.train
        self.steps_per_epoch = max(1, len(self.train_source) // self.batch_size)
        self.total_steps = int(tc.total_steps) if tc.get("total_steps", -1) > 0 \
            else int(math.ceil(tc.num_epochs * self.steps_per_epoch))
        if not load_data:   # the schedule length is unknown without the dataset and irrelevant here
            self.total_steps = max(self.total_steps, int(config.optim.get("warmup_steps", 0)) + 1)
        self.tx, self.lr_fn = make_optimizer(config.optim, self.total_steps)
        self._base_tx = self.tx
        self.seed = int(tc.get("seed", 0))
        # "rbg" draws dropout/drop-path masks much faster than threefry on CPU and TPU (digits demo:
        # 162 vs 319 ms per step), at no cost to quality; "threefry2x32" is jax's default.
        self.prng_impl = tc.get("prng_impl", "rbg")
        self._compiled = {}

    # ----------------------------------------------------------------- state and shardings
    @contextlib.contextmanager
    def _ctx(self):
        """Mesh + rules context under which model code is traced (logical constraints resolve)."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def _init_variables(self, rng):
        n = sh.batch_axes_size(self.mesh, self.rules)
        dummy = {k: jnp.zeros(v.shape, v.dtype)
                 for k, v in self.objective.example_batch(self.model, n).items()}
        return self.model.init({"params": rng, "dropout": rng}, *self.objective.init_inputs(dummy), train=False)

    def setup_state(self):
        """Abstract state + shardings, and a jitted init that creates the params already sharded."""
        rng = jax.random.key(self.seed, impl=self.prng_impl)
        with self._ctx():
            boxed = jax.eval_shape(self._init_variables, rng)["params"]
        param_sh = sh.logical_shardings(boxed, self.mesh, self.rules)
        abstract_params = sh.strip_boxes(boxed)
        if self.objective.freezes_params:
            # Frozen parameters (LiT's image tower) get no update at all, weight decay included: their
            # final updates are zeroed. (Their optimizer moments still exist and stay zero;
            # optax.multi_transform would drop them but its masked state has no per-parameter
            # sharding tree for tree_map_params to follow.)
            keep = jax.tree.map(lambda f: 0.0 if f else 1.0, self.objective.frozen(abstract_params))
            self.tx = optax.chain(self._base_tx, scale_per_param(keep))
        else:
            self.tx = self._base_tx
        until = self.objective.frozen_until(abstract_params, self.steps_per_epoch)
        if until is not None:
            # Parameters held fixed for their first steps (DINO's last layer in the first epoch).
            self.tx = freeze_until(self.tx, until)
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        rep = sh.replicated(self.mesh)
        opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, abstract_opt, param_sh,
                                       transform_non_params=lambda _: rep)
        extra_sh, abstract_extra = {}, {}
        if self.objective.stateful:
            # The objective's own state (e.g. a teacher's weights), with its shardings.
            with self._ctx():
                abstract_extra, extra_sh = self.objective.abstract_state(self, abstract_params, param_sh)
        self.state_sharding = TrainState(step=rep, params=param_sh, opt_state=opt_sh, extra=extra_sh)

        def init_fn(rng):
            params = nn.meta.unbox(self._init_variables(rng)["params"])
            return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=self.tx.init(params), extra={})

        with self._ctx():
            self.abstract_state = jax.eval_shape(init_fn, rng).replace(extra=abstract_extra)
        self._init_jit = jax.jit(init_fn, out_shardings=self.state_sharding.replace(extra={}))
        self._init_rng = rng
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state, self.state_sharding)
        return self.abstract_state

    def init_state(self) -> TrainState:
        with self._ctx():
            state = self._init_jit(self._init_rng)
        if self.objective.stateful:
            extra = self.objective.init_state(self, state.params)
            state = state.replace(extra=jax.device_put(extra, self.state_sharding.extra))
        return state

    def _load_init_params(self, params):
        """Overwrites freshly initialised params with pretrained ones (``config.init.path``): a
        PyTorch ViT (timm/HF safetensors or .bin) or another vitjax workdir. With
        ``config.init.drop_head`` the new head keeps its initialisation (fine-tuning on new classes).
        ``config.init.encoder_only`` moves only the encoder between an MAE and a ViT classifier (fine-tuning
        an MAE-pretrained encoder, or starting an MAE from a classifier's encoder)."""
        path, drop_head = self.config.init.path, bool(self.config.init.get("drop_head", False))
        if self.config.init.get("target"):
            return self._load_init_subtree(params, path, self.config.init.target)
        encoder_only = bool(self.config.init.get("encoder_only", False))
        target_is_mae = "decoder_pred" in params
        if is_workdir(path):
            from vitjax.checkpoint import load_workdir
            raw = dict(jax.device_get(load_workdir(path)[2]))
            loaded = _encoder_init(raw, params, encoder_only, path)
            if target_is_mae and "decoder_pred" not in raw:
                log.info("initialising the MAE encoder from %s", path)
                return self._put_subtree(params, "encoder", loaded["encoder"])
            if drop_head:
                loaded = {k: v for k, v in loaded.items() if not k.startswith("head")}
            pos = loaded.get("pos_embedding")
            if pos is not None and hasattr(self.model, "grid") and pos.shape[1] != \
                    self.model.num_prefix_tokens + self.model.grid[0] * self.model.grid[1]:
                # Fine-tuning at another resolution: interpolate the learned table to the new grid.
                from vitjax.models.posemb import resize_posemb
                old = int(round((pos.shape[1] - self.model.num_prefix_tokens) ** 0.5))
                loaded["pos_embedding"] = resize_posemb(pos, self.model.num_prefix_tokens, (old, old),
                                                        self.model.grid)
        elif target_is_mae:
            from vitjax.export.vit import import_pretrained
            if not encoder_only:
                raise ValueError(f"config.init.path={path!r} is a PyTorch ViT, which has no MAE decoder; set "
                                 f"config.init.encoder_only=True to start the MAE encoder from it")
            from vitjax.export.mae import encoder_model
            return self._put_subtree(params, "encoder", import_pretrained(path, encoder_model(self.model),
                                                                          drop_head=True))
        else:
            loaded = _import_torch_weights(path, self.model, drop_head)
        from vitjax.checkpoint import first_mismatch
        merged = dict(jax.device_get(params))
        current = {k: v for k, v in merged.items() if k in loaded}
        problem = first_mismatch(current, loaded)
        if problem:
            raise ValueError(f"config.init.path={path!r} does not fit the model: {problem}")
        merged.update(loaded)
        log.info("initialised %d parameter groups from %s", len(loaded), path)
        return jax.device_put(merged, self.state_sharding.params)

    def _load_init_subtree(self, params, path: str, target: str):
        """``config.init.target="img"``: a pretrained ViT (PyTorch weights, or a vitjax ViT/MAE workdir,
        without its head or decoder) becomes the CLIP image tower ``params["img"]`` (LiT: lock it with
        ``objective.lock_image``). Build the CLIP with ``vision_pre_norm=False`` for a plain ViT."""
        from vitjax.checkpoint import first_mismatch
        if target != "img" or not hasattr(self.model, "image_tower_module"):
            raise ValueError(f"config.init.target={target!r}: only 'img' (a CLIP's image tower) is supported")
        tower = self.model.image_tower_module()
        current = dict(jax.device_get(params["img"]))
        if is_workdir(path):
            from vitjax.checkpoint import load_workdir
            raw = dict(jax.device_get(load_workdir(path)[2]))
            if "decoder_pred" in raw:          # an MAE: its encoder is a ViT
                raw = dict(raw["encoder"])
            loaded = {k: v for k, v in raw.items() if k not in ("head", "head_dist")}
        else:
            from vitjax.export.vit import import_pretrained
            loaded = import_pretrained(path, tower, drop_head=True)
        problem = first_mismatch({k: v for k, v in current.items() if k in loaded}, loaded)
        if problem:
            raise ValueError(f"config.init.path={path!r} does not fit the image tower: {problem}")
        missing = sorted(set(current) - set(loaded))
        if missing:
            raise ValueError(f"config.init.path={path!r} lacks image-tower parameters {missing}; build the CLIP "
                             f"with model.vision_pre_norm=False (and the ViT's pooling) to match a plain ViT")
        log.info("initialising the image tower from %s", path)
        return self._put_subtree(params, "img", loaded)

    def _put_subtree(self, params, key: str, loaded: dict):
        """``params`` with the groups of ``loaded`` replacing those under ``params[key]``, sharded."""
        merged = dict(jax.device_get(params))
        merged[key] = dict(merged[key], **loaded)
        return jax.device_put(merged, self.state_sharding.params)

    def batch_sharding(self, batch: dict) -> dict:
        return {k: sh.activation_sharding(self.mesh, self.rules, ("act_batch",) + (None,) * (np.ndim(v) - 1))
                for k, v in batch.items()}

    # ------------------------------------------------------------------------- steps
    def _loss_and_grads(self, params, batch, rng, extra=None, step=None):
        """(loss, metrics, aux, grads), averaged over ``train.micro_batch_size`` micro-batches when set.

        Accumulation is a ``lax.scan`` inside the jitted step, so the global batch (and the update)
        stays the same while activation memory shrinks by the number of micro-batches. ``extra`` is
        the objective's own state (stateful objectives: a teacher, an EMA, a centre); ``aux`` is what
        such an objective returns for its state update (averaged like the metrics); ``step`` (the
        optimizer step, a traced scalar) drives such an objective's own schedules.
        """
        if self.objective.stateful:
            def loss_fn(p, b, r):
                loss, metrics, aux = self.objective.stateful_loss(self.model, p, extra, b, r, train=True,
                                                                    step=step)
                return loss, (metrics, aux)
        else:
            def loss_fn(p, b, r):
                loss, metrics = self.objective.loss(self.model, p, b, r, train=True)
                return loss, (metrics, {})

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        n = self.num_micro
        if n == 1:
            (loss, (metrics, aux)), grads = grad_fn(params, batch, rng)
            return loss, metrics, aux, grads

        def split(x):
            # Micro-batch i takes rows i, i+n, i+2n...: every device keeps an equal slice of each.
            x = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)
            return nn.with_logical_constraint(x, (None, "act_batch") + (None,) * (x.ndim - 2))

        micro = jax.tree.map(split, batch)

        def body(carry, xs):
            b, i = xs
            (l, (m, a)), g = grad_fn(params, b, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, carry, (l, m, a, g)), None

        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: grad_fn(params, first, rng))
        (l_s, (m_s, a_s)), g_s = shapes
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), (l_s, m_s, a_s, g_s))
        (loss, metrics, aux, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(n)))
        scale = lambda t: jax.tree.map(lambda x: x / n, t)  # noqa: E731
        grads = jax.tree.map(lambda g, p: (g / n).astype(p.dtype), grads, params)
        return loss / n, scale(metrics), scale(aux), grads

    def _train_step(self, state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.key(self.seed + 1, impl=self.prng_impl), state.step)
        loss, metrics, aux, grads = self._loss_and_grads(state.params, batch, rng, state.extra, state.step)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra = state.extra
        if self.objective.stateful:
            extra = self.objective.update_state(state.extra, params, aux, state.step)
        out = {f"train/{k}": v for k, v in metrics.items()}
        out.update({"train/grad_norm": grad_norm, "train/lr": self.lr_fn(state.step),
                    "train/finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)})
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra), out

    def compiled_train_step(self, batch):
        """The AOT-compiled step for global batches shaped like ``batch`` (compiled once)."""
        if "train" not in self._compiled:
            bs = self.batch_sharding(batch)
            jitted = jax.jit(self._train_step, in_shardings=(self.state_sharding, bs),
                             out_shardings=(self.state_sharding, sh.replicated(self.mesh)),
                             donate_argnums=(0,))
            abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bs[k]) for k, v in batch.items()}
            with self._ctx():
                t0 = time.time()
                self._compiled["train"] = jitted.lower(self.abstract_state, abstract_batch).compile()
                self.compile_seconds = time.time() - t0
            # XLA reports the per-device program's FLOPs under SPMD partitioning.
            self.flops_per_device = compiled_flops(self._compiled["train"])
        return self._compiled["train"]

    def compiled_batch_fn(self, name: str, fn, batch):
        """``fn(params, batch)`` AOT-compiled for global batches shaped like ``batch``: params sharded
        as the train state, batch along ``act_batch``, outputs replicated. Cached by name and shapes."""
        key = (name,) + tuple(sorted((k, v.shape) for k, v in batch.items()))
        if key not in self._compiled:
            bs = self.batch_sharding(batch)
            jitted = jax.jit(fn, in_shardings=(self.state_sharding.params, bs),
                             out_shardings=sh.replicated(self.mesh))
            with self._ctx():
                self._compiled[key] = jitted.lower(
                    self.abstract_state.params,
                    {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bs[k]) for k, v in batch.items()}).compile()
        return self._compiled[key]

    def compiled_eval_step(self, batch):
        return self.compiled_batch_fn(
            "eval", lambda params, b: self.objective.eval_metrics(self.model, params, b), batch)

    def _eval_batches(self, source, ops, batch_size: int):
        """One ordered, padded pass over ``source`` (this process's rows of each global batch), as
        global arrays."""
        inp = self.config.input
        for local in eval_batches(source, ops, batch_size, process_index=jax.process_index(),
                                  process_count=jax.process_count(), num_threads=inp.get("num_threads", 2),
                                  max_bad_fraction=inp.get("max_bad_fraction", 0.01)):
            yield sh.host_local_to_global(local, self.mesh, self.rules)

    # ----------------------------------------------------------------------- dry run
    def dry_run(self) -> dict[str, Any]:
        """Compiles the train step for the configured model, batch and mesh without reading data or
        allocating parameters, and reports per-device memory and the collectives per step."""
        self.setup_state()
        example = self.objective.example_batch(self.model, self.batch_size)
        bs = self.batch_sharding(example)
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=bs[k]) for k, v in example.items()}
        compiled = self.compiled_train_step(batch)
        mem = compiled.memory_analysis()

        def per_device(tree):
            return sum(int(np.prod(a.sharding.shard_shape(a.shape))) * np.dtype(a.dtype).itemsize
                       for a in jax.tree.leaves(tree))

        report = {
            "devices": int(self.mesh.size), "mesh": dict(self.mesh.shape),
            "platform": self.mesh.devices.flat[0].platform,
            "params": sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.abstract_state.params)),
            "bytes_params": per_device(self.abstract_state.params),
            "bytes_optimizer": per_device(self.abstract_state.opt_state),
            "bytes_batch": per_device(batch),
            "bytes_temporaries": int(getattr(mem, "temp_size_in_bytes", 0)) if mem else None,
            "bytes_generated_code": int(getattr(mem, "generated_code_size_in_bytes", 0)) if mem else None,
            "flops_per_device": self.flops_per_device,
            "collectives": count_collectives(compiled.as_text()),
            "compile_seconds": self.compile_seconds,
        }
        known = [report[k] for k in ("bytes_params", "bytes_optimizer", "bytes_batch", "bytes_temporaries")]
        report["bytes_total"] = sum(x for x in known if x)
        return report

    # ---------------------------------------------------------------------- evaluation
    def map_batches(self, name: str, fn, params, source, ops=None, batch_size: int | None = None,
                    max_examples: int | None = None) -> dict[str, np.ndarray]:
        """Runs ``fn(params, batch) -> {key: [B, ...]}`` (jitted, sharded like the eval step) over one
        ordered pass of ``source`` prepared with ``ops`` (default: the eval ops) and returns the
        per-example outputs as numpy arrays with the padded rows removed, plus the batch's ``label``
        when the source has labels. ``name`` keys the compile cache. The building block of
        representation evaluations (kNN, linear probe, zero-shot): features of a whole split.

        With several processes every process gets the outputs of all examples (in a process-strided
        order, the same on every process)."""
        if max_examples is not None and max_examples < len(source):
            source = _Prefix(source, max_examples)
        def step(p, b):
            r = dict(fn(p, b))
            r["mask"] = b["mask"]
            if "label" in b:
                r.setdefault("label", b["label"])
            return r

        out: dict[str, list] = {}
        ops = self.config.input.eval_ops if ops is None else ops
        for batch in self._eval_batches(source, ops, batch_size or self.eval_batch_size):
            res = jax.device_get(self.compiled_batch_fn(f"map:{name}", step, batch)(params, batch))
            keep = np.asarray(res.pop("mask"), bool)
            for k, v in res.items():
                out.setdefault(k, []).append(np.asarray(v)[keep])
        return {k: np.concatenate(v) for k, v in out.items()}

    def evaluate(self, params) -> dict[str, float]:
        """Metrics over the whole eval split, as ``{"eval/<name>": value}``, plus the objective's
        whole-split evaluations (``Objective.extra_evals``: kNN, linear probe, zero-shot...)."""
        if self.eval_source is None:
            return {}
        result = self._eval_metrics(params)
        extra = self.objective.extra_evals(self, params)
        result.update({f"eval/{k}": float(v) for k, v in extra.items()})
        return result

    def _eval_metrics(self, params) -> dict[str, float]:
        sums: dict[str, list[float]] = {}
        for batch in self._eval_batches(self.eval_source, self.config.input.eval_ops, self.eval_batch_size):
            out = jax.device_get(self.compiled_eval_step(batch)(params, batch))
            for k, (s, c) in out.items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0] += float(s)
                acc[1] += float(c)
        return {f"eval/{k}": s / max(c, 1.0) for k, (s, c) in sums.items()}

    # ------------------------------------------------------------------------ the loop
    def train(self) -> dict[str, float]:
        cfg, tc = self.config, self.config.train
        is_main = jax.process_index() == 0
        os.makedirs(self.workdir, exist_ok=True)
        self.setup_state()
        ckpt = Checkpointer(self.workdir, keep=int(tc.get("keep_checkpoints", 3)))
        data_it = train_iterator(self.train_source, cfg.input.train_ops, self.batch_size, seed=self.seed,
                                 process_index=jax.process_index(), process_count=jax.process_count(),
                                 num_threads=cfg.input.get("num_threads", 2),
                                 num_workers=cfg.input.get("num_workers", 0),
                                 batch_ops=cfg.input.get("batch_ops"),
                                 max_bad_fraction=cfg.input.get("max_bad_fraction", 0.01))
        latest = ckpt.latest_step()
        if latest is not None:
            # Refuse, before touching anything, a checkpoint of another model.
            ckpt.check_params(latest, self.abstract_state.params)
            state = ckpt.restore(latest, self.abstract_state, data_it)
            log.info("resumed from %s at step %d", ckpt.directory, latest)
        else:
            state = self.init_state()
            if cfg.get("init") and cfg.init.get("path"):
                state = state.replace(params=self._load_init_params(state.params))
        if is_main:
            with open(os.path.join(self.workdir, "config.json"), "w") as fh:
                fh.write(config_lib.to_json(cfg))
        start = int(jax.device_get(state.step))
        writer = MetricWriter(self.workdir, tensorboard=tc.get("tensorboard", True))
        n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(self.abstract_state.params))
        if is_main:
            print(f"vitjax: {n_params / 1e6:.2f}M params, mesh {dict(self.mesh.shape)}, "
                  f"global batch {self.batch_size}, {self.total_steps} steps "
                  f"({self.steps_per_epoch} per epoch), workdir {self.workdir}", file=sys.stderr)

        log_every = int(tc.get("log_every_steps", 50))
        eval_every = int(tc.get("eval_every_steps", 0)) or self.total_steps
        ckpt_every = int(tc.get("checkpoint_every_steps", 0)) or self.total_steps
        peak = device_peak_flops()
        bar = _progress(self.total_steps, start, is_main)
        window: list[dict] = []
        pending = None            # (step, device metrics) of the step in flight
        t_window, steps_window = None, 0
        final_eval: dict[str, float] = {}
        self.preempted_at = None
        preemption = _Preemption()

        def consume(pending):
            step_no, m = pending
            m = jax.device_get(m)
            if not bool(m.pop("train/finite")):
                ckpt.wait()
                raise NonFiniteError(
                    f"loss or gradient norm is NaN/Inf at step {step_no} (loss={float(m['train/loss'])}, "
                    f"grad_norm={float(m['train/grad_norm'])}). Stopped without saving it; the last good "
                    f"checkpoint is step {ckpt.latest_step()} in {ckpt.directory}. Lower optim.lr, raise "
                    f"optim.warmup_steps or set optim.clip_norm, then rerun to resume from there.")
            window.append(m)

        try:
            for step in range(start, self.total_steps):
                local = next(data_it)
                batch = sh.host_local_to_global(local, self.mesh, self.rules)
                step_fn = self.compiled_train_step(batch)
                state, metrics = step_fn(state, batch)
                if pending is not None:
                    consume(pending)
                pending = (step + 1, metrics)
                done = step + 1
                if t_window is None:                   # exclude compile + first step from speed
                    jax.block_until_ready(metrics)
                    t_window, steps_window = time.time(), 0
                    if is_main and self.flops_per_device:
                        print(f"vitjax: step compiled in {self.compile_seconds:.1f}s; "
                              f"{self.flops_per_device / 1e9:.2f} GFLOP per device per step (XLA)",
                              file=sys.stderr)
                else:
                    steps_window += 1
                bar.update(1)
                last = done == self.total_steps
                stopping = preemption.requested()
                log_now = done % log_every == 0 or last or stopping
                save_now = done % ckpt_every == 0 or last or stopping
                if log_now or save_now:
                    consume(pending)
                    pending = None
                if log_now:
                    record = {k: float(np.mean([w[k] for w in window])) for k in window[-1]}
                    record["train/lr"] = float(window[-1]["train/lr"])
                    record["train/epoch"] = done / self.steps_per_epoch
                    if steps_window > 0:
                        dt = (time.time() - t_window) / steps_window
                        record["train/step_time"] = dt
                        record["train/img_per_sec"] = self.batch_size / dt
                        if self.flops_per_device:
                            record["train/tflops_per_device"] = self.flops_per_device / dt / 1e12
                            if peak:
                                record["train/mfu"] = self.flops_per_device / dt / peak
                    writer.write(done, record)
                    bar.set_postfix(loss=f"{record['train/loss']:.4f}",
                                    img_s=f"{record.get('train/img_per_sec', 0):.0f}", refresh=False)
                    window.clear()
                    t_window, steps_window = time.time(), 0
                if (done % eval_every == 0 or last) and not stopping:
                    final_eval = self.evaluate(self.objective.eval_params(state.params, state.extra))
                    if final_eval:
                        writer.write(done, final_eval)
                        if is_main:
                            bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in final_eval.items()),
                                      file=sys.stderr)
                    t_window, steps_window = time.time(), 0
                if save_now:
                    ckpt.save(done, state, data_it, meta={"model": dict(cfg.model)})
                if stopping:
                    self.preempted_at = done
                    if is_main:
                        bar.write(f"vitjax: SIGTERM received; saved the step-{done} checkpoint and stopped. "
                                  f"Rerun the same command to resume.", file=sys.stderr)
                    break
            if pending is not None:
                consume(pending)
        finally:
            preemption.restore()
            bar.close()
            writer.close()
            ckpt.close()
            data_it.close()      # stops grain's prefetch threads and worker processes
        self.state = state
        return final_eval


COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def count_collectives(hlo_text: str) -> dict[str, int]:
    """How many of each collective the compiled (per-device) program runs per step; async pairs
    (``*-start``/``*-done``) count once."""
    import re
    counts = {}
    for name in COLLECTIVES:
        counts[name] = len(re.findall(rf"\b{name}(?:-start)?\(", hlo_text))
    return counts


def format_dry_run(r: dict[str, Any]) -> str:
    def gib(b):
        if b is None:
            return "     n/a"
        return f"{b / 2**30:8.3f} GiB" if b >= 2**30 else f"{b / 2**20:8.2f} MiB"
    lines = [f"dry run: {r['params'] / 1e6:.1f}M params on {r['devices']} devices, mesh {r['mesh']} "
             f"(compiled in {r['compile_seconds']:.1f}s)",
             "per-device memory:",
             f"  params        {gib(r['bytes_params'])}",
             f"  optimizer     {gib(r['bytes_optimizer'])}",
             f"  batch         {gib(r['bytes_batch'])}",
             f"  activations + temporaries (XLA) {gib(r['bytes_temporaries'])}",
             f"  total         {gib(r['bytes_total'])}"]
    if r.get("platform") == "cpu":
        lines.append("  (compiled for CPU: params/optimizer/batch are exact for the target mesh; the CPU "
                     "compiler's temporaries do not reflect remat or bf16 storage, so treat them as an "
                     "upper bound and rerun the dry run on the target accelerator for exact figures)")
    if r.get("flops_per_device"):
        lines.append(f"FLOPs per device per step (XLA): {r['flops_per_device'] / 1e12:.3f} TFLOP")
    lines.append("collectives per step: " + ", ".join(f"{k} {v}" for k, v in r["collectives"].items()))
    return "\n".join(lines)


def _import_torch_weights(path: str, model, drop_head: bool) -> dict:
    """PyTorch weights (timm / HF files) -> params of ``model``, by model family."""
    from vitjax.models.perceiver import Perceiver
    if isinstance(model, Perceiver):
        from vitjax.export.perceiver import import_pretrained as import_perceiver
        if drop_head:
            raise ValueError("config.init.drop_head is not supported for Perceiver weights yet; import "
                             "a checkpoint with the same number of classes")
        return import_perceiver(path, model)
    from vitjax.models.pvt import PVT
    from vitjax.models.swin import Swin
    if isinstance(model, Swin):
        from vitjax.export.swin import import_pretrained as import_swin
        return import_swin(path, model, drop_head=drop_head)
    if isinstance(model, PVT):
        from vitjax.export.pvt import from_timm
        from vitjax.export.vit import read_state_dict
        return from_timm(read_state_dict(path), model, drop_head=drop_head)
    from vitjax.export.vit import import_pretrained
    return import_pretrained(path, model, drop_head=drop_head)


def _encoder_init(loaded: dict, target: Any, encoder_only: bool, path: str) -> dict:
    """Adapts a workdir's params to the model being initialised when one is an MAE and the other a
    ViT classifier: with ``config.init.encoder_only`` the encoder moves across (the MAE's decoder, or
    the classifier's head and tokens the other model lacks, are left out); without it, a clear
    error naming what is missing and extra."""
    src_mae, dst_mae = "decoder_pred" in loaded, "decoder_pred" in target
    if src_mae == dst_mae:
        return loaded
    extra = sorted(set(loaded) - set(target))
    missing = sorted(set(target) - set(loaded))
    if not encoder_only:
        kind = ("an MAE checkpoint (encoder + decoder)", "a ViT classifier") if src_mae else \
            ("a ViT classifier checkpoint", "an MAE")
        raise ValueError(f"config.init.path={path!r} is {kind[0]} but the model is {kind[1]}: the checkpoint "
                         f"has parameters {extra} that the model lacks, and lacks {missing}. Set "
                         f"config.init.encoder_only=True to load the encoder only.")
    if src_mae:         # MAE -> classifier: the encoder's tree is a ViT's; keep what the classifier has
        enc = loaded["encoder"]
        kept = {k: v for k, v in enc.items() if k in target}
        dropped = sorted(set(enc) - set(kept))
        if dropped:
            log.info("encoder_only: left out %s (the classifier has no such parameters)", dropped)
        return kept
    enc_target = target["encoder"]
    return {"encoder": {k: v for k, v in loaded.items() if k in enc_target}}


class _Prefix:
    """The first ``n`` records of a source (a random-access view)."""

    def __init__(self, source, n: int):
        self.source, self.n = source, int(n)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


class _Preemption:
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
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array(self.flag))))

    def restore(self):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)
