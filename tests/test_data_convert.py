"""Converters (image folder, webdataset shards, caption tables) -> TFDS-format ArrayRecord datasets."""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import data_files as files  # noqa: E402
from vitjax.data import convert as cv  # noqa: E402
from vitjax.data import dataset_writer, get_source, image_io  # noqa: E402
from vitjax.data.__main__ import main as cli  # noqa: E402

QUIET = dict(workers=1, progress=False)


def _odd_tree(root: str) -> None:
    files.class_tree(root, {"cat": 10, "dog": 10})
    odd = files.odd_images()
    for name in ("grey.jpg", "cmyk.jpg", "rgba.png", "palette.png", "photo.webp", "grey16.png", "rgb16.png"):
        files.write(os.path.join(root, "cat", name), odd[name])
    for name in ("truncated.jpg", "garbage.jpg", "empty.png"):
        files.write(os.path.join(root, "dog", name), odd[name])
    files.write(os.path.join(root, "dog", "notes.txt"), b"not a picture")
    files.write(os.path.join(root, "dog", ".DS_Store"), b"\0\0")


def test_image_folder_odd_and_bad_files(tmp_path, caplog):
    root, out = str(tmp_path / "images"), str(tmp_path / "data")
    _odd_tree(root)
    with caplog.at_level(logging.WARNING, logger="vitjax.data"):
        s = cv.convert_image_folder(root, out, "pets", holdout=0.2, max_bad_fraction=0.2, **QUIET)
    assert s["images"] == 27 and sum(s["splits"].values()) == 27
    assert sorted(s["splits"]) == ["train", "validation"] and 3 <= s["splits"]["validation"] <= 6
    assert s["skipped"] == {"undecodable image": 3, "not an image file (by its extension)": 1}
    assert s["encoding"]["stored as is (RGB JPEG)"] == 20
    assert sum(v for k, v in s["encoding"].items() if k.startswith("re-encoded")) == 7
    assert s["num_classes"] == 2 and s["class_names"] == ["cat", "dog"]
    # Each bad file is named exactly once in the log.
    for bad in ("dog/truncated.jpg", "dog/garbage.jpg", "dog/empty.png", "dog/notes.txt"):
        assert sum(bad in r.getMessage() for r in caplog.records) == 1, bad
    assert not any(".DS_Store" in r.getMessage() for r in caplog.records)

    labels, names = [], []
    for split in ("train", "validation"):
        src = get_source("pets", split, out)
        assert src.class_names == ("cat", "dog") and src.num_classes == 2
        for i in range(len(src)):
            ex = src[i]
            assert sorted(ex) == ["file_name", "image", "label"] and isinstance(ex["image"], bytes)
            img = image_io.decode(ex["image"])
            assert img.ndim == 3 and img.shape[2] == 3
            labels.append(int(ex["label"]))
            names.append(ex["file_name"])
    assert sorted(names) == sorted([f"cat/{i:03d}.jpg" for i in range(10)] + [f"dog/{i:03d}.jpg" for i in range(10)]
                                   + [f"cat/{n}" for n in ("grey.jpg", "cmyk.jpg", "rgba.png", "palette.png",
                                                           "photo.webp", "grey16.png", "rgb16.png")])
    assert labels.count(0) == 17 and labels.count(1) == 10
    # TFDS opens it without vitjax and without TensorFlow.
    import tensorflow_datasets as tfds
    ds = tfds.data_source("pets", split="train", data_dir=out)
    assert len(ds) == s["splits"]["train"] and ds[0]["image"].shape[2] == 3
    b = tfds.builder_from_directory(os.path.join(out, "pets", "1.0.0"))
    assert b.info.features["label"].names == ["cat", "dog"]
    assert {k: v.num_examples for k, v in b.info.splits.items()} == s["splits"]
    with open(os.path.join(out, "pets", "1.0.0", "vitjax_conversion.json")) as fh:
        meta = json.load(fh)
    assert meta["skipped"]["undecodable image"] == 3
    assert any(x.startswith("dog/garbage.jpg (not an image") for x in meta["skipped_files"]["undecodable image"])


