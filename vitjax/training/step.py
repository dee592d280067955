"""The train step: loss and gradients (with micro-batch accumulation), the optimizer update, and the
objective's state update. Pure functions of their arguments; the trainer jits them with explicit
shardings (``vitjax.training.trainer``)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from vitjax.objectives.base import Objective, RunInfo
from vitjax.training.gradcache import cached_loss_and_grads, supports_gradient_caching


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    extra: Any  # objective-owned state (e.g. an EMA teacher); {} for plain classification


@dataclasses.dataclass(frozen=True, eq=False)   # hashed by identity, as jit caches it
class StepFn:
    """One training step for a model + objective + optimizer (a callable for ``jax.jit``).

    Attributes:
      num_micro: micro-batches per step (``train.micro_batch_size``); 1 = no accumulation.
      seed, prng_impl: the dropout/masking keys are ``fold_in(key(seed + 1), step)``.
    """
    model: Any
    objective: Objective
    tx: optax.GradientTransformation
    lr_fn: Callable
    run: RunInfo
    num_micro: int
    seed: int
    prng_impl: str

    def loss_and_grads(self, params, batch, rng, extra=None, step=None):
        """(loss, metrics, aux, grads), averaged over ``num_micro`` micro-batches.

        Accumulation is a ``lax.scan`` inside the jitted step, so the global batch (and the update)
        stays the same while activation memory shrinks by the number of micro-batches. An objective
        whose loss couples the examples (contrastive) and defines ``embed_for_loss`` /
        ``loss_from_embeddings`` gets gradient caching instead (``vitjax.training.gradcache``): the
        full-batch loss and gradients, exactly. ``extra`` is
        the objective's own state; ``aux`` is what the objective returns for its state update
        (averaged like the metrics); ``step`` (traced) drives the objective's own schedules.
        """
        extra = {} if extra is None else extra

        def loss_fn(p, b, r):
            loss, metrics, aux = self.objective.loss(self.model, p, extra, b, r, train=True, step=step,
                                                     run=self.run)
            return loss, (metrics, aux)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        n = self.num_micro
        if n == 1:
            (loss, (metrics, aux)), grads = grad_fn(params, batch, rng)
            return loss, metrics, aux, grads

        def split(x):
            # Micro-batch i takes rows i, i+n, i+2n...: every device keeps an equal slice of each.
            x = x.reshape((x.shape[0] // n, n) + x.shape[1:]).swapaxes(0, 1)
            return nn.with_logical_constraint(x, (None, "act_batch") + (None,) * (x.ndim - 2))

        micro = jax.tree.map(split, batch)
        if supports_gradient_caching(self.objective):
            return cached_loss_and_grads(self.objective, self.model, params, extra, micro, rng, n, split,
                                         step=step, run=self.run)

        def body(carry, xs):
            b, i = xs
            (l, (m, a)), g = grad_fn(params, b, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, carry, (l, m, a, g)), None

        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: grad_fn(params, first, rng))
        (l_s, (m_s, a_s)), g_s = shapes
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), (l_s, m_s, a_s, g_s))
        (loss, metrics, aux, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(n)))
        scale = lambda t: jax.tree.map(lambda x: x / n, t)  # noqa: E731
        grads = jax.tree.map(lambda g, p: (g / n).astype(p.dtype), grads, params)
        return loss / n, scale(metrics), scale(aux), grads

    def __call__(self, state: TrainState, batch):
        rng = jax.random.fold_in(jax.random.key(self.seed + 1, impl=self.prng_impl), state.step)
        loss, metrics, aux, grads = self.loss_and_grads(state.params, batch, rng, state.extra, state.step)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra = self.objective.update_state(state.extra, params, aux, state.step, self.run)
        out = {f"train/{k}": v for k, v in metrics.items()}
        out.update({"train/grad_norm": grad_norm, "train/lr": self.lr_fn(state.step),
                    "train/finite": jnp.isfinite(loss) & jnp.isfinite(grad_norm)})
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, extra=extra), out
