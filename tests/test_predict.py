"""``vitjax.predict`` (files -> top-k class names, embeddings) and the own-photos recipe end to end:
image folder -> convert -> train (configs/vit_ti16_photos.py, shrunk) -> predict; and mixup's
num_classes following ``model.num_classes`` (configs/vit_b16_imagenet.py with 3 classes)."""
import json
import logging
import os

import jax
import numpy as np
import pytest
from PIL import Image

import data_files as files
import vitjax
from conftest import make_tiny_config, shrink_config
from vitjax.data import convert as cv
from vitjax.data.batch_ops import batch_ops_for_model, build_batch_ops
from vitjax.data.digits import DigitsSource
from vitjax.data.ops import apply_ops, build_ops
from vitjax.models import build_model
from vitjax.objectives import create_objective
from vitjax.export import main as export_cli
from vitjax.predict import Predictor, image_files, main as predict_cli, predict
from vitjax.training.workdir import class_names
from vitjax.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("fast_compiles")
ONE = jax.devices()[:1]
CLASSES = ("cat", "dog", "fox")
# A tiny ViT for the shipped photo-sized configs: 32 px images, 2x2 patches of 16 px, one block.
TINY_VIT = dict(width=32, depth=1, num_heads=2, mlp_dim=64)


def _tiny(config_file: str, data_dir: str, **extra):
    c = shrink_config(config_file, {
        "model.image_size": 32, "model.num_classes": 3, "model.dtype": "float32",
        "input.train_ops.0.size": 32, "input.eval_ops.0.size": 32,
        "input.data.name": "photos", "input.data.data_dir": data_dir,
        "input.batch_size": 8, "input.eval_batch_size": 8, "input.num_threads": 0, "input.num_workers": 0,
        "train.total_steps": 2, "train.log_every_steps": 1, "train.eval_every_steps": 2,
        "train.checkpoint_every_steps": 2, "train.tensorboard": False, "optim.warmup_steps": 0,
    }, extra)
    c.model.update(TINY_VIT)
    return c


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A 3-class image folder (10 JPEGs each, one corrupt file among them) converted to a dataset."""
    root = tmp_path_factory.mktemp("photos")
    folder, data = str(root / "photos"), str(root / "data")
    files.class_tree(folder, {c: 10 for c in CLASSES}, size=(48, 64))
    files.write(os.path.join(folder, "dog", "corrupt.jpg"), files.odd_images()["truncated.jpg"])
    s = cv.convert_image_folder(folder, data, "photos", workers=1, progress=False, max_bad_fraction=0.1)
    assert s["class_names"] == list(CLASSES) and s["skipped_total"] == 1
    return folder, data, root


@pytest.fixture(scope="module")
def photo_run(photos):
    folder, data, root = photos
    wd = str(root / "run")
    cfg = _tiny("vit_ti16_photos.py", data)
    cfg.export.formats = ["hf"]                      # written to <workdir>/export/hf when training ends
    Trainer(cfg, wd, devices=ONE).train()
    return folder, wd


def test_photos_recipe_convert_train_predict_names_the_folder_classes(photo_run, caplog):
    folder, wd = photo_run
    with caplog.at_level(logging.WARNING, logger="vitjax.predict"):
        preds = predict(wd, folder, top_k=2)
    found = image_files(folder)
    assert len(found) == 31 and len(preds) == 31
    bad = found.index(os.path.join(folder, "dog", "corrupt.jpg"))
    assert preds[bad] == []                                   # skipped, and named once
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"warning: skipped {found[bad]}: cannot decode image")
    for i, row in enumerate(preds):
        if i != bad:
            assert len(row) == 2 and {name for name, _ in row} <= set(CLASSES)
            assert row[0][1] >= row[1][1] and 0.0 <= row[1][1] <= row[0][1] <= 1.0
    # The package-level name works before and after the module is imported.
    assert vitjax.predict(wd, [found[0]], top_k=3)[0] == predict(wd, [found[0]], top_k=3)[0]


def test_predict_cli_json_features_and_tokens(photo_run, tmp_path, capsys):
    folder, wd = photo_run
    js, feats = str(tmp_path / "p.json"), str(tmp_path / "f.npy")
    assert predict_cli(["--workdir", wd, os.path.join(folder, "cat"), os.path.join(folder, "dog"),
                        "--top_k", "3", "--json", js, "--features", feats]) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 20 and lines[0].startswith(os.path.join(folder, "cat", "000.jpg") + ": ")
    assert "corrupt.jpg" in err and "20 image(s), 1 skipped" in err
    doc = json.load(open(js))
    assert doc["skipped"] == [os.path.join(folder, "dog", "corrupt.jpg")] and doc["step"] == 2
    assert {p["top_k"][0]["class"] for p in doc["predictions"]} <= set(CLASSES)
    listed = open(feats + ".files.txt").read().splitlines()
    assert listed == [p["file"] for p in doc["predictions"]]
    assert np.load(feats).shape == (20, 32)
    assert predict_cli(["--workdir", wd, os.path.join(folder, "fox"), "--features", feats, "--tokens"]) == 0
    assert np.load(feats).shape == (10, 1 + 4, 32)           # class token + 2x2 patches
    capsys.readouterr()
    assert predict_cli(["--workdir", wd, folder, "--tokens"]) == 2
    assert "add --features" in capsys.readouterr().err
    assert predict_cli(["--workdir", wd, str(tmp_path / "missing.jpg")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err


def test_predict_digits_files_match_the_eval_pipeline(tmp_path, caplog):
    """A 1-channel model gets grey pixels, through the run's eval ops, as evaluation does."""
    wd = str(tmp_path / "digits")
    Trainer(make_tiny_config(**{"train.total_steps": 2, "train.eval_every_steps": 2,
                                "train.checkpoint_every_steps": 2, "optim.warmup_steps": 0}),
            wd, devices=ONE).train()
    src = DigitsSource("test")
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"d{i}.png"))
        Image.fromarray(src[i]["image"][..., 0]).save(paths[-1])
    pred = Predictor(wd, batch_size=4)          # 5 files: a full batch and a padded one
    assert pred.class_names == [str(i) for i in range(10)] and pred.step == 2
    out = pred.run(paths)
    ops = build_ops(pred.config.input.eval_ops)
    x = np.stack([apply_ops(dict(src[i]), ops, None)["image"] for i in range(5)])
    want = jax.nn.softmax(pred.model.apply({"params": pred.params}, x), -1)
    np.testing.assert_allclose(out["probs"], want, atol=1e-5)
    rows = pred.top_k(out["probs"], 1)
    assert [r[0][0] for r in rows] == [str(int(i)) for i in np.argmax(want, -1)]

    # Class names of a dataset that cannot be read any more, in a workdir without class_names.json
    # (runs older than it): class_<i>, said once.
    cfg = pred.config.copy_and_resolve_references()
    cfg.input.data.name, cfg.input.data.data_dir = "photos_moved", str(tmp_path / "nowhere")
    with caplog.at_level(logging.WARNING, logger="vitjax"):
        names = class_names(str(tmp_path), cfg, 3)
    assert names == ["class_0", "class_1", "class_2"]
    assert len(caplog.records) == 1 and "photos_moved" in caplog.records[0].getMessage()


