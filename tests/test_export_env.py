"""The README's test environment is the one a user gets: the ``load with:`` line that
``python -m vitjax.export`` prints works when pasted into a fresh Python (no shim, no test set-up)."""
import subprocess
import sys

import jax
import pytest

from conftest import REPO, make_tiny_config
from vitjax.training.trainer import Trainer

FRESH = dict(cwd="/", capture_output=True, text=True, timeout=600)


def test_timm_open_clip_and_transformers_vision_import_in_a_fresh_python():
    pytest.importorskip("torch")
    code = ("import timm, open_clip, torchvision\n"
            "from transformers import ViTForImageClassification, CLIPModel\n"
            "print(torchvision.ops.nms.__name__)")
    r = subprocess.run([sys.executable, "-c", code], **FRESH)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "nms"


def test_the_printed_load_line_loads_the_export_in_a_fresh_python(tmp_path):
    pytest.importorskip("timm")
    wd = tmp_path / "run"
    cfg = make_tiny_config(**{"train.total_steps": "2", "train.eval_every_steps": "2",
                              "train.checkpoint_every_steps": "2", "train.tensorboard": "False",
                              "optim.warmup_steps": "1"})
    Trainer(cfg, str(wd), devices=jax.devices()[:1]).train()
    out = tmp_path / "timm"
    r = subprocess.run([sys.executable, "-m", "vitjax.export", "--workdir", str(wd), "--format", "timm",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("load with: ")][-1][len("load with: "):]
    code = f"import timm, torch\nm = {line}\nprint(tuple(m(torch.zeros(1, 1, 16, 16)).shape))"
    r = subprocess.run([sys.executable, "-c", code], **FRESH)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "(1, 10)"
