"""Supervised classification: softmax cross-entropy with label smoothing, top-1 accuracy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vitjax.objectives.base import Objective, masked_sum, register_objective


@register_objective("classification")
class Classification(Objective):
    """Cross-entropy on ``batch["label"]`` (int [B]) or soft targets ``batch["label_dist"]`` [B, K]
    (mixup/cutmix). Label smoothing (Szegedy et al. 2016) mixes the target with the uniform
    distribution: y' = (1 - eps) y + eps / K."""

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"objective.label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def example_batch(self, model, batch_size):
        size = (batch_size, model.image_size, model.image_size, model.in_channels)
        return {"image": jax.ShapeDtypeStruct(size, jnp.float32),
                "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}

    def _targets(self, batch, num_classes):
        if "label_dist" in batch:
            t = batch["label_dist"].astype(jnp.float32)
        else:
            t = jax.nn.one_hot(batch["label"], num_classes)
        return optax.smooth_labels(t, self.label_smoothing) if self.label_smoothing else t

    def loss(self, model, params, state, batch, rng, *, train, step=None, run=None):
        del state, step, run
        logits = model.apply({"params": params}, batch["image"], train=train, rngs={"dropout": rng})
        logits = logits.astype(jnp.float32)
        targets = self._targets(batch, logits.shape[-1])
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        hard = batch["label"] if "label" in batch else jnp.argmax(targets, -1)
        top1 = (jnp.argmax(logits, -1) == hard).mean()
        return loss, {"loss": loss, "top1": top1}, {}

    def eval_metrics(self, model, params, batch):
        logits = model.apply({"params": params}, batch["image"], train=False).astype(jnp.float32)
        labels = batch["label"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        correct = (jnp.argmax(logits, -1) == labels)
        return {"loss": masked_sum(ce, batch["mask"]), "top1": masked_sum(correct, batch["mask"])}

    def eval_losses(self, model, params, batch):
        logits = model.apply({"params": params}, batch["image"], train=False).astype(jnp.float32)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
