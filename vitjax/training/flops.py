"""Model FLOPs per step from XLA's cost analysis, and MFU where the device's peak is known."""
from __future__ import annotations

import math

import jax
import jax.extend

# Dense bf16 peak FLOP/s per device (no sparsity). Sources: NVIDIA H100/A100 datasheets;
# Google Cloud TPU docs (v3, v4, v5e, v5p, v6e pages). See ../shared/notes/perf-anchors.md sec. 1.
PEAK_FLOPS: dict[str, float] = {
    "NVIDIA H100": 989.4e12,
    "NVIDIA H200": 989.4e12,
    "NVIDIA A100": 312e12,
    "TPU v3": 123e12 / 2,      # jax exposes each of the chip's 2 TensorCores as a device
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (e.g. CPU)."""
    device = device or jax.devices()[0]
    kind = getattr(device, "device_kind", "")
    for prefix in sorted(PEAK_FLOPS, key=len, reverse=True):
        if kind.startswith(prefix):
            return PEAK_FLOPS[prefix]
    return None


def compiled_flops(compiled, jaxpr=None) -> float | None:
    """FLOPs of a compiled computation from XLA's cost analysis, if reported.

    XLA counts the body of a loop once, whatever its trip count, so a program with scanned layers
    or micro-batches (``lax.scan``) would be reported several times too cheap. With the step's
    ``jaxpr`` (``jax.jit(f).trace(...).jaxpr``) the figure is scaled by ``loop_factor``."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"]) * (loop_factor(jaxpr) if jaxpr is not None else 1.0)


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def _matmul_flops(jaxpr, unroll: bool) -> float:
    """Matmul/conv FLOPs of a jaxpr (2 per multiply-add), each ``scan`` body counted ``length``
    times (``unroll``) or once (as XLA does); branches of a ``cond`` count their costliest."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, _), _ = eqn.params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in lc)
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            dn = eqn.params["dimension_numbers"]
            out_feature_dim = dn.rhs_spec[0]
            total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / rhs[out_feature_dim]
        elif name == "cond":
            total += max((_matmul_flops(b.jaxpr, unroll) for b in eqn.params["branches"]), default=0.0)
        else:
            inner = sum(_matmul_flops(j, unroll) for j in _sub_jaxprs(eqn))
            total += inner * (eqn.params["length"] if name == "scan" and unroll else 1)
    return total


def loop_factor(jaxpr) -> float:
    """Matmul FLOPs of ``jaxpr`` (a ClosedJaxpr) with every scan run its full length, over the same
    with each scan body once: the factor by which XLA's cost analysis undercounts a looped program."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    once = _matmul_flops(jaxpr, unroll=False)
    return _matmul_flops(jaxpr, unroll=True) / once if once else 1.0


def vit_forward_matmul_flops(model) -> float:
    """Forward matmul FLOPs of one image through a ``ViT`` (2 per multiply-add), counted by hand.

    Patch projection 2*N*(P*P*C)*D; per block: q/k/v 2*T*D*3D, scores 2*T*T*D, weighted values
    2*T*T*D, output projection 2*T*D*D, MLP 2*2*T*D*M; head 2*D*K. Training is ~3x this (the
    backward pass costs two forwards), the convention of Kaplan et al. 2020 and PaLM's MFU.
    """
    n = (model.image_size // model.patch_size) ** 2
    t = n + model.num_prefix_tokens
    d, m = model.width, model.mlp_dim
    patch = 2 * n * model.patch_size ** 2 * model.in_channels * d
    block = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m
    heads = (2 if model.distilled else 1) * 2 * d * model.num_classes
    return float(patch + model.depth * block + heads)


def vit_train_flops(model, batch_size: int) -> float:
    """Model FLOPs of one training step: 3 x forward matmul FLOPs x batch (no remat recompute)."""
    return 3.0 * vit_forward_matmul_flops(model) * batch_size
