"""DETR's set-prediction loss (Carion et al. 2020, sec. 3.1), for DETR and YOLOS.

Per decoder layer (the last one and, with ``aux_loss``, every earlier one, each matched on its own):

1. Hungarian matching on device (``vitjax.losses.matching``) of the Q predictions to each image's
   real targets, with cost ``class_cost * -p(target class) + bbox_cost * L1(boxes) + giou_cost *
   -GIoU(boxes)`` (HF ``DetrConfig`` defaults 1 / 5 / 2), under ``stop_gradient``.
2. ``loss_ce``: cross-entropy of every prediction against its matched class or "no object" (the last
   class), weighted 1 and ``eos_coef`` = 0.1 for "no object", averaged with those weights over the
   global batch (PyTorch's weighted ``cross_entropy``, as HF/DETR).
3. ``loss_bbox`` (L1 of cx, cy, w, h) and ``loss_giou`` (1 - GIoU) of the matched pairs, summed and
   divided by the number of real boxes in the global batch (at least 1).

loss = sum over layers of ``ce_weight * loss_ce + bbox_weight * loss_bbox + giou_weight * loss_giou``
(1 / 5 / 2, HF's ``bbox_loss_coefficient`` and ``giou_loss_coefficient``). Under ``jit`` with a
batch sharded over devices the sums are global, so the loss equals one device's.

Batches (``vitjax.data.detection``): image [B, H, W, C], boxes [B, M, 4] (normalised cx, cy, w, h),
labels [B, M] int32, box_mask [B, M] bool. Models return ``dict(logits [B, Q, K + 1], boxes [B, Q,
4])`` and, for DETR, ``aux_logits``/``aux_boxes`` [L - 1, B, Q, ...].
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vitjax.losses.boxes import cxcywh_to_xyxy, elementwise_giou, pairwise_giou
from vitjax.losses.matching import batched_match
from vitjax.objectives.base import Objective, register_objective


def matching_cost(logits, boxes, tgt_boxes, tgt_labels, class_cost=1.0, bbox_cost=5.0, giou_cost=2.0):
    """DETR's matching cost [B, Q, M] of predictions (logits [B, Q, K + 1], boxes [B, Q, 4]) against
    targets (tgt_boxes [B, M, 4], tgt_labels [B, M]); boxes in normalised cx, cy, w, h."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    c_class = -jnp.take_along_axis(probs, jnp.broadcast_to(tgt_labels[:, None, :], probs.shape[:2] + tgt_labels.shape[1:]),
                                   axis=-1)
    c_bbox = jnp.abs(boxes[:, :, None, :] - tgt_boxes[:, None, :, :]).sum(-1)
    c_giou = -jax.vmap(pairwise_giou)(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tgt_boxes))
    return bbox_cost * c_bbox + class_cost * c_class + giou_cost * c_giou


def layer_losses(logits, boxes, tgt_boxes, tgt_labels, tgt_mask, *, eos_coef=0.1, class_cost=1.0,
                 bbox_cost=5.0, giou_cost=2.0, num_boxes=None, example_mask=None):
    """DETR's loss terms of one layer's predictions: ``{loss_ce, loss_bbox, loss_giou,
    cardinality_error}`` (scalars) and the assignment [B, Q] (target index, -1 = no object).
    ``example_mask`` [B]: padded examples of an eval batch count for nothing."""
    b, q, k1 = logits.shape
    if example_mask is not None:
        tgt_mask = tgt_mask & example_mask[:, None]
    cost = jax.lax.stop_gradient(matching_cost(logits, boxes, tgt_boxes, tgt_labels, class_cost, bbox_cost,
                                               giou_cost))
    assign = batched_match(cost, tgt_mask)
    matched = assign >= 0
    idx = jnp.clip(assign, 0)
    target_class = jnp.where(matched, jnp.take_along_axis(tgt_labels, idx, axis=1), k1 - 1)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, target_class[..., None], axis=-1)[..., 0]
    weight = jnp.where(target_class == k1 - 1, eos_coef, 1.0)
    if example_mask is not None:
        weight = weight * example_mask[:, None]
    loss_ce = jnp.sum(weight * nll) / jnp.sum(weight)
    if num_boxes is None:
        num_boxes = jnp.maximum(jnp.sum(tgt_mask), 1).astype(jnp.float32)
    matched_tgt = jnp.take_along_axis(tgt_boxes, idx[..., None], axis=1)
    m = matched.astype(jnp.float32)
    loss_bbox = jnp.sum(jnp.abs(boxes - matched_tgt).sum(-1) * m) / num_boxes
    giou = elementwise_giou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(matched_tgt))
    loss_giou = jnp.sum((1.0 - giou) * m) / num_boxes
    n_pred = jnp.sum(jnp.argmax(logits, -1) != k1 - 1, axis=1)
    card = jnp.abs(n_pred - jnp.sum(tgt_mask, axis=1)).astype(jnp.float32)
    if example_mask is not None:
        card_err = jnp.sum(card * example_mask) / jnp.maximum(jnp.sum(example_mask), 1)
    else:
        card_err = jnp.mean(card)
    terms = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou, "cardinality_error": card_err}
    return terms, assign


