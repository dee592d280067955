"""Reading a run's workdir: its config, its model, and the weights of its latest (or a given) step.

    config, model, params = vitjax.load("workdirs/run")                  # == load_workdir
    config, model, params = load_workdir(W, weights="teacher")           # DINO's EMA teacher
    config, model, params = load_evaluated(W)    # what export/predict/generate read: DINO's teacher, else params

One module serves ``vitjax.load``, ``python -m vitjax.evaluate``, ``vitjax.probe``,
``vitjax.export`` and init-from-weights (``vitjax.training.init_weights``).
"""
from __future__ import annotations

import json
import logging
import os

import jax
from jax.sharding import SingleDeviceSharding

from vitjax import config as config_lib
from vitjax.data.sources import get_source
from vitjax.models import build_model
from vitjax.models.dino import DINO
from vitjax.models.registry import model_options, model_param_shapes
from vitjax.param_tree import first_mismatch
from vitjax.training.checkpoint import Checkpointer, CheckpointMismatchError

WEIGHTS = ("params", "teacher")
CLASS_NAMES_FILE = "class_names.json"     # one name per model output, written when training starts

log = logging.getLogger("vitjax")


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
    return config_lib.apply_overrides(config, overrides, model_options) if overrides else config


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


def load_workdir(workdir: str, step: int | None = None, weights: str = "params", *, with_step: bool = False):
    """``(config, model, params)`` from ``workdir``: its config.json and its latest (or given)
    checkpoint, with params as host-local arrays on the first device; ``with_step``: ``(config,
    model, params, step)``, the step the weights are from.

    ``weights``: "params" (the trained parameters; for DINO the student) or "teacher" (DINO's EMA
    teacher, the network the paper evaluates and releases; same tree as the params). A workdir whose
    objective keeps no teacher raises ValueError for "teacher". A damaged latest checkpoint is
    skipped with one warning line for the newest intact one (``Checkpointer.newest_intact``; nothing
    in the workdir changes); a damaged ``step`` given explicitly raises CheckpointDamagedError.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r}; choose one of {list(WEIGHTS)}")
    config, model = workdir_model(workdir)
    return _read_weights(workdir, config, model, step, weights, with_step)


def _read_weights(workdir: str, config, model, step: int | None, weights: str, with_step: bool):
    """``load_workdir``'s checkpoint read, for the ``config`` and ``model`` already built from
    ``workdir``."""
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
        loaded, params, _ = ckpt.newest_intact(read, step)
    finally:
        ckpt.close()
    return (config, model, params, loaded) if with_step else (config, model, params)


load = load_workdir


def load_evaluated(workdir: str, step: int | None = None, student: bool = False, *, with_step: bool = False):
    """``load_workdir`` with the weights a run is evaluated, exported and sampled with: a DINO
    workdir's EMA teacher (its student with ``student``), any other model's parameters. ``student`` on
    a workdir that is not DINO's is ``weights_for``'s ValueError."""
    config, model = workdir_model(workdir)
    return _read_weights(workdir, config, model, step, weights_for(model, student, workdir), with_step)


def record_run(workdir: str, config, resumed_step: int | None, source, num_classes) -> None:
    """What a starting run keeps in its workdir (main process only): ``config.json`` (a resume with a
    changed config logs the changes and keeps the old file) and ``class_names.json``, the training
    data's class names for a model with ``num_classes`` outputs, so predictions and exports name
    classes even after the dataset has moved."""
    config_lib.write_run_config(workdir, config, resumed_step=resumed_step)
    names = [str(n) for n in (getattr(source, "class_names", None) or ())]
    if isinstance(num_classes, int) and num_classes > 0 and names:
        names += [f"class_{i}" for i in range(len(names), num_classes)]   # a head wider than the data
        with open(os.path.join(workdir, CLASS_NAMES_FILE), "w") as fh:
            json.dump(names[:num_classes], fh, indent=1)
            fh.write("\n")


def class_names(workdir: str | None, config, num_classes: int) -> list[str]:
    """``num_classes`` names for the model's outputs: the workdir's ``class_names.json`` (written when
    training started), else the training dataset's label names, else ``class_<i>`` (with one warning
    saying why)."""
    path = os.path.join(workdir, CLASS_NAMES_FILE) if workdir else None
    if path and os.path.isfile(path):
        with open(path) as fh:
            names = [str(n) for n in json.load(fh)]
        if len(names) == num_classes:
            return names
        log.warning("warning: %s names %d classes but the model has %d outputs; reading the dataset's",
                    path, len(names), num_classes)
    data = dict(config.input.data)
    names, why = None, None
    try:
        names = getattr(get_source(data["name"], data.get("split") or "train", data.get("data_dir")),
                        "class_names", None)
    except (OSError, ValueError, KeyError) as e:     # dataset moved or deleted since training
        why = f"the training dataset {data.get('name')!r} cannot be read ({str(e).splitlines()[0]})"
    names = [str(n) for n in names] if names else []
    if why is None and not names:
        why = f"the training dataset {data.get('name')!r} names no classes"
    elif why is None and len(names) != num_classes:
        why = f"the dataset names {len(names)} classes but the model has {num_classes} outputs"
    if why:
        log.warning("warning: %s; classes%s are shown as class_<i>", why, " without a name" if names else "")
    return [names[i] if i < len(names) else f"class_{i}" for i in range(num_classes)]
