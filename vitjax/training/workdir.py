"""Reading a run's workdir: its config, its model, and the weights of its latest (or a given) step.

    config, model, params = vitjax.load("workdirs/run")                  # == load_workdir
    config, model, params = load_workdir(W, weights="teacher")           # DINO's EMA teacher

One module serves ``vitjax.load``, ``python -m vitjax.evaluate``, ``vitjax.probe``,
``vitjax.export`` and init-from-weights (``vitjax.training.init_weights``).
"""
from __future__ import annotations

import os

import jax
from jax.sharding import SingleDeviceSharding

from vitjax import config as config_lib
from vitjax.models import build_model
from vitjax.models.dino import DINO
from vitjax.models.registry import model_param_shapes
from vitjax.param_tree import first_mismatch
from vitjax.training.checkpoint import Checkpointer, CheckpointMismatchError

WEIGHTS = ("params", "teacher")


def is_workdir(path: str) -> bool:
    """True for the --workdir of a vitjax run (its config.json and checkpoints/ folder)."""
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(os.path.join(path, "checkpoints"))


def read_config(workdir: str, overrides=()):
    """The run's config (its config.json), with ``--config.KEY=VALUE`` overrides applied."""
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{workdir} has no config.json; is it a vitjax workdir (the --workdir "
                                f"of a python -m vitjax.train run)?")
    with open(cfg_path) as fh:
        config = config_lib.from_json(fh.read())
    return config_lib.apply_overrides(config, overrides) if overrides else config


def latest_step(workdir: str) -> int | None:
    """The newest finished checkpoint's step, or None (whether its files read is not checked)."""
    ckpt = Checkpointer(workdir, async_save=False)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def weights_for(model, student: bool, workdir: str) -> str:
    """The ``load_workdir`` weights a command line's ``--student`` flag selects: a DINO workdir gives
    its EMA teacher (what the paper evaluates and releases) unless ``student``; any other model has
    only its parameters, and ``--student`` on it is a ValueError naming the workdir's model."""
    if not isinstance(model, DINO):
        if student:
            raise ValueError(f"--student applies to DINO workdirs (a student and an EMA teacher); {workdir} "
                             f"holds a {type(model).__name__}, which has only its parameters")
        return "params"
    return "params" if student else "teacher"


def workdir_model(workdir: str):
    """``(config, model)`` of a workdir (its config.json), without reading any checkpoint."""
    config = read_config(workdir)
    return config, build_model(config)


def load_workdir(workdir: str, step: int | None = None, weights: str = "params"):
    """``(config, model, params)`` from ``workdir``: its config.json and its latest (or given)
    checkpoint, with params as host-local arrays on the first device.

    ``weights``: "params" (the trained parameters; for DINO the student) or "teacher" (DINO's EMA
    teacher, the network the paper evaluates and releases; same tree as the params). A workdir whose
    objective keeps no teacher raises ValueError for "teacher". A damaged latest checkpoint is
    skipped with one warning line for the newest intact one (``Checkpointer.newest_intact``; nothing
    in the workdir changes); a damaged ``step`` given explicitly raises CheckpointDamagedError.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; choose one of {list(WEIGHTS)}")
    config, model = workdir_model(workdir)
    abstract = model_param_shapes(model)
    dev = SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), abstract)
    ckpt = Checkpointer(workdir, async_save=False)

    def read(step):
        ckpt.check_params(step, abstract)
        if weights != "teacher":
            return ckpt.restore_params(step, target)
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
        return ckpt.restore_extra(step, "teacher", target)

    try:
        _, params, _ = ckpt.newest_intact(read, step)
    finally:
        ckpt.close()
    return config, model, params


load = load_workdir
