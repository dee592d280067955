"""The objective interface: what the generic train loop needs to know about a training recipe.

An objective owns the loss, the metrics, and any state of its own (a teacher, an EMA, a centre).
The train loop (``vitjax.training.trainer``) owns everything else: sharding, the optimizer step,
checkpoints, logging, evaluation. A new recipe (MAE, CLIP, DINO...) is a new ``Objective`` subclass
registered by name, with no change to the loop. Objectives never see the trainer: they get the
model and a frozen ``RunInfo`` (mesh, rules, schedule length, batch sizes).

One loss signature serves every objective:

    loss(model, params, state, batch, rng, *, train, step, run) -> (loss, metrics, aux)

``state`` is the objective's own state (``{}`` when it keeps none); ``aux`` (a pytree of arrays) goes
to ``update_state`` after the optimizer step.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vitjax.registry import Registry

OBJECTIVES = Registry("objective", unknown_message="unknown objective {name!r}; nearest: {near}; "
                                                   "registered: {names}")


def register_objective(name: str):
    return OBJECTIVES.register(name)


def create_objective(cfg: ml_collections.ConfigDict) -> "Objective":
    cfg = dict(cfg)
    return OBJECTIVES.get(cfg.pop("name", "classification"))(**cfg)


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What an objective may know about the run it is part of.

    Attributes:
      mesh: the device mesh; rules: the logical-axis rules table (``vitjax.sharding``).
      steps_per_epoch, total_steps: the schedule (DINO's temperature and momentum follow it).
      batch_size, eval_batch_size: global batch sizes.
    """
    mesh: Mesh
    rules: tuple
    steps_per_epoch: int
    total_steps: int
    batch_size: int
    eval_batch_size: int

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())


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
    def loss(self, model, params, state, batch, rng: jax.Array, *, train: bool, step, run: RunInfo
             ) -> tuple[jax.Array, dict[str, jax.Array], Any]:
        """(scalar loss, dict of scalar metrics, aux) for one batch. ``state``: the objective's state
        (``{}`` when it keeps none); ``step``: the optimizer step (traced), for schedules such as
        DINO's teacher temperature; ``aux``: a pytree of arrays for ``update_state`` (``{}``)."""
        raise NotImplementedError

    @abc.abstractmethod
    def eval_metrics(self, model, params, batch) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Returns {name: (sum over the batch's real examples, count)}; the loop divides at the end."""
        raise NotImplementedError

    def eval_losses(self, model, params, batch) -> jax.Array | None:
        """Per-example eval losses [B] (for standard errors of the eval loss), or None when the
        objective has no per-example loss. Default: None."""
        del model, params, batch
        return None

    # ------------------------------------------------------------------ an objective's own state
    def abstract_state(self, model, run: RunInfo, abstract_params, param_shardings) -> tuple[Any, Any]:
        """(shapes/dtypes of the objective's state, its shardings); ``({}, {})`` when it keeps none.
        Called under the mesh + rules context. The state lives in ``TrainState.extra``: sharded as
        said here, checkpointed with the run, passed to ``loss`` and updated by ``update_state``."""
        del model, run, abstract_params, param_shardings
        return {}, {}

    def init_state(self, model, run: RunInfo, params) -> Any:
        """The state's initial value (host or device arrays); ``params`` are the freshly
        initialised (or pretrained) model parameters. Default: ``{}``."""
        del model, run, params
        return {}

    def update_state(self, state, params, aux, step, run: RunInfo) -> Any:
        """The state after an optimizer step (inside the jitted step). Default: unchanged."""
        del params, aux, step, run
        return state

    def eval_params(self, params, state) -> Any:
        """The parameters evaluated at eval steps: the trained ones by default; DINO evaluates its
        EMA teacher, as the paper does."""
        del state
        return params

    # ---------------------------------------------------------------------- what trains at all
    def frozen_until(self, params, run: RunInfo) -> Any:
        """None, or a tree shaped like ``params`` of ints: a parameter gets no update (gradient and
        weight decay zeroed) while the step is below its value (DINO: the last layer in the first
        epoch). Default: None."""
        del params, run
        return None

    def frozen(self, params) -> Any:
        """None, or a tree of bools shaped like ``params``: True = never updated, weight decay
        included (LiT's locked image tower). Default: None."""
        del params
        return None

    def check_model(self, model) -> None:
        """Start-up checks of the model against the objective's settings (raise ValueError with a
        message naming both sides); the trainer reports them as config errors. Default: none."""

    def check_batch(self, model, batch) -> None:
        """Check of the first training batch (arrays or ShapeDtypeStructs) before the step compiles:
        a ValueError naming both per-example shapes when the data do not fit ``example_batch`` (e.g.
        3-channel images for a 1-channel model, or ops that resize to another size than
        ``model.image_size``); the trainer reports it as a config error. Objectives with their own
        batch layout (DINO's crops) check it first with a more specific message."""
        for key, want in self.example_batch(model, batch[next(iter(batch))].shape[0]).items():
            if key not in batch:
                continue
            got, need = tuple(batch[key].shape[1:]), tuple(want.shape[1:])
            if got != need:
                raise ValueError(
                    f"the data give '{key}' of shape {got} per example but the model expects {need}: make "
                    f"input.train_ops produce {need} (their resize/crop size, and the channels: 'to_rgb' "
                    f"for 3) or set model.image_size / model.in_channels to match the data")

    # ------------------------------------------------------------------------------ evaluation
    #: The batch key ``feature_fn`` reads ("tokens" for autoregressive models over pixel tokens).
    feature_input = "image"

    def feature_fn(self, model):
        """``fn(params, images [B, H, W, C]) -> [B, D]``: the frozen features that representation
        evaluators (kNN, NCM, linear probe) score. Default: the model's pooled features before its
        head (``model.apply(..., output="features")``)."""
        return lambda p, images: model.apply({"params": p}, images, output="features")

    def default_evals(self) -> dict[str, dict]:
        """Evaluator specs this objective runs at eval steps unless ``config.evals`` overrides them,
        ``{name: dict(type=..., ...)}`` (``vitjax.evals``). Default: none."""
        return {}


def masked_sum(values: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    m = mask.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * m), jnp.sum(m)