# ----------------------------------------------------- one num_classes: the model's, mixup's too

def test_batch_ops_follow_the_model_num_classes(caplog):
    assert batch_ops_for_model(None, 10) is None
    specs = [dict(op="mixup_cutmix", mixup_alpha=0.8)]
    assert batch_ops_for_model(specs, 7) == [dict(op="mixup_cutmix", mixup_alpha=0.8, num_classes=7)]
    assert specs == [dict(op="mixup_cutmix", mixup_alpha=0.8)]            # not modified in place
    assert batch_ops_for_model(specs, None) == specs                          # no head: untouched
    with caplog.at_level(logging.WARNING, logger="vitjax.data"):
        fixed = batch_ops_for_model([dict(op="mixup_cutmix", num_classes=1000)], 3)
    assert fixed == [dict(op="mixup_cutmix", num_classes=3)]
    assert "num_classes=1000 but model.num_classes=3" in caplog.text
    with pytest.raises(ValueError, match="mixup_cutmix needs num_classes > 0"):
        build_batch_ops(specs)


def test_imagenet_config_with_3_classes_mixes_3_class_targets(photos):
    """configs/vit_b16_imagenet.py with --config.model.num_classes=3: its mixup op says 1000. Before,
    the train step died on (8, 1000) targets against (8, 3) logits; the op now follows the model."""
    _, data, root = photos
    cfg = _tiny("vit_b16_imagenet.py", data)
    assert cfg.input.batch_ops[0]["num_classes"] == 1000 and cfg.model.num_classes == 3
    model, objective = build_model(cfg), create_objective(cfg.objective)
    params = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))["params"]
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
             "label": (np.arange(8) % 3).astype(np.int32)}

    def loss(batch_ops):
        (op,) = build_batch_ops(batch_ops)
        mixed = op(dict(batch), np.random.default_rng(0))
        return objective.loss(model, params, {}, mixed, jax.random.key(1), train=True)[0]

    with pytest.raises((ValueError, TypeError), match=r"\(8, 1000\)|\(8, 3\)"):   # what the step did
        loss(cfg.input.batch_ops)
    assert np.isfinite(loss(batch_ops_for_model(cfg.input.batch_ops, cfg.model.num_classes)))
    summary = Trainer(cfg, str(root / "imagenet_3"), devices=ONE).train()   # the whole loop, 2 steps
    assert summary.status == "finished" and np.isfinite(summary.final_metrics["eval/loss"])