def set_loss(outputs: dict, batch: dict, *, eos_coef=0.1, class_cost=1.0, bbox_cost=5.0, giou_cost=2.0,
             ce_weight=1.0, bbox_weight=5.0, giou_weight=2.0, aux_loss=True, example_mask=None):
    """(total loss, metrics) of a model's outputs against a detection batch (module docstring).
    Metrics use HF's ``loss_dict`` names: the last layer's ``loss_ce``, ``loss_bbox``, ``loss_giou``,
    ``cardinality_error``, and ``<term>_<i>`` for auxiliary layer i; ``aux_loss`` is the auxiliary
    layers' weighted sum. All layers are matched in one vmapped call (one compiled matcher)."""
    kw = dict(eos_coef=eos_coef, class_cost=class_cost, bbox_cost=bbox_cost, giou_cost=giou_cost,
              example_mask=example_mask)
    tb, tl, tm = batch["boxes"].astype(jnp.float32), batch["labels"].astype(jnp.int32), batch["box_mask"]
    logits, boxes = outputs["logits"][None], outputs["boxes"][None]
    if aux_loss and "aux_logits" in outputs:
        logits = jnp.concatenate([outputs["aux_logits"].astype(logits.dtype), logits])
        boxes = jnp.concatenate([outputs["aux_boxes"].astype(boxes.dtype), boxes])
    terms, _ = jax.vmap(lambda lg, bx: layer_losses(lg, bx, tb, tl, tm, **kw))(logits, boxes)   # each [L]
    per_layer = ce_weight * terms["loss_ce"] + bbox_weight * terms["loss_bbox"] + giou_weight * terms["loss_giou"]
    total = jnp.sum(per_layer)
    metrics = {k: v[-1] for k, v in terms.items()}
    n_aux = logits.shape[0] - 1
    if n_aux:
        metrics["aux_loss"] = jnp.sum(per_layer[:-1])
        metrics.update({f"{k}_{i}": v[i] for k, v in terms.items() for i in range(n_aux)})
    metrics["loss"] = total
    return total, metrics


@register_objective("detection")
class Detection(Objective):
    """DETR's set loss for any model returning ``dict(logits, boxes[, aux_logits, aux_boxes])``
    (``DETR``, ``YOLOS``).

    Attributes:
      max_boxes: targets per image M (``det_pad_boxes``'s ``max_boxes``); at most the model's queries.
      eos_coef, class_cost, bbox_cost, giou_cost, ce_weight, bbox_weight, giou_weight, aux_loss:
        the loss (module docstring); defaults are HF ``DetrConfig``'s (= the paper's).
      score_threshold: unused by the loss; COCO evaluation keeps every query's best class.
    """

    def __init__(self, max_boxes: int = 100, eos_coef: float = 0.1, class_cost: float = 1.0,
                 bbox_cost: float = 5.0, giou_cost: float = 2.0, ce_weight: float = 1.0,
                 bbox_weight: float = 5.0, giou_weight: float = 2.0, aux_loss: bool = True):
        self.max_boxes = int(max_boxes)
        self.loss_kw = dict(eos_coef=eos_coef, class_cost=class_cost, bbox_cost=bbox_cost, giou_cost=giou_cost,
                            ce_weight=ce_weight, bbox_weight=bbox_weight, giou_weight=giou_weight,
                            aux_loss=aux_loss)

    @staticmethod
    def num_predictions(model) -> int:
        return int(getattr(model, "num_queries", None) or getattr(model, "num_detection_tokens"))

    def check_model(self, model):
        q = getattr(model, "num_queries", None) or getattr(model, "num_detection_tokens", None)
        if q is None:
            raise ValueError(f"objective 'detection' needs a detector (config.model.name='detr' or 'yolos'), "
                             f"got {type(model).__name__}")
        if q < self.max_boxes:
            raise ValueError(f"objective.max_boxes={self.max_boxes} exceeds the model's {q} predictions per "
                             f"image; every box needs its own query: raise the model's queries or lower max_boxes")

    def example_batch(self, model, batch_size):
        self.check_model(model)
        s, m = model.image_size, self.max_boxes
        return {"image": jax.ShapeDtypeStruct((batch_size, s, s, model.in_channels), jnp.float32),
                "boxes": jax.ShapeDtypeStruct((batch_size, m, 4), jnp.float32),
                "labels": jax.ShapeDtypeStruct((batch_size, m), jnp.int32),
                "box_mask": jax.ShapeDtypeStruct((batch_size, m), jnp.bool_)}

    def loss(self, model, params, state, batch, rng, *, train, step=None, run=None):
        del state, step, run
        out = model.apply({"params": params}, batch["image"], train=train, rngs={"dropout": rng})
        loss, metrics = set_loss(out, batch, **self.loss_kw)
        metrics["boxes_per_image"] = jnp.mean(jnp.sum(batch["box_mask"], axis=1).astype(jnp.float32))
        for k in ("boxes_dropped", "boxes_clipped", "boxes_truncated"):
            if k in batch:          # per-batch sums of the data's counts (vitjax.data.detection)
                metrics[k] = jnp.sum(batch[k]).astype(jnp.float32)
        return loss, metrics, {}

    def eval_metrics(self, model, params, batch):
        out = model.apply({"params": params}, batch["image"], train=False)
        mask = batch["mask"]
        _, metrics = set_loss(out, batch, example_mask=mask, **self.loss_kw)
        n = jnp.sum(mask).astype(jnp.float32)
        # Batch-level terms weighted by the batch's real examples (the set loss is normalised per batch).
        return {k: (v * n, n) for k, v in metrics.items()}

    def feature_fn(self, model):
        raise ValueError("objective 'detection' has no pooled features for kNN/linear probes; use the "
                         "'detection' evaluator (COCO mAP)")

    def default_evals(self):
        return {"detection": dict(type="detection", prefix="")}
