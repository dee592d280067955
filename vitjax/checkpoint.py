"""Checkpoints through orbax: params, optimizer state, objective state and the data iterator.

Layout of ``<workdir>/checkpoints/<step>/``: ``params`` (restorable alone, for evaluation/export),
``train`` (step, optimizer state, objective state), ``data`` (the grain iterator, per process) and
``meta`` (JSON: step and model config). Saves are asynchronous; a step directory appears only once
complete, so a run killed mid-save leaves the previous checkpoint as the latest.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from jax.sharding import SingleDeviceSharding


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint whose parameters do not fit the configured model."""


def _flat_shapes(tree: Any) -> dict[str, tuple]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): tuple(leaf.shape)
            for path, leaf in flat}


def first_mismatch(expected: Any, found: Any) -> str | None:
    """Describes the first parameter whose presence or shape differs, or None when they agree."""
    exp, got = _flat_shapes(expected), _flat_shapes(found)
    for name in sorted(set(exp) | set(got)):
        if name not in got:
            return f"parameter {name!r} (shape {exp[name]}) is missing from the checkpoint"
        if name not in exp:
            return f"the checkpoint has parameter {name!r} (shape {got[name]}) that the model does not"
        if exp[name] != got[name]:
            return f"parameter {name!r} has shape {got[name]} in the checkpoint but {exp[name]} in the model"
    return None


class Checkpointer:
    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        # Handlers named up front so a fresh manager (evaluate, export, load) can read metadata and
        # restore single items without having saved them first.
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"params": ocp.StandardCheckpointHandler(),
                           "train": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()},
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=async_save))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def check_params(self, step: int, abstract_params: Any) -> None:
        """Raises CheckpointMismatchError naming the first parameter that does not fit."""
        meta = self.manager.item_metadata(step)["params"]
        tree = getattr(meta, "tree", meta)
        problem = first_mismatch(abstract_params, tree)
        if problem:
            raise CheckpointMismatchError(
                f"{self.directory} holds a checkpoint (step {step}) of a different model: {problem}. "
                f"Nothing was overwritten. Use a new --workdir, or the config the checkpoint was "
                f"trained with ({os.path.dirname(self.directory)}/config.json).")

    def save(self, step: int, state, data_iter=None, meta: dict | None = None) -> None:
        items = dict(
            params=ocp.args.StandardSave(state.params),
            train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state,
                                         "extra": state.extra}),
            meta=ocp.args.JsonSave(dict(meta or {}, step=int(step))),
        )
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        self.manager.save(step, args=ocp.args.Composite(**items))

    def restore(self, step: int, abstract_state, data_iter=None):
        """Restores a full TrainState (with the shardings in ``abstract_state``) and the iterator."""
        items = dict(
            params=ocp.args.StandardRestore(abstract_state.params),
            train=ocp.args.StandardRestore({"step": abstract_state.step,
                                            "opt_state": abstract_state.opt_state,
                                            "extra": abstract_state.extra}),
        )
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        r = self.manager.restore(step, args=ocp.args.Composite(**items))
        return abstract_state.replace(params=r["params"], step=r["train"]["step"],
                                      opt_state=r["train"]["opt_state"], extra=r["train"]["extra"])

    def restore_params(self, step: int, abstract_params):
        r = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)))
        return r["params"]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def is_workdir(path: str) -> bool:
    """True for the --workdir of a vitjax run (its config.json and checkpoints/ folder)."""
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))


def load_workdir(workdir: str, step: int | None = None):
    """``(config, model, params)`` from ``workdir``: its config.json and its latest (or given)
    checkpoint, with params as host-local arrays on the first device."""
    from vitjax import config as config_lib
    from vitjax.trainer import build_model

    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{workdir} has no config.json; is it a vitjax workdir (the --workdir "
                                f"of a python -m vitjax.train run)?")
    with open(cfg_path) as fh:
        config = config_lib.from_json(fh.read())
    model = build_model(config)
    ckpt = Checkpointer(workdir, async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir}/checkpoints holds no finished checkpoint yet")
    abstract = abstract_params(model, config)
    ckpt.check_params(step, abstract)
    dev = SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), abstract)
    params = ckpt.restore_params(step, target)
    ckpt.close()
    return config, model, params


def abstract_params(model, config) -> Any:
    """Shapes/dtypes of the model's parameters, without allocating them (inputs shaped as the
    config's objective describes its batches)."""
    from vitjax.objectives import create_objective
    from vitjax.sharding import strip_boxes

    objective = create_objective(config.objective)
    example = objective.example_batch(model, 1)
    variables = jax.eval_shape(lambda rng, b: model.init(rng, *objective.init_inputs(b)),
                               jax.random.key(0), example)
    return strip_boxes(variables["params"])