def test_train_val_tree_is_deterministic_across_worker_counts(tmp_path):
    root = str(tmp_path / "tree")
    files.class_tree(os.path.join(root, "train"), {"a": 6, "b": 5, "c": 4})
    files.class_tree(os.path.join(root, "val"), {"a": 2, "b": 2, "c": 1}, seed=50)
    s1 = cv.convert_image_folder(root, str(tmp_path / "o1"), "tree", **QUIET)
    s2 = cv.convert_image_folder(root, str(tmp_path / "o2"), "tree", workers=2, progress=False)
    assert s1["splits"] == s2["splits"] == {"train": 15, "validation": 5}
    for split in ("train", "validation"):
        (f1,) = glob.glob(str(tmp_path / "o1" / "tree" / "1.0.0" / f"tree-{split}.array_record-*"))
        (f2,) = glob.glob(str(tmp_path / "o2" / "tree" / "1.0.0" / f"tree-{split}.array_record-*"))
        assert Path(f1).read_bytes() == Path(f2).read_bytes()
        assert f1.endswith("-00000-of-00001")
    val = get_source("tree", "validation", str(tmp_path / "o1"))
    assert sorted(int(val[i]["label"]) for i in range(len(val))) == [0, 0, 1, 1, 2]


def test_holdout_is_stratified_and_seeded(tmp_path):
    root = str(tmp_path / "imgs")
    files.class_tree(root, {"a": 10, "b": 20, "c": 3})
    splits, classes, _ = cv.scan_image_folder(root, 0.1, seed=0, rerun="x")
    splits2, _, _ = cv.scan_image_folder(root, 0.1, seed=0, rerun="x")
    val = sorted((it.label, it.name) for it in splits["validation"])
    assert val == sorted((it.label, it.name) for it in splits2["validation"])
    assert len(val) == 3 and [lab for lab, _ in val] == [0, 1, 1]   # round(3.3): 1 + 2 + 0 (c's 0.3 is last)
    assert len(splits["train"]) == 30
    other, _, _ = cv.scan_image_folder(root, 0.1, seed=1, rerun="x")
    assert sorted(it.name for it in other["validation"]) != [n for _, n in val]


def test_input_errors_say_what_to_do(tmp_path):
    root = str(tmp_path / "imgs")
    files.class_tree(root, {"a": 2})
    os.makedirs(os.path.join(root, "empty_class"))
    out = str(tmp_path / "data")
    with pytest.raises(cv.ConvertError) as e:
        cv.convert_image_folder(root, out, "x", **QUIET)
    assert str(e.value) == (
        f"class folder {root}/empty_class holds no images (JPEG/PNG/WebP/...). Add images or remove it "
        f"(rmdir '{root}/empty_class'), then rerun: python -m vitjax.data convert --image-folder {root} "
        f"--out {out} --name x")
    flat = str(tmp_path / "flat")
    files.class_tree(os.path.join(flat, "train"), {"a": 2})
    files.write(os.path.join(flat, "val", "ILSVRC2012_val_00000001.JPEG"), files.jpeg())
    with pytest.raises(cv.ConvertError, match=r"val holds no class folders \(images must be in .*/val/<class>/\)"):
        cv.convert_image_folder(flat, out, "x", **QUIET)
    with pytest.raises(cv.ConvertError, match=f"{tmp_path}/nothing has no class folders"):
        os.makedirs(tmp_path / "nothing")
        cv.convert_image_folder(str(tmp_path / "nothing"), out, "x", **QUIET)
    with pytest.raises(ValueError, match=r"dataset name 'My-Data' must be lower-case .* e.g. --name my_data"):
        cv.convert_image_folder(root, out, "My-Data", **QUIET)
    with pytest.raises(cv.ConvertError, match="--name cifar10 is a TFDS catalog dataset.*e.g. --name my_cifar10"):
        cv.convert_image_folder(root, out, "cifar10", **QUIET)


