"""Representation evaluations at eval steps, shared by the self-supervised objectives (MAE, DINO).

At every eval step ``extra_evals`` embeds the training split (eval ops, no augmentation; at most
``probe_train_examples``) and the eval split with the objective's frozen features and logs
``eval/knn_top1``, ``eval/ncm_top1`` and ``eval/linear_top1`` (``vitjax.evals.representation``).
Unlabelled data gives none of them.
"""
from __future__ import annotations

from vitjax.evals.representation import representation_evals
from vitjax.objectives.base import Objective

PROBE_METHODS = ("knn", "linear", "ncm")


class ProbedObjective(Objective):
    """An objective whose model is scored by frozen-feature probes. Subclasses implement
    ``feature_fn(model)`` -> ``fn(params, images) -> [B, D]`` and call ``init_probes``.

    Probe settings:
      probe: any of "knn", "linear", "ncm"; () for none.
      probe_train_examples: cap on the training examples embedded for the probes (None: all).
      knn_k, knn_temperature: DINO's weighted kNN (k=20, T=0.07).
      linear_epochs, linear_batch_size, linear_lr, linear_optimizer: the linear probe (MAE App. A.2:
        90 epochs, LARS, base lr 0.1, batch 16384, BatchNorm without affine; LARS underfits small
        sets such as the digits, where SGD with momentum is the better choice).
      num_classes: of the labels (None: the largest label + 1).
    """

    def init_probes(self, probe=("knn", "linear"), probe_train_examples=None, knn_k: int = 20,
                    knn_temperature: float = 0.07, linear_epochs: int = 90, linear_batch_size: int = 16384,
                    linear_lr: float = 0.1, linear_optimizer: str = "lars", num_classes=None):
        self.probe = tuple(probe or ())
        for m in self.probe:
            if m not in PROBE_METHODS:
                raise ValueError(f"objective.probe has {m!r}; choose from knn, linear, ncm")
        if linear_optimizer not in ("lars", "sgd", "adamw"):
            raise ValueError(f"objective.linear_optimizer={linear_optimizer!r}; choose lars, sgd or adamw")
        self.probe_train_examples = probe_train_examples
        self.knn_k, self.knn_temperature = int(knn_k), float(knn_temperature)
        self.linear_epochs, self.linear_batch_size = int(linear_epochs), int(linear_batch_size)
        self.linear_lr = float(linear_lr)
        self.linear_optimizer = linear_optimizer
        self.num_classes = num_classes

    def feature_fn(self, model):
        raise NotImplementedError

    def feature_name(self) -> str:
        return type(self).__name__.lower()

    def features(self, trainer, params, source, max_examples=None):
        """{"feat": [N, D], "label": [N]} of a whole split under ``params``: at most ``max_examples``
        when given, else at most ``probe_train_examples`` of the training split."""
        f = self.feature_fn(trainer.model)
        limit = max_examples
        if limit is None and source is trainer.train_source:
            limit = self.probe_train_examples
        return trainer.map_batches(f"features_{self.feature_name()}", lambda p, b: {"feat": f(p, b["image"])},
                                   params, source, max_examples=limit)

    def extra_evals(self, trainer, params):
        if not self.probe or trainer.eval_source is None:
            return {}
        train = self.features(trainer, params, trainer.train_source)
        test = self.features(trainer, params, trainer.eval_source)
        if "label" not in train or "label" not in test:
            return {}            # unlabelled data: no probes
        return representation_evals(
            train["feat"], train["label"], test["feat"], test["label"], methods=self.probe,
            num_classes=self.num_classes, knn_k=self.knn_k, knn_temperature=self.knn_temperature,
            linear_epochs=self.linear_epochs, linear_batch_size=self.linear_batch_size, linear_lr=self.linear_lr,
            linear_optimizer=self.linear_optimizer)
