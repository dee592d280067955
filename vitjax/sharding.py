"""Meshes, the logical-axis rules table, and the shardings derived from them.

Every parameter and large activation in vitjax carries *logical* axis names (``embed``, ``mlp``,
``heads``...). One rules table maps them to the three *mesh* axes:

* ``data``   -- pure data parallelism: parameters replicated, the batch split.
* ``fsdp``   -- fully-sharded data parallelism: the batch *and* the parameters' ``embed`` dim split.
* ``tensor`` -- Megatron-style tensor parallelism: attention heads and the MLP hidden dim split.

Which kind of parallelism a run uses is therefore only a choice of mesh shape in the config
(``config.mesh = dict(data=-1, fsdp=1, tensor=1)``); no model code changes.

Multi-slice TPU (``config.mesh.dcn_data = N``): slices talk over the data-centre network (DCN), far
slower than the chips' links within a slice (ICI), so only the data axis, whose one gradient
all-reduce per step hides behind compute, should cross slices. ``data``/``fsdp``/``tensor`` then
describe one slice, the data axis is repeated ``N`` times across slices (slices beyond ``N``
split ``fsdp`` across DCN), and ``jax.experimental.mesh_utils.create_hybrid_device_mesh`` lays the
devices out so each slice is one contiguous block of the mesh.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vitjax.param_tree import strip_boxes

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Parameter names and activation names are kept apart (maxtext's habit):
# a parameter's `embed` dim is split over `fsdp`, an activation's embed dim never is, because the
# activation's batch dim already uses `fsdp`.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("classes", None),
    ("vocab", "tensor"),           # decoder LM embedding/head rows: Megatron's vocab-parallel split
    ("kv_heads", "tensor"),        # grouped-query key/value heads (replicated when tensor does not divide them)
    ("posemb_len", None),
    ("norm", None),
    ("layers", None),              # the stacked-blocks axis of scanned layers (vitjax.models.scan)
    # activations
    ("act_batch", ("data", "fsdp")),
    ("act_len", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_classes", None),
    ("act_vocab", "tensor"),
    ("act_kv_heads", "tensor"),
)


def rules_from_config(rules: Iterable[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
    """Normalises a rules table from a config (lists from JSON become tuples)."""
    if rules is None:
        return DEFAULT_RULES
    out = []
    for entry in rules:
        if len(entry) != 2:
            raise ValueError(f"sharding rule {entry!r} must be a pair (logical_name, mesh_axes)")
        name, axes = entry
        if isinstance(axes, list):
            axes = tuple(axes)
        for ax in (axes if isinstance(axes, tuple) else (axes,)):
            if ax is not None and ax not in MESH_AXES:
                raise ValueError(f"sharding rule {entry!r} names mesh axis {ax!r}; valid axes are {MESH_AXES}")
        out.append((name, axes))
    return tuple(out)


def mesh_shape(spec: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolves a ``{axis: size}`` mapping (one size may be -1: fill the rest) to a full shape."""
    unknown = set(spec) - set(MESH_AXES) - {"dcn_data"}
    if unknown:
        raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; valid axes are {MESH_AXES}")
    spec = {k: v for k, v in spec.items() if k != "dcn_data"}
    sizes = [int(spec.get(ax, 1)) for ax in MESH_AXES]
    fills = [i for i, s in enumerate(sizes) if s == -1]
    if len(fills) > 1:
        raise ValueError(f"config.mesh={dict(spec)}: only one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh={dict(spec)}: sizes must be positive, or -1 for 'the rest'")
    known = math.prod(s for s in sizes if s != -1)
    if fills:
        if num_devices % known:
            raise ValueError(
                f"config.mesh={dict(spec)}: the fixed axes multiply to {known}, which does not divide "
                f"the {num_devices} devices")
        sizes[fills[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh={dict(spec)} multiplies to {math.prod(sizes)} but there are {num_devices} "
            f"devices; make the sizes multiply to {num_devices} (or set one of them to -1)")
    return tuple(sizes)


def hybrid_devices(spec: Mapping[str, int], dcn_data: int, devices: Sequence[Any]) -> np.ndarray:
    """The ``(data, fsdp, tensor)`` device array of a multi-slice run (module docstring): ``spec``
    shapes each slice, ``data`` is repeated ``dcn_data`` times across slices. ``devices`` carry
    ``slice_index`` (TPU devices do); all slices must have the same number of devices."""
    slices: dict[int, list] = {}
    for d in devices:
        slices.setdefault(int(getattr(d, "slice_index", 0) or 0), []).append(d)
    n = len(slices)
    if dcn_data < 1 or n % dcn_data:
        raise ValueError(f"config.mesh.dcn_data={dcn_data} does not divide the {n} slices the devices belong "
                         f"to; set config.mesh.dcn_data to a divisor of {n} (usually {n}: one data-parallel "
                         f"group per slice)")
    sizes = {len(v) for v in slices.values()}
    if len(sizes) > 1:
        raise ValueError(f"the {n} slices have different device counts {sorted(sizes)}; a multi-slice mesh "
                         f"needs equal slices")
    ici = mesh_shape(spec, sizes.pop())
    dcn = (dcn_data, n // dcn_data, 1)
    return mesh_utils.create_hybrid_device_mesh(ici, dcn, list(devices))


def make_mesh(spec: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the ``(data, fsdp, tensor)`` mesh with Auto axes (classic GSPMD propagation);
    ``spec["dcn_data"] > 1`` builds a multi-slice mesh (``hybrid_devices``)."""
    devices = list(jax.devices() if devices is None else devices)
    spec = dict(spec)
    dcn_data = int(spec.pop("dcn_data", 1) or 1)
    if dcn_data > 1:
        return Mesh(hybrid_devices(spec, dcn_data, devices), MESH_AXES,
                    axis_types=(AxisType.Auto,) * len(MESH_AXES))
    shape = mesh_shape(spec, len(devices))
    if devices == list(jax.devices()):
        # make_mesh orders devices so the fastest links serve the innermost (tensor) axis.
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _fit_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
    """Drops mesh axes from dims they do not divide (e.g. 10 classes over 4 devices): replicate those."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            fitted.append(None)
            continue
        axes_t = axes if isinstance(axes, tuple) else (axes,)
        kept = []
        size = 1
        for ax in axes_t:
            if dim % (size * mesh.shape[ax]) == 0:
                kept.append(ax)
                size *= mesh.shape[ax]
        fitted.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*fitted)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, rules) -> Any:
    """Shardings for a tree whose leaves are (possibly ``nn.LogicallyPartitioned``-boxed) arrays.

    Leaves without logical names are replicated. Dims a mesh axis does not divide are replicated
    rather than failing, so odd shapes (10 classes, 3 colour channels) never block a mesh shape.
    """
    specs = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    values = strip_boxes(abstract_boxed)

    def one(spec, value):
        spec = spec if isinstance(spec, P) else P()
        return NamedSharding(mesh, _fit_spec(spec, value.shape, mesh))

    return jax.tree.map(one, mesh_specs, values, is_leaf=lambda x: isinstance(x, P) or x is None)


def activation_sharding(mesh: Mesh, rules, logical: Sequence[str | None]) -> NamedSharding:
    return NamedSharding(mesh, nn.logical_to_mesh_axes(tuple(logical), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_axes_size(mesh: Mesh, rules) -> int:
    """How many ways the batch dim is split (the product of the mesh axes ``act_batch`` maps to)."""
    spec = nn.logical_to_mesh_axes(("act_batch",), rules)[0]
    axes = spec if isinstance(spec, tuple) else ((spec,) if spec else ())
    return math.prod(mesh.shape[a] for a in axes)


def host_local_to_global(local: Any, mesh: Mesh, rules) -> Any:
    """Assembles each process's local batch into one global array split along ``act_batch``.

    On one host this is a plain device_put; on a pod every process passes only the examples it read.
    """
    def one(x):
        x = np.asarray(x)
        spec = nn.logical_to_mesh_axes(("act_batch",) + (None,) * (x.ndim - 1), rules)
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x)

    return jax.tree.map(one, local)
