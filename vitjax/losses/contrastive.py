"""Image-text contrastive losses, unsharded (reference) and sharded over the batch mesh axes.

* ``softmax_loss``: CLIP's symmetric InfoNCE (Radford et al. 2021, Figure 3): cross-entropy of each
  image against all texts of the batch and of each text against all images, averaged.
* ``sigmoid_loss``: SigLIP's pairwise sigmoid loss (Zhai et al. 2023, Algorithm 1): every
  image-text pair is an independent binary problem, positive on the diagonal;
  ``-sum log sigmoid(z_ij (t x_i . y_j + b)) / B``.

Inputs are L2-normalised embeddings ``zimg``, ``ztxt`` [B, D], the (already exponentiated and
clamped) logit ``scale`` and, for SigLIP, the ``bias``.

Sharded forms (``jax.shard_map`` over the mesh axes the batch is split on, normally ``data`` and
``fsdp``; each of the n devices holds b = B / n rows):

* ``sharded_softmax_loss``: every device all-gathers the texts ([B, D], cheap) and scores its b
  local images against all B texts: one [b, B] logit block, never [B, B]. Its rows give the
  image->text terms directly; the text->image normalisers (column log-sum-exps over all B images)
  are combined across devices with a [B]-vector log-sum-exp all-reduce. Per-device memory is
  O(b B), the result is the full loss exactly, and autodiff (the all-gather transposes into a
  reduce-scatter, the psum into a broadcast) gives the unsharded loss's gradients.
* ``sharded_sigmoid_loss``: the sigmoid loss needs no normaliser over the row, so the texts can
  travel instead: the text chunks rotate around a ring of devices with ``ppermute`` (n - 1 hops)
  while every device adds the loss of its local images against the chunk it holds, a [b, b]
  block at a time (Zhai et al. 2023, sec. 3.3). Only the carried [b, D] chunk of each hop is saved
  for the backward pass (the loop body is rematerialised): O(b^2) logits plus O(B D) embeddings
  per device, never a [b, B] or [B, B] logit matrix.

``contrastive_loss`` picks the sharded form when the ambient mesh (``jax.set_mesh``) splits the
batch, which is how ``vitjax.objectives.clip`` calls it inside the trainer's jitted step.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.sharding import PartitionSpec as P

__all__ = ["softmax_loss", "sigmoid_loss", "sharded_softmax_loss", "sharded_sigmoid_loss",
           "contrastive_loss", "batch_axes"]


def _f32(*xs):
    return tuple(jnp.asarray(x, jnp.float32) for x in xs)


# --------------------------------------------------------------------------------------- reference


def softmax_loss(zimg, ztxt, scale, *, mask=None, return_metrics: bool = False):
    """Symmetric InfoNCE on one device. ``mask`` [B] bool drops padded rows (and their columns).

    Returns the mean over real pairs of (CE(image -> texts) + CE(text -> images)) / 2, and with
    ``return_metrics`` also ``{"i2t_top1", "t2i_top1"}`` (in-batch retrieval accuracy)."""
    zimg, ztxt, scale = _f32(zimg, ztxt, scale)
    logits = scale * zimg @ ztxt.T                                   # [B, B]
    if mask is not None:
        neg = jnp.finfo(jnp.float32).min
        logits = jnp.where(mask[None, :] & mask[:, None], logits,
                           jnp.where(jnp.eye(logits.shape[0], dtype=bool), 0.0, neg))
    diag = jnp.diagonal(logits)
    i2t = jax.nn.logsumexp(logits, axis=1) - diag
    t2i = jax.nn.logsumexp(logits, axis=0) - diag
    w = jnp.ones_like(diag) if mask is None else mask.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    loss = jnp.sum((i2t + t2i) * w) / (2 * n)
    if not return_metrics:
        return loss
    idx = jnp.arange(logits.shape[0])
    metrics = {"i2t_top1": jnp.sum((jnp.argmax(logits, 1) == idx) * w) / n,
               "t2i_top1": jnp.sum((jnp.argmax(logits, 0) == idx) * w) / n}
    return loss, metrics


def sigmoid_loss(zimg, ztxt, scale, bias, *, mask=None):
    """SigLIP loss on one device: sum over all B x B pairs of -log sigmoid(z (scale x.y + bias)),
    z = +1 on the diagonal and -1 elsewhere, divided by B (the number of real images)."""
    zimg, ztxt, scale, bias = _f32(zimg, ztxt, scale, bias)
    logits = scale * zimg @ ztxt.T + bias
    z = 2.0 * jnp.eye(logits.shape[0]) - 1.0
    nll = -jax.nn.log_sigmoid(z * logits)
    if mask is None:
        return nll.sum() / logits.shape[0]
    m = mask.astype(jnp.float32)
    return jnp.sum(nll * m[:, None] * m[None, :]) / jnp.maximum(m.sum(), 1.0)


# ---------------------------------------------------------------------------------------- sharded


def batch_axes(mesh=None, rules=None) -> tuple[str, ...]:
    """The mesh axes the batch dim is split over: what the logical name ``act_batch`` maps to under
    ``rules`` (default: the active ``nn.logical_axis_rules``), keeping those the mesh has."""
    mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    spec = nn.logical_to_mesh_axes(("act_batch",), rules)[0]
    axes = spec if isinstance(spec, tuple) else ((spec,) if spec else ())
    return tuple(a for a in axes if a in mesh.axis_names)


def _resolve(mesh, axes: Sequence[str] | None):
    mesh = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        raise ValueError("a sharded loss needs a mesh: pass mesh=... or call it under jax.set_mesh(mesh)")
    axes = tuple(axes) if axes is not None else batch_axes(mesh)
    missing = [a for a in axes if a not in mesh.axis_names]
    if missing:
        raise ValueError(f"batch axes {missing} are not axes of the mesh {dict(mesh.shape)}")
    return mesh, axes, math.prod(mesh.shape[a] for a in axes)


def _check_divisible(zimg, n, axes):
    if zimg.shape[0] % n:
        raise ValueError(f"the global batch {zimg.shape[0]} is not divisible by the {n} devices of the "
                         f"batch mesh axes {axes}")


def sharded_softmax_loss(zimg, ztxt, scale, *, mesh=None, axes: Sequence[str] | None = None,
                         return_metrics: bool = False):
    """``softmax_loss`` computed with [B/n, B] logit blocks per device (see the module docstring).

    ``zimg``, ``ztxt`` [B, D] (any sharding; they are split along ``axes``); ``scale`` a scalar."""
    mesh, axes, n = _resolve(mesh, axes)
    _check_divisible(zimg, n, axes)
    if not axes:
        return softmax_loss(zimg, ztxt, scale, return_metrics=return_metrics)

    def local(zi, zt, s):
        zi, zt, s = _f32(zi, zt, s)
        b = zi.shape[0]
        all_t = jax.lax.all_gather(zt, axes, axis=0, tiled=True)        # [B, D]
        labels = jax.lax.axis_index(axes) * b + jnp.arange(b)           # my rows' global indices
        logits = s * zi @ all_t.T                                       # [b, B]: my images vs all texts
        pos = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]   # my b positive pairs
        # image -> text normalisers: my rows are complete.
        row_lse = jax.nn.logsumexp(logits, axis=1)                      # [b]
        # text -> image normalisers: column j sums over all B images, i.e. over every device's rows:
        # a log-sum-exp all-reduce of [B] partial sums (the max only stabilises; no gradient needed).
        col_max = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(logits, axis=0)), axes)      # [B]
        col_lse = jnp.log(jax.lax.psum(jnp.sum(jnp.exp(logits - col_max), axis=0), axes)) + col_max
        total_b = b * n
        # loss = (sum_i row_lse_i - pos_i) + (sum_j col_lse_j - pos_j): each positive counts in both
        # directions. col_lse is already the same on every device, so it is summed once, not psum'd.
        loss = (jax.lax.psum(jnp.sum(row_lse) - 2 * jnp.sum(pos), axes) + jnp.sum(col_lse)) / (2 * total_b)
        if not return_metrics:
            return loss
        acc_i = jax.lax.psum(jnp.sum(jnp.argmax(logits, 1) == labels), axes) / total_b
        acc_t = jax.lax.psum(jnp.sum(pos >= col_max[labels]), axes) / total_b
        return loss, {"i2t_top1": acc_i, "t2i_top1": acc_t}

    row = P(axes, None)
    out_specs = (P(), {"i2t_top1": P(), "t2i_top1": P()}) if return_metrics else P()
    fn = jax.shard_map(local, mesh=mesh, in_specs=(row, row, P()), out_specs=out_specs)
    return fn(zimg, ztxt, jnp.asarray(scale, jnp.float32))


def sharded_sigmoid_loss(zimg, ztxt, scale, bias, *, mesh=None, axes: Sequence[str] | None = None):
    """``sigmoid_loss`` computed by rotating text chunks around the devices with ``ppermute``:
    per-device logits are [B/n, B/n] at any one time (see the module docstring)."""
    mesh, axes, n = _resolve(mesh, axes)
    _check_divisible(zimg, n, axes)
    if not axes:
        return sigmoid_loss(zimg, ztxt, scale, bias)
    ring = [(j, (j + 1) % n) for j in range(n)]   # after k hops a device holds chunk (i - k) mod n

    def local(zi, zt, s, bb):
        zi, zt, s, bb = _f32(zi, zt, s, bb)
        b = zi.shape[0]

        def block(chunk, positive: bool):
            logits = s * zi @ chunk.T + bb                              # [b, b]
            z = (2.0 * jnp.eye(b) - 1.0) if positive else -jnp.ones((b, b))
            return -jnp.sum(jax.nn.log_sigmoid(z * logits))

        @jax.checkpoint      # keep only the carried chunk per hop, recompute the [b, b] block
        def hop(_, carry):
            acc, chunk = carry
            chunk = jax.lax.ppermute(chunk, axes, ring)
            return acc + block(chunk, False), chunk

        acc, _ = jax.lax.fori_loop(1, n, hop, (block(zt, True), zt))
        return jax.lax.psum(acc, axes) / (b * n)

    row = P(axes, None)
    fn = jax.shard_map(local, mesh=mesh, in_specs=(row, row, P(), P()), out_specs=P())
    return fn(zimg, ztxt, jnp.asarray(scale, jnp.float32), jnp.asarray(bias, jnp.float32))


def contrastive_loss(kind: str, zimg, ztxt, scale, bias=None, *, mesh=None,
                     axes: Sequence[str] | None = None):
    """``kind`` "softmax" (returns (loss, {"i2t_top1", "t2i_top1"})) or "sigmoid" (returns
    (loss, {})). Sharded when a mesh is given or active and splits the batch, else on one device."""
    if kind not in ("softmax", "sigmoid"):
        raise ValueError(f"contrastive loss must be 'softmax' or 'sigmoid', got {kind!r}")
    if kind == "sigmoid" and bias is None:
        raise ValueError("the sigmoid loss needs a logit bias: build the model with logit_bias_init "
                         "(e.g. -10, as SigLIP) or create it with create_model('siglip', ...)")
    m = mesh if mesh is not None else jax.sharding.get_abstract_mesh()
    n = 1
    if m is not None and not m.empty:
        axes = tuple(axes) if axes is not None else batch_axes(m)
        n = math.prod(m.shape[a] for a in axes)
    if n == 1:
        if kind == "softmax":
            return softmax_loss(zimg, ztxt, scale, return_metrics=True)
        return sigmoid_loss(zimg, ztxt, scale, bias), {}
    if kind == "softmax":
        return sharded_softmax_loss(zimg, ztxt, scale, mesh=mesh, axes=axes, return_metrics=True)
    return sharded_sigmoid_loss(zimg, ztxt, scale, bias, mesh=mesh, axes=axes), {}
