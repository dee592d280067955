"""Checkpoints through orbax: params, optimizer state, objective state and the data iterator.

Layout of ``<workdir>/checkpoints/<step>/``: ``params`` (restorable alone, for evaluation/export),
``train`` (step, optimizer state, objective state), ``data`` (the grain iterator, per process) and
``meta`` (JSON: step and model config). Saves are asynchronous; a step directory appears only once
complete, so a run killed mid-save leaves the previous checkpoint as the latest.

Objective state inside ``train`` (``extra``, e.g. DINO's EMA teacher ``extra["teacher"]``) can be read
alone (``Checkpointer.restore_extra``), without the optimizer state beside it. Reading a whole
workdir (its config, model and weights) is ``vitjax.training.workdir``.
"""
from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp

from vitjax.param_tree import first_mismatch


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint whose parameters do not fit the configured model."""


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
