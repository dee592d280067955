"""The objective interface: what the generic train loop needs to know about a training recipe.

An objective owns the loss and the metrics. The train loop (``vitjax.trainer``) owns everything else:
sharding, the optimizer step, checkpoints, logging. A new recipe (MAE, CLIP, DINO...) is a new
``Objective`` subclass registered by name, with no change to the loop.
"""
from __future__ import annotations

import abc
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

_OBJECTIVES: dict[str, Callable[..., "Objective"]] = {}


def register_objective(name: str):
    def wrap(cls):
        _OBJECTIVES[name] = cls
        return cls
    return wrap


def create_objective(cfg: ml_collections.ConfigDict) -> "Objective":
    name = cfg.get("name", "classification")
    if name not in _OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; registered: {sorted(_OBJECTIVES)}")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return _OBJECTIVES[name](**kwargs)


class Objective(abc.ABC):
    """Base class. Subclasses implement ``example_batch``, ``loss`` and ``eval_metrics``.

    Batches are dicts of arrays whose leading dim is the (global) batch; eval batches also hold a
    boolean ``mask`` [B] marking real examples (the last batch is padded to a fixed shape).
    """

    @abc.abstractmethod
    def example_batch(self, model, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes/dtypes of one training batch, derived from the model alone (no data is read, so a
        dry run works before the dataset exists)."""
        raise NotImplementedError

    def init_inputs(self, batch: dict[str, Any]) -> tuple:
        """Positional inputs for ``model.init`` built from a (dummy) batch."""
        return (batch["image"],)

    @abc.abstractmethod
    def loss(self, model, params, batch, rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns (scalar loss, dict of scalar metrics) for one batch."""
        raise NotImplementedError

    @abc.abstractmethod
    def eval_metrics(self, model, params, batch) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Returns {name: (sum over the batch's real examples, count)}; the loop divides at the end."""
        raise NotImplementedError

    # ----------------------------------------------------------- objectives with a state of their own
    #: True for objectives that keep state in ``TrainState.extra`` (a teacher, an EMA of the weights,
    #: a centre): the trainer then calls ``abstract_state``/``init_state`` at start-up,
    #: ``stateful_loss`` instead of ``loss`` and ``update_state`` after each optimizer step. The
    #: state is sharded as ``abstract_state`` says and checkpointed with the rest.
    stateful: bool = False

    def abstract_state(self, trainer, abstract_params, param_shardings) -> tuple[Any, Any]:
        """(shapes/dtypes of the state, its shardings). Called under the mesh + rules context."""
        raise NotImplementedError

    def init_state(self, trainer, params) -> Any:
        """The state's initial value (host or device arrays); ``params`` are the freshly
        initialised (or pretrained) model parameters."""
        raise NotImplementedError

    def stateful_loss(self, model, params, state, batch, rng, *, train: bool, step=None):
        """(scalar loss, metrics, aux): ``aux`` (a pytree of arrays, e.g. a batch mean of teacher
        outputs) goes to ``update_state``. ``step``: the optimizer step (traced), for schedules such
        as DINO's teacher temperature."""
        raise NotImplementedError

    def update_state(self, state, params, aux, step) -> Any:
        """The state after an optimizer step (inside the jitted step). Default: unchanged."""
        del params, aux, step
        return state

    def eval_params(self, params, state) -> Any:
        """The parameters the trainer evaluates at eval steps (``eval_metrics`` and ``extra_evals``):
        the trained ones by default; DINO evaluates its EMA teacher, as the paper does."""
        del state
        return params

    def frozen_until(self, params, steps_per_epoch: int) -> Any:
        """None, or a tree shaped like ``params`` of ints: a parameter gets no update (gradient and
        weight decay zeroed) while the step is below its value (DINO: the last layer in the first
        epoch). Default: None."""
        del params, steps_per_epoch
        return None

    def check_model(self, model) -> None:
        """Start-up checks of the model against the objective's settings (raise ValueError with a
        message naming both sides); the trainer reports them as config errors. Default: none."""

    #: True when ``frozen(params)`` marks parameters that must get no update at all (e.g. LiT's
    #: locked image tower); the trainer then routes them to ``optax.set_to_zero``.
    freezes_params: bool = False

    def frozen(self, params) -> Any:
        """A tree of bools shaped like ``params``: True = keep fixed. Used when ``freezes_params``."""
        return jax.tree.map(lambda _: False, params)

    def extra_evals(self, trainer, params) -> dict[str, float]:
        """Whole-split evaluations that per-batch sums cannot express (kNN, linear probe, zero-shot,
        retrieval), run at every eval step; returns ``{name: value}``, logged as ``eval/<name>``.
        ``trainer.map_batches`` gives features of a whole split. Default: none."""
        return {}


def masked_sum(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    m = mask.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * m), jnp.sum(m)
