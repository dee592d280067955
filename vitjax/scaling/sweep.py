"""Scaling sweeps: expand a grid (or a star) over shape, data and learning rate into runs, train them
one after another through :class:`vitjax.training.trainer.Trainer`, and record per run what a scaling law needs.

    python experiments/scaling/sweep.py --config configs/scaling_digits.py --out workdirs/scaling_digits

A *sweep config* is a Python file whose ``get_config()`` returns a ConfigDict with:

  base_config          path of an ordinary training config (e.g. ``configs/vit_digits.py``)
  overrides            ``["key=value", ...]`` applied to the base config for every run
  mode                 ``"grid"`` (Cartesian product of ``grid``) or ``"star"`` (``star.center`` plus
                       one axis at a time, Alabdulmohsin et al. 2023, "Getting ViT in Shape", Sec. 3)
  grid                 ``{axis: [values]}``, or a list of such dicts (their union)
  star                 ``{"center": {axis: value}, "axes": {axis: [values]}}``
  axis_keys            extra axes: ``{axis: "config.key"}`` (e.g. ``{"wd": "optim.weight_decay"}``)
  head_dim, mlp_ratio  shape rules when width is swept: heads = width // head_dim,
                       mlp_dim = mlp_ratio * width (None keeps the base config's value)
  evals_per_run, checkpoints_per_run, logs_per_run, max_warmup_fraction   per-run schedule rules
  analysis             options of :func:`vitjax.scaling.analysis.analyze_sweep`

Axes (:data:`AXES`): ``width``, ``depth``, ``mlp_dim``, ``mlp_ratio``, ``num_heads``, ``lr``, and the
amount of training as exactly one of ``images`` (images seen), ``epochs`` or ``steps``.

Layout of the sweep folder::

  sweep.json                    the sweep config, the planned runs with their overrides, and per
                                invocation that trained runs: wall time, runs trained, load average
  runs/<name>/                  an ordinary vitjax workdir (config.json, metrics.jsonl, checkpoints/)
  runs/<name>/record.json       written when the run has finished (or diverged): its presence is what
                                "finished" means, so a rerun of the sweep skips the run
  runs.jsonl                    every record, one per line, in plan order (rewritten after each run)

A rerun skips finished runs and lets the Trainer resume a half-finished one from its checkpoint. A
finished run whose config differs from what the sweep now asks for is an error (not silently reused).
A SIGTERM stops the sweep once the Trainer has saved the current run's checkpoint (no record: the next
invocation resumes it). Records are built from the :class:`~vitjax.training.summary.RunSummary` that
``Trainer.train()`` returns and the run's metrics.jsonl, never from the Trainer's internals.

Per-run record (:func:`run_sweep` returns them): ``N`` (all parameters) and ``N_nonembed``
(:data:`EMBEDDING_PARAMS` excluded, as Kaplan et al. 2020 count), ``D`` = images seen = steps x global
batch, ``tokens`` = D x tokens per image, ``C`` = training FLOPs = XLA's per-device cost of one step x
devices x steps, ``C_6ND`` = 6 x N_nonembed x tokens (Kaplan et al. 2020, Sec. 2.1, for comparison),
``loss``/``top1`` (final eval), ``best_loss``/``best_top1``, ``curve`` (every eval point) and
``train_curve`` (logged train loss), ``wall_s``. A run that diverges (NaN/Inf) is recorded with
``status="diverged"`` and no loss; the analysis excludes it and says so.
"""
from __future__ import annotations

import dataclasses
import gc
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from vitjax import config as config_lib
from vitjax.config import ConfigError
from vitjax.data import get_source
from vitjax.models import build_model
from vitjax.models.registry import model_options, model_param_shapes
from vitjax.scaling.records import RECORD_FILE, RUN_FILE, read_json, read_records, write_json, write_runs_jsonl
from vitjax.training.metrics import read_metrics
from vitjax.training.trainer import NonFiniteError, Trainer
from vitjax.training.workdir import latest_step

