"""Detection: DETR's set loss against HF's, on 8 devices against one, the box-aware data path, the
shapes_scenes source, the COCO converter and the COCO-mAP evaluator."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

import vitjax
from vitjax.data import bad_input
from vitjax.data.ops import build_ops
from vitjax.data.shapes_scenes import ShapesScenesSource
from vitjax.evals.detection import coco_metrics
from vitjax.losses import boxes as bx
from vitjax.objectives.detection import set_loss

B, Q, K, M, L = 8, 7, 4, 5, 3


def _case(seed=0):
    """Predictions of L decoder layers and padded targets (0..5 boxes per image)."""
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(L, B, Q, K + 1)) * 2).astype(np.float32)
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (L, B, Q, 2)), rng.uniform(0.05, 0.4, (L, B, Q, 2))], -1)
    n = [2, 5, 0, 1, 3, 4, 5, 2]
    tb = np.tile(np.float32([0.5, 0.5, 1, 1]), (B, M, 1))
    tl, tm = np.zeros((B, M), np.int32), np.zeros((B, M), bool)
    for b in range(B):
        tb[b, :n[b]] = np.concatenate([rng.uniform(0.2, 0.8, (n[b], 2)), rng.uniform(0.05, 0.4, (n[b], 2))], -1)
        tl[b, :n[b]] = rng.integers(0, K, n[b])
        tm[b, :n[b]] = True
    out = {"logits": logits[-1], "boxes": boxes[-1].astype(np.float32), "aux_logits": logits[:-1],
           "aux_boxes": boxes[:-1].astype(np.float32)}
    return out, {"boxes": tb, "labels": tl, "box_mask": tm}


@pytest.fixture(scope="module")
def loss_fn():
    return jax.jit(set_loss)


def test_set_loss_equals_hf_detr_loss_dict(loss_fn):
    """Same predictions and targets: vitjax's loss_ce / loss_bbox / loss_giou (last layer and each
    auxiliary layer) and the total equal HF DetrForObjectDetection's loss function's <= 1e-5."""
    torch = pytest.importorskip("torch")
    from transformers import DetrConfig
    from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

    out, batch = _case()
    labels = [{"class_labels": torch.tensor(batch["labels"][b][batch["box_mask"][b]]).long(),
               "boxes": torch.tensor(batch["boxes"][b][batch["box_mask"][b]])} for b in range(B)]
    cfg = DetrConfig(num_labels=K, auxiliary_loss=True, decoder_layers=L, use_timm_backbone=False,
                     use_pretrained_backbone=False)
    all_logits = np.concatenate([out["aux_logits"], out["logits"][None]])
    all_boxes = np.concatenate([out["aux_boxes"], out["boxes"][None]])
    hf_total, hf, _ = ForObjectDetectionLoss(torch.tensor(out["logits"]), labels, "cpu", torch.tensor(out["boxes"]),
                                             cfg, torch.tensor(all_logits), torch.tensor(all_boxes))
    total, metrics = loss_fn(out, batch)
    for k in ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error"):
        assert abs(float(metrics[k]) - float(hf[k])) <= 1e-5, k
    for i in range(L - 1):
        for k in ("loss_ce", "loss_bbox", "loss_giou"):
            assert abs(float(metrics[f"{k}_{i}"]) - float(hf[f"{k}_{i}"])) <= 1e-5, (k, i)
    assert abs(float(total) - float(hf_total)) <= 1e-5 * float(hf_total)


def test_matched_loss_on_8_devices_equals_one_device(loss_fn):
    """The batch sharded over 8 simulated devices: the global normalisations (number of boxes, CE
    weights) make the loss equal one device's <= 1e-5 relative."""
    out, batch = _case(seed=3)
    one_total, one = loss_fn(out, batch)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))

    def shard(x, batch_dim):
        spec = [None] * np.ndim(x)
        spec[batch_dim] = "data"
        return jax.device_put(x, NamedSharding(mesh, P(*spec)))

    out8 = {k: shard(v, 1 if k.startswith("aux") else 0) for k, v in out.items()}
    batch8 = {k: shard(v, 0) for k, v in batch.items()}
    assert len(out8["logits"].sharding.device_set) == 8
    total, metrics = jax.jit(set_loss)(out8, batch8)
    assert abs(float(total) - float(one_total)) <= 1e-5 * abs(float(one_total))
    for k in ("loss_ce", "loss_bbox", "loss_giou"):
        assert abs(float(metrics[k]) - float(one[k])) <= 1e-5 * abs(float(one[k]))


