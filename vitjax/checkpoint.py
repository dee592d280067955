"""Checkpoints through orbax: params, optimizer state, objective state and the data iterator.

Layout of ``<workdir>/checkpoints/<step>/``: ``params`` (restorable alone, for evaluation/export),
``train`` (step, optimizer state, objective state), ``data`` (the grain iterator, per process) and
``meta`` (JSON: step and model config). Saves are asynchronous; a step directory appears only once
complete, so a run killed mid-save leaves the previous checkpoint as the latest.

Objective state inside ``train`` (``extra``, e.g. DINO's EMA teacher ``extra["teacher"]``) can be read
alone (``Checkpointer.restore_extra``), without the optimizer state beside it:
``load_workdir(workdir, weights="teacher")``.
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

    def extra_metadata(self, step: int) -> dict:
        """The shapes/dtypes of the objective state (``train`` item's ``extra``; {} for stateless
        objectives), without reading any array."""
        meta = self.manager.item_metadata(step)["train"]
        tree = getattr(meta, "tree", meta) or {}
        return dict(tree.get("extra") or {})

    def restore_extra(self, step: int, key: str, target):
        """``extra[key]`` of the ``train`` item alone (e.g. DINO's teacher), restored as ``target``
        (a tree of ``jax.ShapeDtypeStruct`` with shardings).

        The manager's ``StandardCheckpointHandler`` restores whole trees only (orbax 0.12.8 rejects
        ``PLACEHOLDER`` leaves in its targets), which would read the optimizer state too (2x the
        parameters for Adam). A second manager with a ``PyTreeCheckpointHandler`` (the same on-disk
        format) and ``partial_restore=True`` reads only the leaves under ``extra/key``; it only restores
        (never saves, so never deletes). Not ``read_only=True``: orbax logs two warnings for that.
        """
        item = {"extra": {key: target}}
        reader = ocp.CheckpointManager(
            self.directory, item_handlers={"train": ocp.PyTreeCheckpointHandler()},
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=False))
        try:
            r = reader.restore(step, args=ocp.args.Composite(train=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=True)))
        finally:
            reader.close()
        return r["train"]["extra"][key]

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def is_workdir(path: str) -> bool:
    """True for the --workdir of a vitjax run (its config.json and checkpoints/ folder)."""
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))


WEIGHTS = ("params", "teacher")


def weights_for(model, student: bool, workdir: str) -> str:
    """The ``load_workdir`` weights a command line's ``--student`` flag selects: a DINO workdir gives
    its EMA teacher (what the paper evaluates and releases) unless ``student``; any other model has
    only its parameters, and ``--student`` on it is a ValueError naming the workdir's model."""
    from vitjax.models.dino import DINO
    if not isinstance(model, DINO):
        if student:
            raise ValueError(f"--student applies to DINO workdirs (a student and an EMA teacher); {workdir} "
                             f"holds a {type(model).__name__}, which has only its parameters")
        return "params"
    return "params" if student else "teacher"


def workdir_model(workdir: str):
    """``(config, model)`` of a workdir (its config.json), without reading any checkpoint."""
    from vitjax import config as config_lib
    from vitjax.trainer import build_model

    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{workdir} has no config.json; is it a vitjax workdir (the --workdir "
                                f"of a python -m vitjax.train run)?")
    with open(cfg_path) as fh:
        config = config_lib.from_json(fh.read())
    return config, build_model(config)


def load_workdir(workdir: str, step: int | None = None, weights: str = "params"):
    """``(config, model, params)`` from ``workdir``: its config.json and its latest (or given)
    checkpoint, with params as host-local arrays on the first device.

    ``weights``: "params" (the trained parameters; for DINO the student) or "teacher" (DINO's EMA
    teacher, the network the paper evaluates and releases; same tree as the params). A workdir whose
    objective keeps no teacher raises ValueError for "teacher".
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; choose one of {list(WEIGHTS)}")
    config, model = workdir_model(workdir)
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir}/checkpoints holds no finished checkpoint yet")
        abstract = abstract_params(model, config)
        ckpt.check_params(step, abstract)
        dev = SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), abstract)
        if weights == "teacher":
            teacher = ckpt.extra_metadata(step).get("teacher")
            if teacher is None:
                raise ValueError(
                    f"{workdir} (a {type(model).__name__} trained with objective "
                    f"{config.objective.get('name')!r}) holds no EMA teacher: only DINO runs have a "
                    f"teacher. Load its parameters with weights='params'")
            problem = first_mismatch(abstract, teacher)
            if problem:
                raise CheckpointMismatchError(f"the teacher in {ckpt.directory} (step {step}) does not fit "
                                              f"the configured model: {problem}")
            params = ckpt.restore_extra(step, "teacher", target)
        else:
            params = ckpt.restore_params(step, target)
    finally:
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
