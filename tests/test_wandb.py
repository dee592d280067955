"""Weights & Biases logging (``train.wandb=True``) in offline mode: the same records as metrics.jsonl,
one W&B run per workdir (a resume continues it), and a clear error without the package."""
import glob
import json
import os
import sys
import time

import pytest

from conftest import make_tiny_config
from vitjax.config import ConfigError
from vitjax.training.metrics import WANDB_ID_FILE, MetricWriter

wandb = pytest.importorskip("wandb")


def _run_file(workdir):
    return sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb")))


def _read_records(path, keys, timeout=30.0):
    """The run file's bytes once every key is in it: wandb's service process writes the file after
    ``finish()`` returns and flushes it when it closes, which on a loaded machine (CI, ``-n 2``)
    can lag by a second or more."""
    deadline = time.time() + timeout
    while True:
        data = open(path, "rb").read()
        if all(k in data for k in keys) or time.time() > deadline:
            return data
        time.sleep(0.2)


def test_offline_wandb_logs_the_metrics_and_a_resume_continues_the_run(tmp_path):
    tiny_config = make_tiny_config()
    wd = str(tmp_path / "run")
    tiny_config.train.wandb, tiny_config.train.wandb_mode = True, "offline"
    w = MetricWriter.from_config(wd, tiny_config)
    w.write(1, {"train/loss": 2.5, "train/lr": 1e-3})
    w.write(2, {"eval/top1": 0.75})
    w.close()
    run_id = open(os.path.join(wd, WANDB_ID_FILE)).read().strip()
    (first,) = _run_file(wd)
    assert os.path.basename(first) == f"run-{run_id}.wandb"
    keys = (b"train/loss", b"train/lr", b"eval/top1", b"2.5", b"0.75", b"warmup_steps")
    data = _read_records(first, keys)
    for key in keys:
        assert key in data, key                          # warmup_steps: the config travels as the W&B config
    assert [json.loads(line)["step"] for line in open(os.path.join(wd, "metrics.jsonl"))] == [1, 2]

    w = MetricWriter.from_config(wd, tiny_config)       # the resumed run: same id, a second segment
    w.write(3, {"train/loss": 1.25})
    w.close()
    files = _run_file(wd)
    assert len(files) == 2 and all(f.endswith(f"run-{run_id}.wandb") for f in files)


def test_wandb_without_the_package_is_one_clear_error(tmp_path, monkeypatch):
    tiny_config = make_tiny_config()
    monkeypatch.setitem(sys.modules, "wandb", None)         # import wandb -> ImportError
    tiny_config.train.wandb = True
    with pytest.raises(ConfigError, match=r"train.wandb=True needs the wandb package: pip install 'vitjax\[wandb\]'"):
        MetricWriter.from_config(str(tmp_path), tiny_config)