def test_box_conversions_and_giou():
    @jax.jit
    def run(b, a, c):
        xyxy = bx.cxcywh_to_xyxy(b)
        return (xyxy, bx.xyxy_to_cxcywh(xyxy), bx.xyxy_to_xywh(bx.xywh_to_xyxy(a)), bx.pairwise_giou(c[:1], c[1:]),
                bx.elementwise_giou(jnp.repeat(c[:1], 2, 0), c[1:]))

    b = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    # c[0] vs c[1]: IoU 2/6; vs c[2] (disjoint): IoU 0, enclosing 12, union 8 -> GIoU -1/3.
    xyxy, back, xywh, giou, giou_diag = run(b, np.float32([[1, 2, 3, 4]]),
                                            np.float32([[0, 0, 2, 2], [1, 0, 3, 2], [4, 0, 6, 2]]))
    np.testing.assert_allclose(xyxy, [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)
    np.testing.assert_allclose(back, b, atol=1e-7)
    np.testing.assert_allclose(xywh, [[1, 2, 3, 4]])
    np.testing.assert_allclose(giou, [[1 / 3, -1 / 3]], atol=1e-6)
    np.testing.assert_allclose(giou_diag, [1 / 3, -1 / 3], atol=1e-6)


def _rect_example(box=(10, 20, 30, 50), h=64, w=80):
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return {"image": img, "boxes": np.float32([box]), "labels": np.int32([2]), "file_name": "rect"}


def _drawn_box(img):
    ys, xs = np.nonzero(img[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("ops", [
    [dict(op="det_flip_lr", p=1.0)],
    [dict(op="det_resize", size=[32, 48], method="nearest")],
    [dict(op="det_random_crop", min_scale=0.6, max_scale=0.9, p=1.0)],
])
def test_box_ops_keep_boxes_on_the_drawn_object(ops):
    fns = build_ops(ops)
    for seed in range(5):
        ex = _rect_example()
        for f in fns:
            ex = f(ex, np.random.default_rng(seed))
        if len(ex["boxes"]) == 0:          # the crop cut the object away
            assert not (ex["image"] > 127).any()
            continue
        np.testing.assert_allclose(ex["boxes"][0], _drawn_box(ex["image"]), atol=1.0)


def test_pad_boxes_normalises_clips_drops_and_counts():
    bad_input.reset_counts()
    pad = build_ops([dict(op="det_pad_boxes", max_boxes=4)])[0]
    ex = {"image": np.zeros((40, 80, 3), np.uint8), "labels": np.int32([0, 1, 2]),
          "boxes": np.float32([[8, 4, 24, 20], [70, 30, 90, 50], [10, 10, 10, 30]])}   # ok, clipped, zero width
    out = pad(ex, None)
    np.testing.assert_allclose(out["boxes"][:2], [[0.2, 0.3, 0.2, 0.4], [0.9375, 0.875, 0.125, 0.25]], atol=1e-6)
    np.testing.assert_array_equal(out["box_mask"], [True, True, False, False])
    np.testing.assert_array_equal(out["labels"][:2], [0, 1])
    assert (int(out["boxes_dropped"]), int(out["boxes_clipped"]), int(out["boxes_truncated"])) == (1, 1, 0)
    assert bad_input.counts()["boxes_dropped"] == 1 and bad_input.counts()["boxes_clipped"] == 1


def test_too_many_boxes_is_an_error_naming_both_numbers_or_counted_truncation():
    ex = {"image": np.zeros((40, 40, 3), np.uint8), "labels": np.zeros(6, np.int32),
          "boxes": np.tile(np.float32([1, 1, 9, 9]), (6, 1)), "file_name": "crowded.jpg"}
    with pytest.raises(ValueError, match=r"\(crowded.jpg\) has 6 boxes, more than max_boxes=4 of det_pad_boxes"):
        build_ops([dict(op="det_pad_boxes", max_boxes=4)])[0](ex, None)
    out = build_ops([dict(op="det_pad_boxes", max_boxes=4, truncate=True)])[0](ex, None)
    assert int(out["boxes_truncated"]) == 2 and out["box_mask"].all()


def test_shapes_scenes_are_deterministic_with_boxes_on_the_shapes():
    a, b = ShapesScenesSource("train[:20]"), ShapesScenesSource("train")
    test = ShapesScenesSource("test")
    assert len(b) == 20_000 and len(test) == 1_000 and len(a) == 20
    for i in range(20):
        ea, eb = a[i], b[i]
        np.testing.assert_array_equal(ea["image"], eb["image"])
        np.testing.assert_array_equal(ea["boxes"], eb["boxes"])
        assert ea["image"].shape == (64, 64, 3) and ea["image"].dtype == np.uint8
        assert 1 <= len(ea["boxes"]) <= 5 and set(ea["labels"].tolist()) <= {0, 1, 2}
        assert (ea["boxes"][:, 2:] > ea["boxes"][:, :2]).all() and (ea["boxes"] >= 0).all() and (ea["boxes"] <= 64).all()
    assert not np.array_equal(a[0]["image"], test[0]["image"])
    with pytest.raises(ValueError, match="shapes_scenes dataset has splits \\['test', 'train'\\]"):
        vitjax.data.get_source("shapes_scenes", "validation")


def test_coco_metrics_perfect_and_shifted_predictions():
    gt = np.float32([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.3, 0.2]]])
    labels, mask = np.int32([[0, 2]]), np.array([[True, True]])
    perfect = coco_metrics(np.float32([[0.9, 0.8]]), labels, gt, gt, labels, mask, (64, 64), 3)
    assert perfect["map"] == pytest.approx(1.0) and perfect["ap50"] == pytest.approx(1.0)
    shifted = gt.copy()
    shifted[..., 0] += 0.05                          # IoU 0.6 for the first box, 0.71 for the second
    r = coco_metrics(np.float32([[0.9, 0.8]]), labels, shifted, gt, labels, mask, (64, 64), 3)
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(0.0)
    wrong = coco_metrics(np.float32([[0.9, 0.8]]), np.int32([[1, 1]]), gt, gt, labels, mask, (64, 64), 3)
    assert wrong["map"] == pytest.approx(0.0)


def _coco_files(tmp_path, categories, anns):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(imgs / f"{i}.png")
    data = {"images": [{"id": i + 1, "file_name": f"{i}.png", "height": 30, "width": 40} for i in range(3)],
            "annotations": anns, "categories": categories}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path), str(imgs)