# ----------------------------------------------- class names and eval preprocessing travel with exports

def test_class_names_stay_with_the_workdir_and_travel_into_exports(photo_run, tmp_path, monkeypatch):
    folder, wd = photo_run
    assert json.load(open(os.path.join(wd, "class_names.json"))) == list(CLASSES)
    # The dataset moves away: predictions still name the classes (from the workdir).
    cfg = json.load(open(os.path.join(wd, "config.json")))
    moved = str(tmp_path / "wd")
    import shutil
    shutil.copytree(wd, moved, ignore=shutil.ignore_patterns("run.lock"))
    cfg["input"]["data"]["data_dir"] = str(tmp_path / "nowhere")
    json.dump(cfg, open(os.path.join(moved, "config.json"), "w"))
    assert {n for row in predict(moved, os.path.join(folder, "cat"), top_k=3) for n, _ in row} == set(CLASSES)

    hf, tm = str(tmp_path / "hf"), str(tmp_path / "timm")
    assert export_cli(["--workdir", moved, "--format", "hf", "--out", hf]) == 0
    # The run's own end-of-training export (config.export.formats) wrote the same folder.
    for name in ("config.json", "preprocessor_config.json"):
        assert json.load(open(os.path.join(wd, "export", "hf", name))) == json.load(open(os.path.join(hf, name)))
    assert open(os.path.join(wd, "export", "hf", "model.safetensors"), "rb").read() == \
        open(os.path.join(hf, "model.safetensors"), "rb").read()
    assert export_cli(["--workdir", moved, "--format", "timm", "--out", tm]) == 0
    c = json.load(open(os.path.join(hf, "config.json")))
    assert c["id2label"] == {"0": "cat", "1": "dog", "2": "fox"} and c["label2id"] == {"cat": 0, "dog": 1, "fox": 2}
    t = json.load(open(os.path.join(tm, "config.json")))
    assert t["label_names"] == list(CLASSES)
    # The eval ops (decode_center_crop 32 px, crop 0.875, bilinear, ImageNet mean/std) as timm and HF read them.
    imagenet = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    assert {k: t["pretrained_cfg"][k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode",
                                                 "mean", "std")} == dict(
        input_size=[3, 32, 32], interpolation="bilinear", crop_pct=0.875, crop_mode="center", **imagenet)
    pre = json.load(open(os.path.join(hf, "preprocessor_config.json")))
    assert (pre["image_processor_type"], pre["size"], pre["crop_size"], pre["resample"]) == (
        "BitImageProcessor", {"shortest_edge": 36}, {"height": 32, "width": 32}, 2)
    assert (pre["image_mean"], pre["image_std"]) == (imagenet["mean"], imagenet["std"])


def test_timm_and_hf_preprocessing_of_an_export_match_the_runs_eval_ops():
    """On a 300x420 photo: the transform timm builds from the exported pretrained_cfg and the image
    processor HF builds from preprocessor_config.json give the pixels vitjax's eval ops give, up to
    resampling at the crop border (mean |diff| 0.05 of a normalised unit; timm's old default of
    crop_pct 0.9 bicubic was 0.14, a whole-image resize 0.6)."""
    import timm.data
    from transformers import BitImageProcessor
    from vitjax.config import load_config_file
    from vitjax.interop.preprocessing import eval_preprocessing

    cfg = load_config_file("configs/vit_ti16_photos.py")
    model = build_model(cfg)
    pre = eval_preprocessing(cfg, model)
    assert (pre.size, pre.crop_pct, pre.crop_mode, pre.interpolation) == (112, 0.875, "center", "bilinear")
    jpg = files.jpeg(300, 420, seed=3)
    want = apply_ops({"image": np.array(jpg, dtype=object)}, build_ops(cfg.input.eval_ops), None)["image"]
    img = Image.open(__import__("io").BytesIO(jpg)).convert("RGB")
    tf = timm.data.create_transform(**timm.data.resolve_data_config(pre.timm_fields()))
    got_timm = tf(img).numpy().transpose(1, 2, 0)
    hf_cfg = pre.hf_preprocessor_config()
    hf_cfg.pop("image_processor_type")
    got_hf = BitImageProcessor(**hf_cfg)(img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    for got in (got_timm, got_hf):
        assert got.shape == want.shape == (112, 112, 3)
        assert np.abs(got - want).mean() < 0.08