__all__ = ["AXES", "EMBEDDING_PARAMS", "RunSpec", "load_sweep_config", "load_base_config", "plan",
           "run_config", "count_params", "run_sweep", "read_records", "RECORD_FILE"]

# Axis -> the config key it sets. "images", "epochs" and "steps" all set train.total_steps (the
# Trainer's rule: epochs x (train examples // batch)); "mlp_ratio" sets model.mlp_dim = ratio * width.
AXES: dict[str, str] = {
    "width": "model.width",
    "depth": "model.depth",
    "mlp_dim": "model.mlp_dim",
    "mlp_ratio": "model.mlp_dim",
    "num_heads": "model.num_heads",
    "images": "train.total_steps",
    "epochs": "train.total_steps",
    "steps": "train.total_steps",
    "lr": "optim.lr",
}
_DATA_AXES = ("images", "epochs", "steps")
# Short forms for run names, e.g. "w32_d2_ep5".
_SHORT = {"width": "w", "depth": "d", "mlp_dim": "mlp", "mlp_ratio": "mr", "num_heads": "h", "lr": "lr",
          "images": "img", "epochs": "ep", "steps": "st"}

# Top-level parameter groups that embed inputs or read out classes. Kaplan et al. 2020 (Sec. 2.1)
# fit their laws on non-embedding parameters; for a ViT the analogue leaves out the patch projection,
# position embeddings, class/distillation tokens and the classifier head(s). The final norm stays in.
EMBEDDING_PARAMS = ("patch_embed", "pos_embedding", "cls", "dist", "head", "head_dist")

_RUN_FILE = RUN_FILE


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One planned run: its name (= folder under ``runs/``), swept axis values, and every config
    override (key -> value) it applies on top of the base config and the sweep's common overrides."""
    name: str
    axes: dict[str, Any]
    overrides: dict[str, Any]


# ------------------------------------------------------------------------------------------- configs

def load_sweep_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads a sweep config file (``path.py`` or ``path.py:arg``) and applies ``--config.x=v`` overrides."""
    cfg = config_lib.load_config_file(spec)
    config_lib.apply_overrides(cfg, overrides, model_options)
    if not cfg.get("base_config"):
        raise ConfigError(f"sweep config {spec!r} has no 'base_config' (the training config every run starts "
                          f"from, e.g. configs/vit_digits.py)")
    cfg_dir = os.path.dirname(os.path.abspath(spec.partition(":")[0]))
    with cfg.unlocked():
        cfg.base_config = _resolve_path(cfg.base_config, cfg_dir)
    return cfg


def _resolve_path(path: str, cfg_dir: str) -> str:
    """A relative base-config path: relative to the current folder, else to the sweep config's folder."""
    if os.path.isabs(path) or os.path.isfile(path.partition(":")[0]):
        return path
    alt = os.path.join(cfg_dir, path)
    return alt if os.path.isfile(alt.partition(":")[0]) else path


