"""Frozen-feature evaluators: ``knn``, ``ncm`` and ``linear_probe`` (numerics: ``representation``).

    config.evals.knn = dict(type="knn", k=20)                    # -> eval/knn_top1
    config.evals.linear = dict(type="linear_probe", epochs=90)   # -> eval/linear_top1

Each embeds a training split (the kNN bank / probe training set; eval ops, no augmentation) and a
test split with the objective's frozen features (``Objective.feature_fn``: a classifier's pooled
features before its head, MAE's ``probe_pool`` feature, DINO's backbone class token, CLIP's image
tower) and logs ``top1`` on the test split. Evaluators of one evaluation share the embeddings of the
same (split, ops, cap).

``ProbeOptions`` turns MAE's and DINO's ``objective.probe*`` / ``knn_*`` / ``linear_*`` options into
these evaluators' specs (``Objective.default_evals``), and ``python -m vitjax.probe`` its flags.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vitjax.evals import representation as rep
from vitjax.evals.base import EvalRun, Evaluator
from vitjax.evals.registry import register_evaluator

PROBE_TYPES = {"knn": "knn", "ncm": "ncm", "linear": "linear_probe"}     # probe method -> evaluator type
LINEAR_OPTIMIZERS = ("lars", "sgd", "adamw")


class FrozenFeatures(Evaluator):
    """Options shared by the frozen-feature evaluators:

      train_data: ``get_source`` kwargs of the training split (default: the run's training data).
      test_data: ``get_source`` kwargs of the scored split (default: the run's eval split).
      ops: preprocessing of both (default: ``config.input.eval_ops`` without ``tokenize``).
      max_train_examples, max_test_examples: caps on the examples embedded (default: all).
      num_classes: of the labels (default: the largest training label + 1).
      missing_labels: "error" (default) or "skip" (log nothing) when a split has no labels.
    """

    def __init__(self, name, *, train_data=None, test_data=None, ops=None, max_train_examples=None,
                 max_test_examples=None, num_classes=None, missing_labels: str = "error", **common):
        super().__init__(name, **common)
        if missing_labels not in ("error", "skip"):
            raise ValueError(f"{self.origin}.missing_labels={missing_labels!r}; choose 'error' or 'skip'")
        self.train_data, self.test_data, self.ops = train_data, test_data, ops
        self.max_train_examples, self.max_test_examples = max_train_examples, max_test_examples
        self.num_classes = None if num_classes is None else int(num_classes)
        self.missing_labels = missing_labels

    def __call__(self, run: EvalRun) -> dict[str, float]:
        train = run.features(self.train_data, "train", self.ops, self.max_train_examples,
                             where=f"{self.origin}.train_data")
        test = run.features(self.test_data, "eval", self.ops, self.max_test_examples,
                            where=f"{self.origin}.test_data")
        if "label" not in train or "label" not in test:
            if self.missing_labels == "skip":
                return {}
            raise ValueError(f"evaluator {self.name!r}: its splits need a 'label' feature; set "
                             f"{self.origin}.train_data / test_data to labelled splits or {self.origin}=None")
        return self.score(train["feat"], train["label"], test["feat"], test["label"])

    def score(self, train_feats, train_labels, test_feats, test_labels) -> dict[str, float]:
        raise NotImplementedError


@register_evaluator("knn")
class Knn(FrozenFeatures):
    """Weighted k-nearest-neighbour top-1 (Wu et al. 2018, as DINO evaluates: Caron et al. 2021,
    Sec. 4.1): cosine similarity, the ``k`` nearest training features vote with weight exp(sim / T).

    Options: k=20, temperature=0.07 (DINO's), and the ``FrozenFeatures`` options. Metric: ``top1``.
    """

    def __init__(self, name, *, k: int = 20, temperature: float = 0.07, **options):
        super().__init__(name, **options)
        self.k, self.temperature = int(k), float(temperature)
        if self.k < 1 or self.temperature <= 0:
            raise ValueError(f"{self.origin}: k={k} must be >= 1 and temperature={temperature} > 0")

    def score(self, train_feats, train_labels, test_feats, test_labels):
        return {"top1": rep.knn_top1(train_feats, train_labels, test_feats, test_labels, k=self.k,
                                     temperature=self.temperature, num_classes=self.num_classes)}


@register_evaluator("ncm")
class Ncm(FrozenFeatures):
    """Nearest class mean top-1: each class is the mean of its L2-normalised training features; a test
    feature takes the most cosine-similar class. Options: the ``FrozenFeatures`` options. Metric:
    ``top1``."""

    def score(self, train_feats, train_labels, test_feats, test_labels):
        return {"top1": rep.ncm_top1(train_feats, train_labels, test_feats, test_labels, self.num_classes)}


@register_evaluator("linear_probe")
class LinearProbe(FrozenFeatures):
    """Linear softmax classifier on frozen, standardised features, MAE's recipe (He et al. 2021,
    App. A.2): BatchNorm without affine, LARS, batch 16384 (capped at N), base lr 0.1 x batch / 256,
    10 warm-up epochs then cosine, 90 epochs, no weight decay. (LARS underfits small sets such as the
    digits, where ``optimizer="sgd"`` is the better choice.)

    Options: epochs=90, batch_size=16384, lr=0.1 (base lr), optimizer="lars" (or "sgd", "adamw"),
    weight_decay=0.0, warmup_epochs=10, seed=0, and the ``FrozenFeatures`` options. Metric: ``top1``.
    """

    def __init__(self, name, *, epochs: int = 90, batch_size: int = 16384, lr: float = 0.1,
                 optimizer: str = "lars", weight_decay: float = 0.0, warmup_epochs: int = 10, seed: int = 0,
                 **options):
        super().__init__(name, **options)
        if optimizer not in LINEAR_OPTIMIZERS:
            raise ValueError(f"{self.origin}.optimizer={optimizer!r}; choose lars, sgd or adamw")
        self.kw = dict(epochs=int(epochs), batch_size=int(batch_size), base_lr=float(lr), optimizer=optimizer,
                       weight_decay=float(weight_decay), warmup_epochs=int(warmup_epochs), seed=int(seed))

    def score(self, train_feats, train_labels, test_feats, test_labels):
        out = rep.linear_probe(train_feats, train_labels, test_feats, test_labels, num_classes=self.num_classes,
                               **self.kw)
        return {"top1": out["top1"]}


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
    """MAE's and DINO's probe options (``objective.<field>``), run at eval steps as evaluators.

    Attributes:
      probe: any of "knn", "ncm", "linear" (logged as ``eval/<method>_top1``); () for none.
      probe_train_examples: cap on the training examples embedded for the probes (None: all).
      knn_k, knn_temperature: DINO's weighted kNN (k=20, T=0.07).
      linear_epochs, linear_batch_size, linear_lr, linear_optimizer: the linear probe (MAE App. A.2:
        90 epochs, LARS, base lr 0.1, batch 16384; see ``LinearProbe``).
      num_classes: of the labels (None: the largest label + 1).
    Unlabelled data logs none of them.
    """
    probe: tuple = ("knn", "linear")
    probe_train_examples: int | None = None
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 90
    linear_batch_size: int = 16384
    linear_lr: float = 0.1
    linear_optimizer: str = "lars"
    num_classes: int | None = None

    def __post_init__(self):
        probe = tuple(self.probe or ())
        for m in probe:
            if m not in PROBE_TYPES:
                raise ValueError(f"objective.probe has {m!r}; choose from knn, linear, ncm")
        if self.linear_optimizer not in LINEAR_OPTIMIZERS:
            raise ValueError(f"objective.linear_optimizer={self.linear_optimizer!r}; choose lars, sgd or adamw")
        object.__setattr__(self, "probe", probe)

    def specs(self, missing_labels: str = "skip", origin: str = "objective.probe") -> dict[str, dict]:
        """``{method: evaluator spec}`` for the configured methods, in their order."""
        common = dict(max_train_examples=self.probe_train_examples, num_classes=self.num_classes,
                      missing_labels=missing_labels, origin=origin)
        extra = {"knn": dict(k=self.knn_k, temperature=self.knn_temperature),
                 "ncm": {},
                 "linear": dict(epochs=self.linear_epochs, batch_size=self.linear_batch_size, lr=self.linear_lr,
                                optimizer=self.linear_optimizer)}
        return {m: dict(type=PROBE_TYPES[m], **extra[m], **common) for m in self.probe}


def representation_cap(specs: dict[str, dict]) -> int | None:
    """The training-split cap of the first frozen-feature evaluator among ``specs`` (None: none)."""
    for spec in specs.values():
        if spec and spec.get("type") in PROBE_TYPES.values():
            return spec.get("max_train_examples")
    return None


def feature_sizes(train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> dict[str, int]:
    return dict(features=int(train["feat"].shape[-1]), train_examples=int(len(train["feat"])),
                test_examples=int(len(test["feat"])))
