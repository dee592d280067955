"""Sources: the embedded digits (unchanged), TFDS ArrayRecord datasets, and the errors that say
what to run when a dataset is not there."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import data_files as files  # noqa: E402
from vitjax.data import get_source  # noqa: E402
from vitjax.data.convert import convert_image_folder  # noqa: E402
from vitjax.data.ops import apply_ops, build_ops  # noqa: E402
from vitjax.data.sources import DatasetNotPreparedError  # noqa: E402


def test_digits_split_is_unchanged():
    expect = {"train": (1437, "6612d0a064c751fd", [142, 146, 142, 146, 145, 145, 145, 143, 139, 144]),
              "test": (360, "eb33daa4a6fa9662", [36, 36, 35, 37, 36, 37, 36, 36, 35, 36])}
    for split, (n, digest, counts) in expect.items():
        s = get_source("digits", split, None)
        assert len(s) == n and s.num_classes == 10
        assert hashlib.sha256(s.images.tobytes() + s.labels.tobytes()).hexdigest()[:16] == digest
        assert np.bincount(s.labels).tolist() == counts
        ex = s[0]
        assert ex["image"].shape == (8, 8, 1) and ex["image"].dtype == np.uint8 and ex["label"].dtype == np.int32
    with pytest.raises(ValueError, match=r"the digits dataset has splits \['test', 'train'\], not 'val'"):
        get_source("digits", "val")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    files.class_tree(str(tmp / "imgs"), {"a": 4, "b": 4})
    convert_image_folder(str(tmp / "imgs"), str(tmp / "data"), "toy", holdout=0.25, workers=1, progress=False)
    return str(tmp / "data")


def test_slicing_and_examples(toy):
    assert len(get_source("toy", "train", toy)) == 6
    assert len(get_source("toy", "train[:50%]", toy)) == 3
    assert len(get_source("toy", "train[:2]+validation", toy)) == 4
    src = get_source("toy", "validation", toy)
    out = apply_ops(dict(src[0]), build_ops([dict(op="decode_center_crop", size=16)]), None)
    assert out["image"].shape == (16, 16, 3) and out["label"].dtype == np.int32


def test_not_prepared_errors_say_what_to_run(toy, tmp_path):
    with pytest.raises(DatasetNotPreparedError) as e:
        get_source("my_photos", "train", toy)
    assert str(e.value) == (
        f"dataset 'my_photos' was not found in data_dir={toy}: no dataset of that name is there. It is not "
        f"in the TFDS catalog, so create it with\n"
        f"  python -m vitjax.data convert --image-folder DIR --out {toy} --name my_photos\n"
        f"(or --pairs SHARDS for image-text pairs), or point --config.input.data.data_dir at the folder "
        f"that holds it.")
    empty = str(tmp_path)
    with pytest.raises(DatasetNotPreparedError) as e:
        get_source("cifar10", "train", empty)
    assert str(e.value).startswith(
        f"TFDS dataset 'cifar10' is not prepared in data_dir={empty}: it is not prepared there. Prepare it "
        f"once with\n  tfds build cifar10 --data_dir {empty} --file_format=array_record\n")
    with pytest.raises(ValueError) as e:
        get_source("toy", "test", toy)
    assert str(e.value) == (
        f"dataset 'toy' in {toy}/toy/1.0.0 has splits ['train', 'validation'], not 'test'; set "
        f"config.input.data.split (a converted image folder gets a 'validation' split from `python -m "
        f"vitjax.data convert ... --holdout 0.1`)")


def test_tfrecord_dataset_is_refused_with_the_rebuild_command(toy, tmp_path):
    import shutil
    data = str(tmp_path / "tfr")
    shutil.copytree(toy, data)
    info_path = os.path.join(data, "toy", "1.0.0", "dataset_info.json")
    info = json.load(open(info_path))
    info["fileFormat"] = "tfrecord"
    json.dump(info, open(info_path, "w"))
    with pytest.raises(DatasetNotPreparedError) as e:
        get_source("toy", "train", data)
    assert str(e.value) == (f"dataset 'toy' in {data}/toy/1.0.0 is stored as tfrecord, which has no random "
                            f"access. Rebuild it with\n  tfds build toy --data_dir {data} --file_format=array_record")


def test_dataset_built_by_tfds_itself(tmp_path):
    """What `tfds build --file_format=array_record` writes (records shuffled, PNG-encoded images)."""
    import tensorflow_datasets as tfds

    class VitjaxTestTiny(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["x", "y", "z"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": files.encode(files.smooth_rgb(20 + i, 30, i), "PNG"), "label": i % 3}

    VitjaxTestTiny(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    src = get_source("vitjax_test_tiny", "train", str(tmp_path))
    assert len(src) == 9 and src.class_names == ("x", "y", "z")
    ex = src[0]
    assert isinstance(ex["image"], bytes) and ex["file_name"] == "vitjax_test_tiny/train[0]"
    heights = sorted(apply_ops(dict(src[i]), build_ops([dict(op="decode")]), None)["image"].shape[0]
                     for i in range(9))
    assert heights == list(range(20, 29))


def test_eval_source_follows_the_training_dataset():
    from vitjax.data.sources import get_eval_source
    src = get_eval_source({"name": "digits", "split": "train", "data_dir": None},
                          {"name": None, "split": None, "data_dir": None})
    assert src.split == "test" and len(src) == 360          # digits has no validation split: test
    assert get_eval_source({"name": "digits", "split": "train"}, None) is None
    with pytest.raises(ValueError, match="the digits dataset has splits"):
        get_eval_source({"name": "digits", "split": "train"}, {"name": None, "split": "holdout"})
