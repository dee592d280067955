"""COCO-format detection annotations -> a TFDS-format ArrayRecord dataset of images with boxes.

    python -m vitjax.data convert --coco ANNOTATIONS.json --images DIR --out DATA_DIR --name NAME [--holdout 0.1]

``ANNOTATIONS.json`` is a COCO object-detection file (``images``: id, file_name; ``annotations``:
image_id, category_id, bbox [x, y, w, h] in pixels, iscrowd; ``categories``: id, name); images are
read from ``DIR/<file_name>``. Categories become contiguous labels 0..K-1 in the order of their ids
(COCO's 80 categories have ids 1..90 with gaps), their names the class names. Records hold
``image`` (JPEG), ``boxes`` float32 [n, 4] (x0, y0, x1, y1 in pixels), ``labels`` int64 [n] and
``file_name``: the format ``vitjax.data.detection`` reads. Crowd annotations (``iscrowd=1``) are
left out, as DETR trains without them; images without annotations are kept (n = 0). Annotations
whose category id is not among ``categories`` stop the conversion with an error naming the ids.
Boxes are stored as annotated: clipping and dropping of bad boxes happen (counted) when training
reads them. The whole file becomes split ``train``, minus a seeded ``--holdout`` fraction as
``validation`` (convert the val2017 file as its own dataset to evaluate on COCO's own split).
"""
from __future__ import annotations

import collections
import json
import os

import numpy as np

from vitjax.data.convert.inputs import ConvertError, Item, _hold_out


def scan_coco(annotations: str, images_dir: str, holdout: float, seed: int):
    """(splits {name: [Item]}, class names, skipped [(name, reason)]) of a COCO annotation file."""
    try:
        with open(annotations) as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ConvertError(f"--coco {annotations}: cannot read it as JSON ({type(e).__name__}: {e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ConvertError(f"--coco {annotations} has no {key!r} list; is it a COCO object-detection "
                               f"file (instances_*.json)?")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i for i, c in enumerate(cats)}
    unknown = sorted({a["category_id"] for a in data["annotations"]} - set(label_of))
    if unknown:
        raise ConvertError(f"--coco {annotations}: annotations use category ids {unknown} that are not in "
                           f"its 'categories' list (ids {sorted(label_of)}); add them to 'categories' or "
                           f"remove those annotations")
    per_image = collections.defaultdict(list)
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            per_image[a["image_id"]].append(a)
    items, skipped = [], []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        path = os.path.join(images_dir, img["file_name"])
        if not os.path.isfile(path):
            skipped.append((path, "missing image file"))
            continue
        anns = per_image.get(img["id"], [])
        xywh = np.asarray([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        labels = np.asarray([label_of[a["category_id"]] for a in anns], np.int64)
        items.append(Item("train", path, img["file_name"], boxes=boxes, box_labels=labels))
    if not items:
        raise ConvertError(f"--coco {annotations}: none of its {len(data['images'])} images was found under "
                           f"--images {images_dir}")
    splits = {"train": items}
    if holdout:
        splits["train"], splits["validation"] = _hold_out(items, holdout, seed)
    return splits, [c.get("name", str(c["id"])) for c in cats], skipped
