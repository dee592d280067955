"""Exact micro-batching for losses that couple the examples of a batch (contrastive: CLIP, SigLIP).

Plain gradient accumulation (``StepFn`` with ``train.micro_batch_size``) averages per-micro-batch
losses, which is exact only when the loss is a mean over examples. A contrastive loss scores every
image against every text of the *global* batch, so a micro-batch must not be contrasted only with
itself. Gradient caching (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", Alg. 1; the ``--accum-freq`` idea in open_clip) splits the step in three:

1. embed every micro-batch without keeping activations (a ``lax.scan`` of forward passes):
   per-example embeddings of the whole batch, [B, D] each, which are small;
2. compute the full-batch loss from those embeddings, and its gradient with respect to the
   embeddings (and to the parameters the loss reads directly, e.g. the logit scale);
3. for each micro-batch again, run the forward pass with a VJP and pull the cached embedding
   gradient back into the parameters, summing over micro-batches.

The loss and gradients equal the full-batch step's (up to float summation order), while the
activations held at any time are one micro-batch's, plus the [B, D] embeddings and the loss's own
temporaries. Step 3 recomputes the forward pass (~1/3 more FLOPs than a plain step).

An objective opts in by defining two methods (``vitjax.objectives.clip.Clip`` does):

* ``embed_for_loss(model, params, state, batch, rng, *, train) -> tree of [b, ...]``: the
  per-example part, one row per example of ``batch``;
* ``loss_from_embeddings(model, params, state, embeddings, *, train, step, run)
  -> (loss, metrics, aux)``: the rest of ``loss`` on the whole batch's embeddings.

Its ``loss`` must equal ``loss_from_embeddings(embed_for_loss(...))``. Dropout keys: micro-batch i
uses ``fold_in(rng, i)`` in steps 1 and 3, so both passes see the same masks.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def supports_gradient_caching(objective) -> bool:
    return callable(getattr(objective, "embed_for_loss", None)) and \
        callable(getattr(objective, "loss_from_embeddings", None))


def _merge(x):
    """[n, b, ...] micro-batch rows -> [n * b, ...] in the batch's row order (the inverse of the
    split in ``StepFn``: micro-batch i holds rows i, i + n, i + 2n...)."""
    x = x.swapaxes(0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
    return nn.with_logical_constraint(x, ("act_batch",) + (None,) * (x.ndim - 1))


def cached_loss_and_grads(objective, model, params, extra, micro, rng, n: int, split, *, step, run
                          ) -> tuple[Any, Any, Any, Any]:
    """(loss, metrics, aux, grads) of the full batch, computed micro-batch by micro-batch.

    Args:
      micro: the batch split into ``n`` micro-batches, every leaf [n, B / n, ...].
      split: the function that split it ([B, ...] -> [n, B / n, ...]); used on the embeddings'
        gradients so they line up with ``micro``.
    """
    def embed(p, b, i):
        return objective.embed_for_loss(model, p, extra, b, jax.random.fold_in(rng, i), train=True)

    # 1. every micro-batch's embeddings; no VJP here, so no activations outlive a scan iteration.
    _, embs = jax.lax.scan(lambda c, xs: (c, embed(params, *xs)), None, (micro, jnp.arange(n)))
    full = jax.tree.map(_merge, embs)

    # 2. the full-batch loss and its gradients w.r.t. the embeddings and the params it reads itself.
    def head(p, e):
        loss, metrics, aux = objective.loss_from_embeddings(model, p, extra, e, train=True, step=step, run=run)
        return loss, (metrics, aux)

    (loss, (metrics, aux)), (g_params, g_embs) = jax.value_and_grad(head, argnums=(0, 1), has_aux=True)(
        params, full)
    g_micro = jax.tree.map(split, g_embs)

    # 3. back-propagate each micro-batch's share of the embedding gradient.
    def body(acc, xs):
        b, i, g = xs
        _, vjp = jax.vjp(lambda p: embed(p, b, i), params)
        return jax.tree.map(jnp.add, acc, vjp(g)[0]), None

    acc0 = jax.tree.map(lambda g: g.astype(jnp.float32), g_params)
    grads, _ = jax.lax.scan(body, acc0, (micro, jnp.arange(n), g_micro))
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return loss, metrics, aux, grads
