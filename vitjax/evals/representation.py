"""Frozen-feature evaluations: kNN, nearest class mean, linear probe.

Inputs are numpy features of a whole split, [N, D] (the ``knn``, ``ncm`` and ``linear_probe``
evaluators of ``vitjax.evals.probes`` embed them). Everything runs on the default device with
jitted, chunked jnp, so a 1.28M x 768 ImageNet bank is scored chunk by chunk without an
N_test x N_train matrix in memory.

- ``knn_top1``: the weighted kNN of Wu et al. 2018 as DINO uses it (Caron et al. 2021, Sec. 4.1 and
  their eval_knn.py): cosine similarity, the k = 20 nearest training features vote with weight
  exp(sim / T), T = 0.07.
- ``ncm_top1``: nearest class mean: each class is the mean of its (L2-normalised) training
  features; a test feature takes the class of the most cosine-similar mean.
- ``linear_probe``: a linear softmax classifier on frozen features. MAE's recipe (He et al. 2021,
  App. A.2): a BatchNorm without affine parameters before the classifier (here: standardising with
  the training set's mean and variance, which is what that BatchNorm's statistics converge to for
  fixed features), LARS, batch 16384 (capped at N), base lr 0.1 x batch / 256, cosine schedule, no
  weight decay.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _l2n(x):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _check(train_feats, train_labels, test_feats, test_labels):
    if len(train_feats) == 0 or len(test_feats) == 0:
        raise ValueError(f"need features of both splits, got {len(train_feats)} train and {len(test_feats)} test")
    if len(train_feats) != len(train_labels) or len(test_feats) != len(test_labels):
        raise ValueError("features and labels differ in length")
    if train_feats.shape[1:] != test_feats.shape[1:]:
        raise ValueError(f"train features {train_feats.shape} and test features {test_feats.shape} differ in width")


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_chunk(bank, bank_labels, q, k, temperature, num_classes):
    sim = _l2n(q) @ bank.T                                          # [q, N]
    top, idx = jax.lax.top_k(sim, k)
    votes = jax.nn.one_hot(bank_labels[idx], num_classes) * jnp.exp(top / temperature)[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=-1)


def knn_predict(train_feats, train_labels, test_feats, *, k: int = 20, temperature: float = 0.07,
                num_classes: int | None = None, chunk: int = 1024) -> np.ndarray:
    """Predicted labels [N_test] by temperature-weighted cosine kNN."""
    num_classes = int(num_classes or int(np.max(train_labels)) + 1)
    k = min(int(k), len(train_feats))
    bank = _l2n(jnp.asarray(train_feats, jnp.float32))
    labels = jnp.asarray(train_labels, jnp.int32)
    out = []
    for s in range(0, len(test_feats), chunk):
        q = jnp.asarray(test_feats[s:s + chunk], jnp.float32)
        out.append(np.asarray(_knn_chunk(bank, labels, q, k, temperature, num_classes)))
    return np.concatenate(out)


def knn_top1(train_feats, train_labels, test_feats, test_labels, **kw) -> float:
    _check(train_feats, train_labels, test_feats, test_labels)
    return float(np.mean(knn_predict(train_feats, train_labels, test_feats, **kw) == np.asarray(test_labels)))


def ncm_top1(train_feats, train_labels, test_feats, test_labels, num_classes: int | None = None) -> float:
    _check(train_feats, train_labels, test_feats, test_labels)
    num_classes = int(num_classes or int(np.max(train_labels)) + 1)
    f = np.asarray(_l2n(jnp.asarray(train_feats, jnp.float32)))
    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(train_labels)]
    means = (onehot.T @ f) / np.maximum(onehot.sum(0)[:, None], 1.0)
    means = np.asarray(_l2n(jnp.asarray(means)))
    pred = np.argmax(np.asarray(_l2n(jnp.asarray(test_feats, jnp.float32))) @ means.T, axis=1)
    return float(np.mean(pred == np.asarray(test_labels)))


def linear_probe(train_feats, train_labels, test_feats, test_labels, *, num_classes: int | None = None,
                 epochs: int = 90, batch_size: int = 16384, base_lr: float = 0.1, weight_decay: float = 0.0,
                 warmup_epochs: int = 10, seed: int = 0, optimizer: str = "lars") -> dict[str, float]:
    """Trains a linear classifier on standardised frozen features; returns train and test top-1."""
    _check(train_feats, train_labels, test_feats, test_labels)
    num_classes = int(num_classes or int(np.max(train_labels)) + 1)
    xtr = np.asarray(train_feats, np.float32)
    mean, std = xtr.mean(0), np.sqrt(xtr.var(0) + 1e-6)          # BatchNorm without affine, frozen
    xtr = (xtr - mean) / std
    xte = (np.asarray(test_feats, np.float32) - mean) / std
    ytr = np.asarray(train_labels, np.int32)
    n, d = xtr.shape
    bs = min(int(batch_size), n)
    steps_per_epoch = max(1, n // bs)
    total = epochs * steps_per_epoch
    lr = base_lr * bs / 256
    warm = min(warmup_epochs * steps_per_epoch, total // 2)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(warm, 1), total)
    if optimizer == "lars":
        tx = optax.lars(sched, weight_decay=weight_decay, momentum=0.9)
    elif optimizer == "sgd":
        tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(sched, momentum=0.9))
    elif optimizer == "adamw":
        tx = optax.adamw(sched, weight_decay=weight_decay)
    else:
        raise ValueError(f"linear probe optimizer {optimizer!r}; choose lars, sgd or adamw")
    params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}
    opt = tx.init(params)
    perm = np.stack([np.random.default_rng(seed + e).permutation(n)[:steps_per_epoch * bs]
                     for e in range(epochs)]).reshape(total, bs)
    xs, ys = jnp.asarray(xtr), jnp.asarray(ytr)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

    @jax.jit
    def run(params, opt, perm):
        def body(carry, idx):
            p, o = carry
            g = jax.grad(loss_fn)(p, xs[idx], ys[idx])
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None
        (params, opt), _ = jax.lax.scan(body, (params, opt), perm)
        return params

    params = run(params, opt, jnp.asarray(perm))

    def acc(x, y):
        return float(np.mean(np.argmax(np.asarray(x @ np.asarray(params["w"]) + np.asarray(params["b"])), 1) == y))

    return {"train_top1": acc(xtr, ytr), "top1": acc(xte, np.asarray(test_labels)), "steps": int(total)}
