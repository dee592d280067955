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
from vitjax.predict import Predictor, dataset_class_names, image_files, main as predict_cli, predict
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
    Trainer(_tiny("vit_ti16_photos.py", data), wd, devices=ONE).train()
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

    # Class names of a dataset that cannot be read any more: class_<i>, said once.
    cfg = pred.config.copy_and_resolve_references()
    cfg.input.data.name, cfg.input.data.data_dir = "photos_moved", str(tmp_path / "nowhere")
    with caplog.at_level(logging.WARNING, logger="vitjax.predict"):
        names = dataset_class_names(cfg, 3)
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
