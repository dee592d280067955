"""Batch-level ops, run on each local batch after the per-example ops (``config.input.batch_ops``).

    config.input.batch_ops = [dict(op="mixup_cutmix", mixup_alpha=0.8, cutmix_alpha=1.0)]

Each op maps ``(batch, rng) -> batch`` on numpy arrays with a leading batch dim; ``rng`` is seeded
per batch by grain, so the ops are reproducible and resumable like the per-example ones.

An op whose factory takes ``num_classes`` (mixup/cutmix: its targets need one column per logit)
gets the model's: the trainer passes the specs through ``batch_ops_for_model(specs,
config.model.num_classes)``, so ``--config.model.num_classes=5`` alone changes the head and the
mixed targets together.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vitjax.data.registry import BATCH_OPS, register_batch_op
from vitjax.registry import build_from_specs

log = logging.getLogger("vitjax.data")


def build_batch_ops(specs: Sequence[Mapping[str, Any]] | None) -> list[Callable]:
    """Turns a config list of ``dict(op=NAME, **kwargs)`` into batch op callables (the entries of
    ``vitjax.data.registry.BATCH_OPS``, which this module fills)."""
    return build_from_specs(specs, BATCH_OPS)


def takes_num_classes(name: str) -> bool:
    """True when the batch op ``name`` has a ``num_classes`` argument (its output depends on it)."""
    return "num_classes" in inspect.signature(BATCH_OPS.get(name)).parameters


def batch_ops_for_model(specs: Sequence[Mapping[str, Any]] | None,
                        num_classes: int | None) -> list[dict] | None:
    """``specs`` with ``num_classes`` set to the model's (``config.model.num_classes``) in every op
    that takes one, so one number drives the head and the targets. A spec that leaves it unset (or
    None) follows the model; a spec that names another number is a stale copy (an ImageNet
    config's 1000 after ``--config.model.num_classes=5``): the model's wins, with a warning naming
    both. ``num_classes`` None or 0 (a model without a classifier head) leaves the specs as they are."""
    if specs is None:
        return None
    out = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.get("op")
        if num_classes and name in BATCH_OPS and takes_num_classes(name):
            given = spec.get("num_classes")
            if given is not None and int(given) != int(num_classes):
                log.warning("input.batch_ops[%d] (%s) says num_classes=%s but model.num_classes=%s; using "
                            "%s (leave num_classes out of batch ops: they follow the model)",
                            i, name, given, num_classes, num_classes)
            spec["num_classes"] = int(num_classes)
        out.append(spec)
    return out


def cutmix_box(rng: np.random.Generator, h: int, w: int, lam: float) -> tuple[int, int, int, int]:
    """A box covering about 1 - lam of the image, centred uniformly and clipped at the border
    (Yun et al. 2019, "CutMix", eq. 2). Returns (top, bottom, left, right)."""
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    top, bottom = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    left, right = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return int(top), int(bottom), int(left), int(right)


@register_batch_op("mixup_cutmix")
def mixup_cutmix(num_classes: int | None = None, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0, label_smoothing: float = 0.0,
                 key: str = "image"):
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of the batch with its reverse, one
    lambda per batch. Defaults are DeiT's (Touvron et al. 2021, Table 9: mixup 0.8, cutmix 1.0).

    Adds ``label_dist`` float32 [B, num_classes] (the mixed one-hot targets, which the
    classification objective prefers over ``label``); ``label`` stays the unmixed int label (used
    for train top-1). CutMix's lambda is corrected to the box's clipped area. Images keep their dtype.
    With ``prob`` < 1 a batch is left unmixed (but still gets ``label_dist``) with 1 - prob.
    Leave ``label_smoothing`` at 0 when the objective smooths labels already. ``num_classes``:
    leave it unset in a training config (the trainer fills in ``config.model.num_classes``,
    ``batch_ops_for_model``); set it when building the op by hand.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mixup_cutmix needs mixup_alpha > 0 or cutmix_alpha > 0")
    if num_classes is None or int(num_classes) <= 0:
        raise ValueError(f"mixup_cutmix needs num_classes > 0, got {num_classes}: in a training config "
                         f"it follows config.model.num_classes, so the model must have a classifier head")
    num_classes = int(num_classes)

    def op(batch, rng):
        x, y = batch[key], np.asarray(batch["label"])
        if y.min() < 0 or y.max() >= num_classes:
            raise ValueError(f"mixup_cutmix: labels must be in [0, {num_classes}), got "
                             f"[{y.min()}, {y.max()}]; check num_classes")
        target = np.full((len(y), num_classes), label_smoothing / num_classes, np.float32)
        target[np.arange(len(y)), y] += 1.0 - label_smoothing
        if rng.random() >= prob:
            return dict(batch, label_dist=target)
        use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
        if use_cutmix:
            lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
            h, w = x.shape[1:3]
            top, bottom, left, right = cutmix_box(rng, h, w, lam)
            mixed = x.copy()
            mixed[:, top:bottom, left:right] = x[::-1, top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        else:
            lam = float(rng.beta(mixup_alpha, mixup_alpha))
            m = lam * x.astype(np.float32) + (1.0 - lam) * x[::-1].astype(np.float32)
            mixed = np.clip(np.rint(m), 0, 255).astype(x.dtype) if x.dtype == np.uint8 else m.astype(x.dtype)
        dist = (lam * target + (1.0 - lam) * target[::-1]).astype(np.float32)
        return dict(batch, **{key: mixed, "label_dist": dist})
    return op
