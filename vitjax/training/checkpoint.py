"""Checkpoints through orbax: params, optimizer state, objective state and the data iterator.

Layout of ``<workdir>/checkpoints/<step>/``: ``params`` (restorable alone, for evaluation/export),
``train`` (step, optimizer state, objective state), ``data`` (the grain iterator, per process) and
``meta`` (JSON: step and model config). Saves are asynchronous; a step directory appears only once
complete, so a run killed mid-save leaves the previous checkpoint as the latest.

Damaged checkpoints: a step whose files cannot be read (truncated, missing or undecodable; a read
that fails inside orbax/TensorStore) raises ``CheckpointDamagedError``, one line naming the step and
the first reason. ``newest_intact`` falls back to the newest step that reads: evaluation and
``load_workdir`` only read (nothing in the workdir changes); a resuming run (``resume``) moves each
damaged step it skipped, once an older step restored, to ``<workdir>/damaged_checkpoints/<step>``
(``<step>.1``, ... when that exists), outside the manager's directory, so that orbax never
garbage-collects it (``max_to_keep``) nor collides with it when the run saves that step again.
Nothing is ever deleted. When no step reads, nothing is moved and the error names every step.
Bytes changed inside an array file without changing its length can go unnoticed (orbax stores no
checksums).

Objective state inside ``train`` (``extra``, e.g. DINO's EMA teacher ``extra["teacher"]``) can be read
alone (``Checkpointer.restore_extra``), without the optimizer state beside it. Reading a whole
workdir (its config, model and weights) is ``vitjax.training.workdir``.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vitjax.data.pipeline import DataPathMismatchError
from vitjax.models import scan
from vitjax.param_tree import first_mismatch

_log = logging.getLogger("vitjax")


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint whose parameters do not fit the configured model."""


class CheckpointDamagedError(ValueError):
    """A checkpoint step whose files cannot be read (or, from ``newest_intact``, every step)."""

    def __init__(self, message: str, step: int | None = None, reason: str = ""):
        super().__init__(message)
        self.step, self.reason = step, reason


