"""MAE pretraining: masked-patch pixel regression, with kNN and linear-probe evaluation of the encoder.

At every eval step the trainer logs ``eval/loss`` (the masked-patch MSE on the eval split, with a
fixed masking so that curves are comparable) and, when the data has labels, ``eval/knn_top1`` and
``eval/linear_top1`` of the encoder's frozen features (``feature_fn``; the ``knn``, ``ncm`` and
``linear_probe`` evaluators of ``vitjax.evals``, from ``default_evals``): features of the training
split (eval ops, no augmentation; at most ``probe_train_examples``) are the kNN bank and the linear
probe's training set, features of the eval split are scored. ``config.evals`` adds or replaces them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vitjax.models.mae import MAE, masked_mean, patch_mse, pixel_targets
from vitjax.evals.probes import ProbeOptions
from vitjax.objectives.base import Objective, masked_sum, register_objective


@register_objective("mae")
class MaskedAutoencoder(Objective):
    """Attributes:
      probe_pool: "cls" (the paper's linear-probe feature) or "gap" (mean of the patch tokens).
      probe, probe_train_examples, knn_k, knn_temperature, linear_*, num_classes: the probes run at
        eval steps (``vitjax.evals.probes.ProbeOptions``).
    """

    def __init__(self, probe=("knn", "linear"), probe_pool: str = "cls", probe_train_examples=None,
                 knn_k: int = 20, knn_temperature: float = 0.07, linear_epochs: int = 90,
                 linear_batch_size: int = 16384, linear_lr: float = 0.1, linear_optimizer: str = "lars",
                 num_classes=None):
        if probe_pool not in ("cls", "gap"):
            raise ValueError(f"objective.probe_pool={probe_pool!r}; choose 'cls' or 'gap'")
        self.probe_pool = probe_pool
        self.probes = ProbeOptions(probe, probe_train_examples, knn_k, knn_temperature, linear_epochs,
                                   linear_batch_size, linear_lr, linear_optimizer, num_classes)

    @staticmethod
    def _check_model(model):
        if not isinstance(model, MAE):
            raise ValueError(f"objective 'mae' needs an MAE model (config.model.name='mae'), got "
                             f"{type(model).__name__}")

    def example_batch(self, model, batch_size):
        self._check_model(model)
        return {"image": jax.ShapeDtypeStruct((batch_size, model.image_size, model.image_size, model.in_channels),
                                              jnp.float32)}

    def loss(self, model, params, state, batch, rng, *, train, step=None, run=None):
        del state, step, run
        r_mask, r_drop = jax.random.split(rng)
        out = model.apply({"params": params}, batch["image"], train=train,
                          rngs={"masking": r_mask, "dropout": r_drop})
        per_patch = patch_mse(out["pred"], pixel_targets(batch["image"], model.patch_size, model.norm_pix_loss))
        loss = masked_mean(per_patch, out["mask"])
        return loss, {"loss": loss, "visible_mse": masked_mean(per_patch, 1 - out["mask"])}, {}

    def eval_metrics(self, model, params, batch):
        images = batch["image"]
        noise = jax.random.uniform(jax.random.key(0), (images.shape[0], model.num_patches))
        out = model.apply({"params": params}, images, train=False, noise=noise)
        per_patch = patch_mse(out["pred"], pixel_targets(images, model.patch_size, model.norm_pix_loss))
        per_image = masked_mean(per_patch, out["mask"], axis=1)
        return {"loss": masked_sum(per_image, batch["mask"])}

    # ------------------------------------------------------------------------------ evaluation
    def feature_fn(self, model):
        """The encoder's ``probe_pool`` feature of whole (unmasked) images (``MAE.features``)."""
        pool = self.probe_pool
        return lambda p, images: model.apply({"params": p}, images, pool, method=MAE.features)

    def default_evals(self):
        return self.probes.specs()