def load_base_config(sweep: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The base training config with the sweep's common ``overrides`` applied."""
    base = config_lib.load_config_file(sweep.base_config)
    for item in sweep.get("overrides", None) or ():
        key, sep, text = str(item).partition("=")
        if not sep:
            raise ConfigError(f"sweep override {item!r} must look like 'key=value', e.g. 'train.tensorboard=False'")
        config_lib.set_key(base, key.strip().removeprefix("--config."), text.strip())
    return base


def _axis_table(sweep) -> dict[str, str]:
    extra = dict(sweep.get("axis_keys", None) or {})
    clash = set(extra) & set(AXES)
    if clash:
        raise ConfigError(f"axis_keys redefines built-in axes {sorted(clash)}; built-in axes: {sorted(AXES)}")
    return {**AXES, **extra}


def _check_axes(axes: Mapping[str, Any], table: Mapping[str, str], where: str) -> None:
    unknown = [a for a in axes if a not in table]
    if unknown:
        raise ConfigError(f"{where}: unknown sweep axis {unknown}; axes are {sorted(table)} (declare others "
                          f"in axis_keys, e.g. axis_keys=dict(wd='optim.weight_decay'))")
    data = [a for a in axes if a in _DATA_AXES]
    if len(data) > 1:
        raise ConfigError(f"{where}: axes {data} all set the amount of training; sweep only one of "
                          f"{list(_DATA_AXES)}")
    if "mlp_dim" in axes and "mlp_ratio" in axes:
        raise ConfigError(f"{where}: sweep mlp_dim or mlp_ratio, not both")


def _value_lists(d: Mapping[str, Any], where: str) -> dict[str, list]:
    out = {}
    for k, v in d.items():
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        if not vals:
            raise ConfigError(f"{where}.{k} is an empty list; give at least one value")
        out[k] = vals
    return out


def _ordered(axes: Mapping[str, Any], table: Mapping[str, str]) -> list[str]:
    order = list(AXES) + sorted(a for a in table if a not in AXES)
    return [a for a in order if a in axes]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def run_name(axes: Mapping[str, Any], table: Mapping[str, str] = AXES) -> str:
    """``{"width": 32, "depth": 2, "epochs": 5}`` -> ``"w32_d2_ep5"`` (axes in :data:`AXES` order)."""
    return "_".join(f"{_SHORT.get(a, a)}{_fmt(axes[a])}" for a in _ordered(axes, table))


def plan(sweep: ml_collections.ConfigDict, base: ml_collections.ConfigDict | None = None) -> list[RunSpec]:
    """Expands the sweep config into runs (grid: Cartesian product in axis order; star: center first,
    then one axis at a time). Runs with the same name are planned once."""
    base = base if base is not None else load_base_config(sweep)
    table = _axis_table(sweep)
    mode = sweep.get("mode", "grid")
    points: list[dict[str, Any]] = []
    if mode == "grid":
        grids = sweep.get("grid", None)
        if not grids:
            raise ConfigError("mode='grid' needs a non-empty 'grid': {axis: [values]}")
        grids = [grids] if hasattr(grids, "items") else list(grids)     # a dict/ConfigDict or a list of them
        for gi, g in enumerate(grids):
            where = "grid" if len(grids) == 1 else f"grid[{gi}]"
            lists = _value_lists(dict(g), where)
            _check_axes(lists, table, where)
            names = _ordered(lists, table)
            points += [dict(zip(names, vals)) for vals in itertools.product(*(lists[a] for a in names))]
    elif mode == "star":
        star = sweep.get("star", None)
        if not star or "center" not in star or "axes" not in star:
            raise ConfigError("mode='star' needs star=dict(center={axis: value}, axes={axis: [values]})")
        center = dict(star["center"])
        lists = _value_lists(dict(star["axes"]), "star.axes")
        _check_axes(center, table, "star.center")
        missing = [a for a in lists if a not in center]
        if missing:
            raise ConfigError(f"star.axes {missing} have no value in star.center; the center needs one value "
                              f"per swept axis")
        points.append(dict(center))
        for a in _ordered(lists, table):
            points += [{**center, a: v} for v in lists[a] if v != center[a]]
    else:
        raise ConfigError(f"sweep mode {mode!r}; choose 'grid' or 'star'")

    specs, seen = [], set()
    n_train = None
    for axes in points:
        if any(a in ("epochs",) for a in axes) and n_train is None:
            n_train = len(get_source(**base.input.data))
        name = run_name(axes, table)
        if name in seen:
            continue
        seen.add(name)
        specs.append(RunSpec(name, axes, _overrides(sweep, axes, base, table, n_train)))
    return specs


def _overrides(sweep, axes, base, table, n_train) -> dict[str, Any]:
    """Config key -> value for one run: the axes, the shape rules and the per-run schedule rules."""
    ov: dict[str, Any] = {}
    for a, v in axes.items():
        if a not in _DATA_AXES and a != "mlp_ratio":
            ov[table[a]] = v
    width = int(axes.get("width", base.model.get("width") or 0))
    if "mlp_dim" not in axes:
        ratio = axes.get("mlp_ratio", sweep.get("mlp_ratio", None))
        if ratio is not None and ("width" in axes or "mlp_ratio" in axes):
            ov["model.mlp_dim"] = max(1, int(round(float(ratio) * width)))
    head_dim = sweep.get("head_dim", None)
    if "num_heads" not in axes and head_dim and "width" in axes:
        ov["model.num_heads"] = max(1, width // int(head_dim))
    heads = int(ov.get("model.num_heads", base.model.get("num_heads") or 1))
    if width and width % heads:
        raise ConfigError(f"run {run_name(axes, table)}: width {width} is not divisible by {heads} heads; "
                          f"change the widths or head_dim")

    batch = int(base.input.batch_size)
    if "steps" in axes:
        steps = int(axes["steps"])
    elif "images" in axes:
        steps = int(math.ceil(float(axes["images"]) / batch))
    elif "epochs" in axes:
        steps = int(math.ceil(float(axes["epochs"]) * max(1, n_train // batch)))
    elif base.train.get("total_steps", -1) > 0:
        steps = int(base.train.total_steps)
    else:
        steps = int(math.ceil(base.train.num_epochs * max(1, len(get_source(**base.input.data)) // batch)))
    if steps < 1:
        raise ConfigError(f"run {run_name(axes, table)} would train for {steps} steps; use more data")
    ov["train.total_steps"] = steps
    ov["train.eval_every_steps"] = int(math.ceil(steps / int(sweep.get("evals_per_run", 8))))
    ov["train.checkpoint_every_steps"] = int(math.ceil(steps / int(sweep.get("checkpoints_per_run", 2))))
    ov["train.log_every_steps"] = int(math.ceil(steps / int(sweep.get("logs_per_run", 25))))
    # A fixed warmup longer than a short run would be an error (and would dominate it): cap it.
    warmup = int(base.optim.get("warmup_steps", 0))
    frac = sweep.get("max_warmup_fraction", None)
    if frac is not None:
        warmup = min(warmup, int(float(frac) * steps))
    ov["optim.warmup_steps"] = warmup
    return ov


def run_config(base: ml_collections.ConfigDict, spec: RunSpec) -> ml_collections.ConfigDict:
    """The full training config of one run (a copy of ``base`` with ``spec.overrides``), validated."""
    cfg = ml_collections.ConfigDict(base.to_dict())
    for key, value in spec.overrides.items():
        config_lib.set_key(cfg, key, value if isinstance(value, str) else repr(value))
    config_lib.validate(cfg)
    return cfg


def _fingerprint(cfg: ml_collections.ConfigDict) -> str:
    return hashlib.sha256(config_lib.to_json(cfg).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- measuring

def count_params(params: Mapping[str, Any]) -> tuple[int, int]:
    """(total, non-embedding) parameter counts of a params tree (arrays or ShapeDtypeStructs); the
    non-embedding count leaves out the top-level groups in :data:`EMBEDDING_PARAMS`."""
    total = non_embed = 0
    for key, sub in params.items():
        n = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(sub))
        total += n
        if key not in EMBEDDING_PARAMS:
            non_embed += n
    return total, non_embed


def _last_by_step(records: list[dict], key: str) -> dict[int, dict]:
    """A resumed run appends to metrics.jsonl: the last record of a step wins."""
    out = {}
    for r in records:
        if key in r:
            out[int(r["step"])] = r
    return dict(sorted(out.items()))


def _finite(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _train_one(cfg, spec: RunSpec, workdir: str, sha: str, devices) -> dict[str, Any] | None:
    """Trains (or resumes) one run and returns its record, or None when the run was preempted
    (SIGTERM: the Trainer saved a checkpoint and stopped; a rerun of the sweep resumes it)."""
    resumed_from = latest_step(workdir)
    t0 = time.time()
    status, error = "finished", None
    try:
        summary = Trainer(cfg, workdir, devices=devices).train(eval_loss_per_example=True)
    except NonFiniteError as e:
        status, error = "diverged", str(e)
        summary = e.summary          # the run up to its last finite step (Trainer attaches it)
    wall = time.time() - t0
    gc.collect()          # the Trainer (its device buffers) is garbage now; free it before the next run
    if summary.status == "preempted":
        return None

    model = build_model(cfg)
    n_total, n_nonembed = count_params(model_param_shapes(model))
    tokens_per_image = None
    if hasattr(model, "grid"):
        gh, gw = model.grid
        tokens_per_image = int(gh * gw + getattr(model, "num_prefix_tokens", 0))
    n_dev, steps, batch = summary.devices, summary.total_steps, summary.batch_size
    flops = summary.flops_per_device
    stats = summary.eval_loss_stats() if status == "finished" else None
    D = steps * batch
    records = read_metrics(workdir) if os.path.isfile(os.path.join(workdir, "metrics.jsonl")) else []
    evals = _last_by_step(records, "eval/loss")
    trains = _last_by_step(records, "train/loss")
    curve = [{"step": s, "images": s * batch, "loss": _finite(r["eval/loss"]), "top1": _finite(r.get("eval/top1"))}
             for s, r in evals.items()]
    train_curve = [{"step": s, "images": s * batch, "loss": _finite(r["train/loss"])} for s, r in trains.items()]
    final = summary.final_metrics
    if status == "finished" and not final and steps in evals:     # complete before this process started
        final = evals[steps]
    loss, top1 = (_finite(final.get("eval/loss")), _finite(final.get("eval/top1"))) if final else (None, None)
    ok = [p for p in curve if p["loss"] is not None]
    best = min(ok, key=lambda p: p["loss"]) if ok else None
    tokens = D * tokens_per_image if tokens_per_image else None
    return {
        "name": spec.name, "status": status, "error": error, "axes": spec.axes,
        "overrides": spec.overrides, "config_sha": sha,
        "N": n_total, "N_nonembed": n_nonembed,
        "D": D, "steps": steps, "batch_size": batch, "epochs": D / summary.train_examples,
        "tokens_per_image": tokens_per_image, "tokens": tokens,
        "C": flops * n_dev * steps if flops else None,
        "C_per_step": flops * n_dev if flops else None,
        "C_6ND": 6.0 * n_nonembed * tokens if tokens else None,
        "devices": n_dev, "device_kind": summary.device_kind,
        "loss": loss, "top1": top1,
        "best_loss": best["loss"] if best else None, "best_top1": max((p["top1"] or 0.0) for p in ok) if ok else None,
        "best_step": best["step"] if best else None,
        "loss_se": stats["se"] if stats else None, "loss_std": stats["std"] if stats else None,
        "eval_examples": stats["n"] if stats else None, "loss_se_pass_mean": stats["mean"] if stats else None,
        "curve": curve, "train_curve": train_curve,
        "wall_s": wall, "se_pass_s": summary.eval_losses_seconds, "compile_s": summary.compile_seconds,
        "resumed_from_step": resumed_from, "loadavg_1m": _loadavg(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _loadavg() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------ running

def _first_diff(a: dict, b: dict) -> str:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return f"{k}: recorded {a.get(k)!r}, now {b.get(k)!r}"
    return "(the base config differs)"


def run_sweep(sweep: ml_collections.ConfigDict, sweep_dir: str, *, devices=None, shard: tuple[int, int] = (0, 1),
              only: Sequence[int] | None = None, log: Callable[[str], None] | None = None) -> list[dict]:
    """Trains every planned run that has no record yet, in plan order, and returns all records.

    Args:
      sweep: a sweep config (:func:`load_sweep_config`).
      sweep_dir: output folder (created); runs go to ``<sweep_dir>/runs/<name>/``.
      devices: passed to each :class:`Trainer` (None: all local devices).
      shard: ``(i, n)`` trains only runs ``i, i+n, i+2n...`` of the plan, so n hosts/slices sharing the
        folder can split a sweep; each skips what is already recorded.
      only: train just these plan indices (``--run_index``: one job of a SLURM array or a TPU queue
        per run, any number at once). With several JAX processes (one run spread over hosts) they all
        train it and process 0 alone writes the files.
      log: progress sink (default: stderr).

    Raises:
      ConfigError: a bad sweep config, or a recorded run whose config differs from the planned one.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    idx, count = shard
    if not (count >= 1 and 0 <= idx < count):
        raise ConfigError(f"shard {idx}/{count}: need 0 <= index < count")
    base = load_base_config(sweep)
    specs = plan(sweep, base)
    bad = [i for i in (only or ()) if not 0 <= i < len(specs)]
    if bad:
        raise ConfigError(f"--run_index {bad[0]} is outside the plan's {len(specs)} runs (0..{len(specs) - 1}); "
                          f"list them with --dry_run")
    writer = jax.process_index() == 0
    os.makedirs(os.path.join(sweep_dir, "runs"), exist_ok=True)
    meta_path = os.path.join(sweep_dir, "sweep.json")
    history = read_json(meta_path).get("invocations", []) if os.path.isfile(meta_path) else []
    meta = {"sweep_config": json.loads(config_lib.to_json(sweep)),
            "runs": [dataclasses.asdict(s) for s in specs], "invocations": history}
    if writer and (idx == 0 or only is not None):     # every array job writes the same plan
        write_json(meta_path, meta)
    t_start, load_start = time.time(), _loadavg()
    trained = 0
    for i, spec in enumerate(specs):
        if (i not in only) if only is not None else (i % count != idx):
            continue
        cfg = run_config(base, spec)
        sha = _fingerprint(cfg)
        workdir = os.path.join(sweep_dir, "runs", spec.name)
        rec_path = os.path.join(workdir, RECORD_FILE)
        run_path = os.path.join(workdir, _RUN_FILE)
        tag = f"[{i + 1}/{len(specs)}] {spec.name}"
        for path in (rec_path, run_path):
            if os.path.isfile(path):
                prev = read_json(path)
                if prev.get("config_sha") != sha:
                    raise ConfigError(
                        f"{tag}: {workdir} was trained with a different config than the sweep now plans "
                        f"({_first_diff(prev.get('overrides', {}), spec.overrides)}). Use another --out folder, "
                        f"or delete that run folder to retrain it.")
        if os.path.isfile(rec_path):
            log(f"{tag}: finished earlier, skipped")
            continue
        os.makedirs(workdir, exist_ok=True)
        if writer:
            write_json(run_path, {"name": spec.name, "config_sha": sha, "overrides": spec.overrides})
        log(f"{tag}: training {spec.overrides['train.total_steps']} steps "
            f"({', '.join(f'{a}={_fmt(v)}' for a, v in spec.axes.items())})")
        record = _train_one(cfg, spec, workdir, sha, devices)
        if record is None:
            log(f"{tag}: preempted (SIGTERM); its checkpoint is saved, rerun the sweep to resume it")
            break
        if writer:
            write_json(rec_path, record)
        trained += 1
        if record["status"] == "diverged":
            log(f"{tag}: DIVERGED, recorded and excluded from fits: {record['error'].split('. ')[0]}")
        else:
            se = f" +- {record['loss_se']:.4f}" if record.get("loss_se") is not None else ""
            log(f"{tag}: eval loss {record['loss']:.4f}{se}, top-1 {record['top1']:.4f}, N={record['N']:,} "
                f"({record['N_nonembed']:,} non-embedding), D={record['D']:,}, "
                f"C={record['C'] or float('nan'):.3g} FLOPs, {record['wall_s']:.0f}s")
        if writer:
            write_runs_jsonl(sweep_dir, [s.name for s in specs])
    records = read_records(sweep_dir, [s.name for s in specs])
    if writer:
        write_runs_jsonl(sweep_dir, [s.name for s in specs])
    # parallel array jobs would race on one history list; their records keep their wall time
    if writer and idx == 0 and only is None and trained:     # what each invocation that trained something took, and the machine's load
        history.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
                        "trained": trained, "wall_s": time.time() - t_start, "loadavg_1m_start": load_start,
                        "loadavg_1m_end": _loadavg(), "cpu_count": os.cpu_count()})
        write_json(meta_path, meta)
    missing = len(specs) - len(records)
    log(f"sweep: {len(records)}/{len(specs)} runs recorded ({trained} trained now"
        f"{f', {missing} left to other shards or still to run' if missing else ''})")
    return records
