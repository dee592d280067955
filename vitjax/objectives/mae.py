"""MAE pretraining: masked-patch pixel regression, with kNN and linear-probe evaluation of the encoder.

At every eval step the trainer logs ``eval/loss`` (the masked-patch MSE on the eval split, with a
fixed masking so that curves are comparable) and, when the data has labels, ``eval/knn_top1`` and
``eval/linear_top1`` of the encoder's frozen features (``vitjax.evals.representation``): features
of the training split (eval ops, no augmentation; at most ``probe_train_examples``) are the kNN bank
and the linear probe's training set, features of the eval split are scored.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp

from vitjax.evals.representation import representation_evals
from vitjax.models.mae import MAE, masked_mean, patch_mse, pixel_targets
from vitjax.objectives.base import Objective, masked_sum, register_objective

log = logging.getLogger("vitjax")


@register_objective("mae")
class MaskedAutoencoder(Objective):
    """Attributes:
      probe: representation evaluations run at eval steps: any of "knn", "linear", "ncm"; () for none.
      probe_pool: "cls" (the paper's linear-probe feature) or "gap" (mean of the patch tokens).
      probe_train_examples: cap on the training examples embedded for the probes (None: all).
      knn_k, knn_temperature: DINO's kNN (k=20, T=0.07).
      linear_epochs, linear_batch_size, linear_lr, linear_optimizer: the linear probe (MAE App. A.2:
        90 epochs, LARS, base lr 0.1, batch 16384, BatchNorm without affine; LARS underfits small
        sets such as the digits, where SGD with momentum is the better choice).
    """

    def __init__(self, probe=("knn", "linear"), probe_pool: str = "cls", probe_train_examples=None,
                 knn_k: int = 20, knn_temperature: float = 0.07, linear_epochs: int = 90,
                 linear_batch_size: int = 16384, linear_lr: float = 0.1, linear_optimizer: str = "lars",
                 num_classes=None):
        if probe_pool not in ("cls", "gap"):
            raise ValueError(f"objective.probe_pool={probe_pool!r}; choose 'cls' or 'gap'")
        self.probe = tuple(probe or ())
        for m in self.probe:
            if m not in ("knn", "linear", "ncm"):
                raise ValueError(f"objective.probe has {m!r}; choose from knn, linear, ncm")
        self.probe_pool = probe_pool
        self.probe_train_examples = probe_train_examples
        self.knn_k, self.knn_temperature = int(knn_k), float(knn_temperature)
        self.linear_epochs, self.linear_batch_size = int(linear_epochs), int(linear_batch_size)
        self.linear_lr = float(linear_lr)
        self.linear_optimizer = linear_optimizer
        self.num_classes = num_classes

    @staticmethod
    def _check_model(model):
        if not isinstance(model, MAE):
            raise ValueError(f"objective 'mae' needs an MAE model (config.model.name='mae'), got "
                             f"{type(model).__name__}")

    def example_batch(self, model, batch_size):
        self._check_model(model)
        return {"image": jax.ShapeDtypeStruct((batch_size, model.image_size, model.image_size, model.in_channels),
                                              jnp.float32)}

    def loss(self, model, params, batch, rng, *, train):
        r_mask, r_drop = jax.random.split(rng)
        out = model.apply({"params": params}, batch["image"], train=train,
                          rngs={"masking": r_mask, "dropout": r_drop})
        per_patch = patch_mse(out["pred"], pixel_targets(batch["image"], model.patch_size, model.norm_pix_loss))
        loss = masked_mean(per_patch, out["mask"])
        return loss, {"loss": loss, "visible_mse": masked_mean(per_patch, 1 - out["mask"])}

    def eval_metrics(self, model, params, batch):
        images = batch["image"]
        noise = jax.random.uniform(jax.random.key(0), (images.shape[0], model.num_patches))
        out = model.apply({"params": params}, images, train=False, noise=noise)
        per_patch = patch_mse(out["pred"], pixel_targets(images, model.patch_size, model.norm_pix_loss))
        per_image = masked_mean(per_patch, out["mask"], axis=1)
        return {"loss": masked_sum(per_image, batch["mask"])}

    def features(self, trainer, params, source):
        pool = self.probe_pool
        model = trainer.model

        def fn(p, b):
            return {"feat": model.apply({"params": p}, b["image"], pool, method=MAE.features)}
        limit = self.probe_train_examples if source is trainer.train_source else None
        return trainer.map_batches(f"mae_features_{pool}", fn, params, source, max_examples=limit)

    def extra_evals(self, trainer, params):
        if not self.probe or trainer.eval_source is None:
            return {}
        train = self.features(trainer, params, trainer.train_source)
        test = self.features(trainer, params, trainer.eval_source)
        if "label" not in train or "label" not in test:
            return {}            # unlabelled data: reconstruction loss only
        return representation_evals(
            train["feat"], train["label"], test["feat"], test["label"], methods=self.probe,
            num_classes=self.num_classes, knn_k=self.knn_k, knn_temperature=self.knn_temperature,
            linear_epochs=self.linear_epochs, linear_batch_size=self.linear_batch_size, linear_lr=self.linear_lr,
            linear_optimizer=self.linear_optimizer)
