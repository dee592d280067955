"""The ``detection`` evaluator: COCO box mAP, AP50 and AP75 of a detector over a whole split, scored by
``pycocotools`` (the reference implementation of the COCO metrics).

    config.evals.detection = dict(type="detection", prefix="")     # -> eval/map, eval/ap50, eval/ap75

Predictions follow DETR's post-processing (HF ``post_process_object_detection`` without a threshold):
each of the Q predictions of an image becomes one detection with the best real class and its
softmax probability as score ("no object" excluded); COCO keeps the 100 best per image. Boxes are
scaled from normalised (cx, cy, w, h) to pixels of the model's ``image_size`` (the evaluated size), as are the ground-truth boxes
of the batch (``box_mask`` marks the real ones).
"""
from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.evals.base import EvalRun, Evaluator, plain
from vitjax.evals.registry import register_evaluator


def postprocess(logits, boxes):
    """logits [B, Q, K + 1], boxes [B, Q, 4] (normalised cxcywh) -> scores [B, Q], classes [B, Q]
    (best real class), boxes unchanged."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]
    return jnp.max(probs, -1), jnp.argmax(probs, -1).astype(jnp.int32), boxes


def _to_xywh_pixels(b: np.ndarray, h: int, w: int) -> np.ndarray:
    cx, cy, bw, bh = b[..., 0] * w, b[..., 1] * h, b[..., 2] * w, b[..., 3] * h
    return np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=-1)


def coco_metrics(pred_scores, pred_classes, pred_boxes, gt_boxes, gt_labels, gt_mask, image_hw,
                 num_classes: int) -> dict[str, float]:
    """COCO box metrics through pycocotools. Arrays per image: pred_* [N, Q(, 4)], gt_* [N, M(, 4)],
    boxes normalised cxcywh; image_hw (h, w) in pixels. Returns map (AP@[.5:.95]), ap50, ap75,
    ap_small/medium/large (-1 where no box of that size), ar100."""
    # An optional dependency (the `detection` extra); only this evaluator needs it.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    h, w = image_hw
    images, anns, dets = [], [], []
    for i in range(len(pred_scores)):
        images.append({"id": i, "height": h, "width": w})
        for b, c in zip(_to_xywh_pixels(gt_boxes[i][gt_mask[i]], h, w), gt_labels[i][gt_mask[i]]):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [float(v) for v in b],
                         "area": float(b[2] * b[3]), "iscrowd": 0})
        for b, c, s in zip(_to_xywh_pixels(pred_boxes[i], h, w), pred_classes[i], pred_scores[i]):
            dets.append({"image_id": i, "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k, "name": str(k)} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):      # pycocotools prints its tables
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {"map": float(s[0]), "ap50": float(s[1]), "ap75": float(s[2]), "ap_small": float(s[3]),
            "ap_medium": float(s[4]), "ap_large": float(s[5]), "ar100": float(s[8])}


@register_evaluator("detection")
class DetectionEval(Evaluator):
    """COCO box metrics of ``model.apply(params, images)["logits"/"boxes"]`` against the split's
    ``boxes``/``labels``/``box_mask`` (``vitjax.data.detection``).

    Options: data (``get_source`` kwargs; default: the eval split), ops (default:
    ``config.input.eval_ops``), max_examples=None. Metrics: ``map``, ``ap50``, ``ap75``,
    ``ap_small``, ``ap_medium``, ``ap_large``, ``ar100``.
    """

    def __init__(self, name, *, data=None, ops=None, max_examples=None, **common):
        super().__init__(name, **common)
        self.data, self.ops, self.max_examples = data, ops, max_examples

    def __call__(self, run: EvalRun) -> dict[str, float]:
        _, src = run.split(self.data, "eval", f"{self.origin}.data")
        model, name = run.ctx.model, self.name
        def fn(p, b):
            for key in ("boxes", "labels", "box_mask"):
                if key not in b:
                    raise ValueError(f"evaluator {name!r}: the split has no {key!r}; end the eval ops with "
                                     f"dict(op='det_pad_boxes', max_boxes=...)")
            out = model.apply({"params": p}, b["image"], train=False)
            scores, classes, boxes = postprocess(out["logits"], out["boxes"])
            return {"scores": scores, "classes": classes, "pred_boxes": boxes, "gt_boxes": b["boxes"],
                    "gt_labels": b["labels"], "gt_mask": b["box_mask"]}

        out = run.map("detection", fn, src, ops=None if self.ops is None else plain(list(self.ops)),
                      max_examples=self.max_examples)
        num_classes = int(getattr(model, "num_classes"))
        return coco_metrics(out["scores"], out["classes"], out["pred_boxes"], out["gt_boxes"], out["gt_labels"],
                            out["gt_mask"].astype(bool), (model.image_size, model.image_size),
                            num_classes)