def test_too_many_bad_images_stop_and_leave_nothing(tmp_path):
    root, out = str(tmp_path / "imgs"), str(tmp_path / "data")
    files.class_tree(root, {"a": 30, "b": 30})
    for i in range(2):
        files.write(os.path.join(root, "b", f"zz{i}.jpg"), b"garbage")
    with pytest.raises(cv.ConvertError) as e:
        cv.convert_image_folder(root, out, "bad", holdout=0.0, **QUIET)
    msg = str(e.value)
    assert msg.startswith("1 of the 62 images could not be decoded (more than --max-bad-fraction=1.0%; the last "
                          "was b/zz") or msg.startswith("2 of the 62 images could not be decoded")
    assert "Nothing was written." in msg and f"rerun: python -m vitjax.data convert --image-folder {root}" in msg
    assert os.listdir(os.path.join(out, "bad")) == []
    s = cv.convert_image_folder(root, out, "bad", holdout=0.0, max_bad_fraction=0.05, **QUIET)
    assert s["images"] == 60 and s["skipped"] == {"undecodable image": 2}


def test_interrupted_conversion_never_looks_complete(tmp_path, monkeypatch):
    root, out = str(tmp_path / "imgs"), str(tmp_path / "data")
    files.class_tree(root, {"a": 5, "b": 5})
    real_write = dataset_writer.DatasetWriter.write
    calls = []

    def write_then_die(self, split, record):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real_write(self, split, record)

    monkeypatch.setattr(dataset_writer.DatasetWriter, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        cv.convert_image_folder(root, out, "half", holdout=0.0, **QUIET)
    assert os.listdir(os.path.join(out, "half")) == []
    monkeypatch.setattr(dataset_writer.DatasetWriter, "write", real_write)
    # A killed process leaves its temporary folder; it is never read as a dataset...
    stale = os.path.join(out, "half", ".incomplete-1.0.0-999999999-dead")
    os.makedirs(stale)
    files.write(os.path.join(stale, "half-train.array_record-00000.partial"), b"x")
    with pytest.raises(FileNotFoundError) as e:
        get_source("half", "train", out)
    assert f"{stale} is an unfinished conversion (interrupted); rerun the convert command." in str(e.value)
    # ...and the next conversion clears it.
    s = cv.convert_image_folder(root, out, "half", holdout=0.0, **QUIET)
    assert sorted(os.listdir(os.path.join(out, "half"))) == ["1.0.0"] and s["images"] == 10


def test_existing_dataset_needs_overwrite(tmp_path):
    root, out = str(tmp_path / "imgs"), str(tmp_path / "data")
    files.class_tree(root, {"a": 3, "b": 3})
    cv.convert_image_folder(root, out, "ow", holdout=0.0, **QUIET)
    with pytest.raises(FileExistsError, match=f"{out}/ow/1.0.0 already holds a dataset; pass --overwrite"):
        cv.convert_image_folder(root, out, "ow", holdout=0.0, **QUIET)
    files.class_tree(root, {"c": 2})
    s = cv.convert_image_folder(root, out, "ow", holdout=0.0, overwrite=True, **QUIET)
    assert s["images"] == 8 and get_source("ow", "train", out).class_names == ("a", "b", "c")
    assert sorted(os.listdir(os.path.join(out, "ow"))) == ["1.0.0"]


def _pairs_inputs(tmp_path):
    jpg, png = files.jpeg(40, 60, 1), files.encode(files.smooth_rgb(30, 30, 2), "PNG")
    tar = files.webdataset_tar(str(tmp_path / "shards" / "00000.tar"), [
        ("000000000", {"jpg": jpg, "txt": b"a red bicycle"}),
        ("000000001", {"png": png, "json": json.dumps({"caption": " two cats ", "url": "x"}).encode()}),
        ("000000002", {"jpg": jpg, "txt": b"   "}),
        ("000000003", {"txt": b"no picture here"}),
        ("000000004", {"jpg": jpg}),
        ("000000005", {"jpg": b"garbage", "txt": b"broken"}),
        ("000000006", {"webp": files.encode(files.smooth_rgb(20, 20, 3), "WEBP"), "txt": "caf\u00e9 \u2615".encode()}),
    ])
    table = tmp_path / "table"
    files.write(str(table / "img" / "p1.jpg"), jpg)
    files.write(str(table / "img" / "p2.png"), png)
    (table / "pairs.csv").write_text('path,caption\nimg/p1.jpg,"a dog, running"\nimg/p2.png,sunset\n'
                                     'https://example.com/x.jpg,web\nimg/missing.jpg,gone\nimg/p1.jpg,\n')
    (table / "pairs.jsonl").write_text(json.dumps({"image": "img/p2.png", "text": "json line"}) + "\n")
    return tar, str(table / "pairs.csv"), str(table / "pairs.jsonl")


def test_pairs_from_webdataset_and_tables(tmp_path):
    tar, csv_path, jsonl = _pairs_inputs(tmp_path)
    out = str(tmp_path / "data")
    s = cv.convert_pairs([str(tmp_path / "shards" / "{00000..00000}.tar"), csv_path, jsonl], out, "pairs",
                         max_bad_fraction=0.5, **QUIET)
    assert s["images"] == 6 and s["splits"] == {"train": 6}
    assert s["skipped"] == {"empty caption": 2, "sample without an image": 1, "no caption": 1,
                            "undecodable image": 1, "URL (download the images first, e.g. with img2dataset)": 1,
                            "file not found": 1}
    src = get_source("pairs", "train", out)
    got = sorted((src[i]["text"], src[i]["file_name"]) for i in range(len(src)))
    assert got == sorted([("a red bicycle", "00000.tar/000000000.jpg"), ("two cats", "00000.tar/000000001.png"),
                          ("caf\u00e9 \u2615", "00000.tar/000000006.webp"), ("a dog, running", "img/p1.jpg"),
                          ("sunset", "img/p2.png"), ("json line", "img/p2.png")])
    assert src.num_classes is None and "label" not in src[0]
    # Held-out pairs, seeded.
    s = cv.convert_pairs(tar, out, "pairs_val", holdout=0.5, max_bad_fraction=0.5, **QUIET)
    assert s["splits"] == {"train": 1, "validation": 2} or s["splits"] == {"train": 2, "validation": 1}


def test_brace_expansion():
    assert cv.expand_braces("s/{000..003}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar", "s/003.tar"]
    assert cv.expand_braces("a{1..2}b{8..9}") == ["a1b8", "a1b9", "a2b8", "a2b9"]
    assert cv.expand_braces("plain.tar") == ["plain.tar"]


def test_cli(tmp_path, capsys):
    root, out = str(tmp_path / "imgs"), str(tmp_path / "data")
    files.class_tree(root, {"x": 4, "y": 4})
    assert cli(["convert", "--image-folder", root, "--out", out, "--name", "Bad-Name", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: dataset name 'Bad-Name' must be lower-case")
    assert cli(["convert", "--image-folder", root, "--out", out, "--name", "cli_ds", "--quiet",
                "--workers", "1", "--holdout", "0.25"]) == 0
    text = capsys.readouterr().out
    assert f"converted {root} -> {out}/cli_ds/1.0.0" in text
    assert "splits: train 6, validation 2; classes: 2" in text
    assert "skipped: none" in text
    assert text.rstrip().endswith(f"read it with: --config.input.data.name=cli_ds --config.input.data.data_dir={out}")
    assert np.isclose(len(get_source("cli_ds", "validation", out)), 2)


def test_exif_rotation_resizing_and_byte_exact_copies(tmp_path):
    from PIL import Image
    root, out = tmp_path / "imgs", str(tmp_path / "data")
    exif = Image.Exif()
    exif[0x0112] = 6                                       # "rotate 90 degrees clockwise to display"
    rotated = files.encode(Image.fromarray(files.smooth_rgb(40, 60, 1)), "JPEG", quality=90, exif=exif)
    files.write(str(root / "a" / "rotated.jpg"), rotated)
    files.write(str(root / "a" / "big.jpg"), files.jpeg(200, 300, seed=2))
    plain = files.write(str(root / "b" / "plain.jpg"), files.jpeg(50, 70, seed=3))
    s = cv.convert_image_folder(str(root), out, "exif", holdout=0.0, max_short_side=100, **QUIET)
    assert s["encoding"] == {"re-encoded as JPEG (rotated (EXIF))": 1, "re-encoded as JPEG (resized)": 1,
                             "stored as is (RGB JPEG)": 1}
    src = get_source("exif", "train", out)
    by_name = {src[i]["file_name"]: src[i]["image"] for i in range(len(src))}
    assert image_io.decode(by_name["a/rotated.jpg"]).shape == (60, 40, 3)
    assert image_io.decode(by_name["a/big.jpg"]).shape == (100, 150, 3)
    assert by_name["b/plain.jpg"] == Path(plain).read_bytes()