def test_coco_convert_unknown_category_ids_are_named(tmp_path, capsys):
    from vitjax.data.__main__ import main

    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 99, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0}]
    ann, imgs = _coco_files(tmp_path, [{"id": 5, "name": "cat"}], anns)
    rc = main(["convert", "--coco", ann, "--images", imgs, "--out", str(tmp_path / "out"), "--name", "tiny",
               "--quiet", "--workers", "1"])
    assert rc == 2
    assert "annotations use category ids [7, 99] that are not in its 'categories' list (ids [5])" in capsys.readouterr().err


def test_coco_convert_round_trip_reads_boxes_and_labels(tmp_path):
    from vitjax.data.convert import convert_coco

    anns = [{"id": 1, "image_id": 1, "category_id": 90, "bbox": [1, 2, 3, 4], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 8, 8], "iscrowd": 1}]
    ann, imgs = _coco_files(tmp_path, [{"id": 90, "name": "dog"}, {"id": 3, "name": "cat"}], anns)
    s = convert_coco(ann, imgs, str(tmp_path / "out"), "tinycoco", workers=1, progress=False)
    assert s["splits"] == {"train": 3} and s["class_names"] == ["cat", "dog"]
    src = vitjax.data.get_source("tinycoco", "train", str(tmp_path / "out"))
    by_name = {src[i]["file_name"]: src[i] for i in range(len(src))}
    np.testing.assert_allclose(by_name["0.png"]["boxes"], [[1, 2, 4, 6], [5, 5, 15, 15]])
    np.testing.assert_array_equal(by_name["0.png"]["labels"], [1, 0])
    assert by_name["1.png"]["boxes"].shape == (0, 4)           # the crowd box is left out
    ex = build_ops([dict(op="decode"), dict(op="det_pad_boxes", max_boxes=3)])
    out = by_name["0.png"]
    for f in ex:
        out = f(out, None)
    assert out["image"].shape == (30, 40, 3) and out["box_mask"].sum() == 2


def test_detr_and_yolos_build_from_the_registry_with_pvt_and_vit_backbones():
    detr = vitjax.create_model("detr", backbone="pvt_v2", backbone_variant="b0", backbone_image_size=64,
                               feature_stage=2, num_classes=3, num_queries=6, hidden_dim=32, num_heads=2,
                               enc_layers=1, dec_layers=2, ffn_dim=64)
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: detr.apply(detr.init(jax.random.key(0), x), x), x)
    assert {k: v.shape for k, v in shapes.items()} == {
        "logits": (2, 6, 4), "boxes": (2, 6, 4), "aux_logits": (1, 2, 6, 4), "aux_boxes": (1, 2, 6, 4)}
    yolos = vitjax.create_model("yolos", variant=None, image_size=64, patch_size=16, width=32, depth=1, num_heads=2,
                                mlp_dim=64, num_classes=3, num_detection_tokens=9)
    shapes = jax.eval_shape(lambda x: yolos.apply(yolos.init(jax.random.key(0), x), x), x)
    assert {k: v.shape for k, v in shapes.items()} == {"logits": (2, 9, 4), "boxes": (2, 9, 4)}
    with pytest.raises(ValueError, match="objective.max_boxes=8 exceeds the model's 6 predictions"):
        from vitjax.objectives.detection import Detection
        Detection(max_boxes=8).check_model(detr)