DAMAGED_DIR = "damaged_checkpoints"
_DAMAGE_TYPES = (ValueError, OSError, KeyError, EOFError)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (orbax wraps the ones raised inside it)."""
    chain, e = [], err
    while e is not None and len(chain) < 20:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def damage_reason(err: BaseException) -> str | None:
    """One line on why reading a checkpoint failed, when ``err`` (raised inside orbax/TensorStore)
    means damaged files; None for anything else (out of memory, a programming error)."""
    chain = _chain(err)
    if any("RESOURCE_EXHAUSTED" in str(c) or isinstance(c, MemoryError) for c in chain):
        return None
    found = [c for c in chain if isinstance(c, _DAMAGE_TYPES)
             or (type(c) is Exception and "TensorStore" in str(c))]
    if not found:
        return None
    text = str(found[-1]).strip().splitlines()[0] if str(found[-1]).strip() else type(found[-1]).__name__
    text = text.split(" [tensorstore_spec")[0].split(" See full TensorStore details")[0]
    return text if len(text) <= 300 else text[:297] + "..."


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

    @contextlib.contextmanager
    def reading(self, step: int):
        """Turns a failure of the orbax reads inside into ``CheckpointDamagedError`` (one line)."""
        try:
            yield
        except Exception as e:   # classified by damage_reason; anything else is re-raised
            mismatch = [c for c in _chain(e) if isinstance(c, DataPathMismatchError)]
            if mismatch:        # intact, but resumable only with the input path that saved it
                raise CheckpointMismatchError(f"checkpoint step {step} in {self.directory}: {mismatch[0]}. "
                                              f"Nothing was changed.") from e
            reason = damage_reason(e)
            if reason is None:
                raise
            raise CheckpointDamagedError(f"checkpoint step {step} in {self.directory} is damaged ({reason})",
                                         step, reason) from e

    def newest_intact(self, read: Callable[[int], Any], step: int | None = None, warn: bool = True):
        """``(step, read(step), damaged)`` for the newest step (or only ``step``, when given) whose
        ``read`` raises no ``CheckpointDamagedError``; ``damaged`` lists the ``(step, reason)`` skipped,
        each with a warning line when ``warn``. Raises FileNotFoundError without any checkpoint,
        CheckpointDamagedError when none reads."""
        steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"{self.directory} holds no finished checkpoint")
        if step is not None and step not in self.manager.all_steps():
            raise FileNotFoundError(f"{self.directory} holds no checkpoint of step {step}; it holds steps "
                                    f"{sorted(self.manager.all_steps())}")
        damaged = []
        for s in steps:
            result, reason = None, None
            try:
                result = read(s)
            except CheckpointDamagedError as e:
                _log.debug("reading step %d failed", s, exc_info=True)
                reason = e.reason
            if jax.process_count() > 1:   # every process must take the same step
                failed = multihost_utils.process_allgather(np.array(reason is not None))
                if reason is None and np.any(failed):
                    reason = "unreadable on another process"
            if reason is None:
                for bad, why in damaged if warn else ():
                    _log.warning("checkpoint step %d in %s is damaged (%s); using step %d, the newest intact "
                                 "checkpoint", bad, self.directory, why, s)
                return s, result, damaged
            damaged.append((s, reason))
        if step is not None:
            raise CheckpointDamagedError(
                f"checkpoint step {step} in {self.directory} is damaged ({damaged[0][1]}); choose another "
                f"step (the directory holds {sorted(self.manager.all_steps())})", step, damaged[0][1])
        listed = "; ".join(f"step {s}: {r}" for s, r in damaged)
        raise CheckpointDamagedError(
            f"every checkpoint in {self.directory} is damaged ({listed}); nothing was changed. Restore the "
            f"files from a backup, or move {self.directory} aside to start the run afresh", None, listed)

    def set_aside(self, step: int) -> str:
        """Moves the damaged ``step`` out of the manager's view to ``<workdir>/damaged_checkpoints/``
        (never deletes it); returns the new path. Process 0 moves, every process rereads the steps."""
        base = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
        dest, n = os.path.join(base, str(step)), 0
        while os.path.exists(dest):
            n += 1
            dest = os.path.join(base, f"{step}.{n}")
        if jax.process_index() == 0:
            os.makedirs(base, exist_ok=True)
            os.rename(os.path.join(self.directory, str(step)), dest)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"vitjax_set_aside_{step}")
        self.manager.reload()
        return dest

    def resume(self, abstract_state, data_iter=None):
        """``(step, state)`` restored from the newest intact step, or None without checkpoints.

        Each newer damaged step is set aside (``set_aside``) with one warning line naming it and the
        step resumed from; a checkpoint of another model raises CheckpointMismatchError untouched."""
        if self.latest_step() is None:
            return None

        def read(step):
            self.check_params(step, abstract_state.params)   # refuse another model before reading arrays
            return self.restore(step, abstract_state, data_iter)

        step, state, damaged = self.newest_intact(read, warn=False)
        for bad, reason in damaged:
            dest = self.set_aside(bad)
            _log.warning(
                "checkpoint step %d in %s is damaged (%s); moved it to %s (kept, not deleted) and resumed "
                "from step %d, the newest intact checkpoint", bad, self.directory, reason, dest, step)
        return step, state

    def _saved_params(self, step: int) -> Any:
        """The checkpoint's parameter shapes (``jax.ShapeDtypeStruct``s, in its own layout)."""
        with self.reading(step):
            meta = self.manager.item_metadata(step)["params"]
        tree = getattr(meta, "tree", meta)
        if not tree:
            raise CheckpointDamagedError(f"checkpoint step {step} in {self.directory} is damaged (its params "
                                         f"item has no readable metadata)", step, "params metadata missing")
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), tree,
                            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))

    def _other_layout(self, step: int, abstract_params: Any) -> Any:
        """The checkpoint's parameter shapes when it was saved with scanned layers and the model is
        unscanned or the reverse (``vitjax.models.scan``), else None."""
        saved = self._saved_params(step)
        return None if scan.same_layout(saved, abstract_params) else saved

    def check_params(self, step: int, abstract_params: Any) -> None:
        """Raises CheckpointMismatchError naming the first parameter that does not fit. A checkpoint
        saved with scanned layers fits an unscanned model of the same shapes (and the reverse)."""
        tree = self._saved_params(step)
        problem = first_mismatch(abstract_params, tree)
        if problem and not scan.same_layout(tree, abstract_params):
            try:
                problem = first_mismatch(abstract_params, scan.to_layout(tree, abstract_params))
            except ValueError as e:
                problem = str(e)
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
        """Restores a full TrainState (with the shardings in ``abstract_state``) and the iterator; a
        checkpoint in the other layout (scanned / unscanned layers) is converted, with one log line."""
        saved = self._other_layout(step, abstract_state.params)
        abstract = (abstract_state.params, {"step": abstract_state.step, "opt_state": abstract_state.opt_state,
                                            "extra": abstract_state.extra})
        target = abstract if saved is None else scan.to_layout(abstract, saved)
        items = dict(params=ocp.args.StandardRestore(target[0]), train=ocp.args.StandardRestore(target[1]))
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        with self.reading(step):
            r = self.manager.restore(step, args=ocp.args.Composite(**items))
        params, train = r["params"], r["train"]
        if saved is not None:
            params, train = self._convert(step, (params, train), abstract)
        return abstract_state.replace(params=params, step=train["step"], opt_state=train["opt_state"],
                                      extra=train["extra"])

    def restore_params(self, step: int, abstract_params):
        saved = self._other_layout(step, abstract_params)
        target = abstract_params if saved is None else scan.to_layout(abstract_params, saved)
        with self.reading(step):
            r = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
        return r["params"] if saved is None else self._convert(step, r["params"], abstract_params)

    def _convert(self, step: int, tree, abstract):
        """``tree`` restored in the checkpoint's layout -> the layout and shardings of ``abstract``."""
        names = scan.stack_names(abstract)
        _log.warning("checkpoint step %d in %s was saved with %s layers; converted to this model's %s layout "
                     "(model.scan_layers=%s)", step, self.directory, "unscanned" if names else "scanned",
                     "scanned" if names else "unscanned", bool(names))
        shardings = jax.tree.map(lambda a: getattr(a, "sharding", None), abstract)
        return jax.jit(lambda t: scan.to_layout(t, abstract), out_shardings=shardings)(tree)

    def extra_metadata(self, step: int) -> dict:
        """The shapes/dtypes of the objective state (``train`` item's ``extra``; {} for stateless
        objectives), without reading any array."""
        with self.reading(step):
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
            with self.reading(step):
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
