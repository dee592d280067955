"""``python -m vitjax.export --format onnx`` and ``--format npz`` (the workdir's model): the ONNX file
run by onnxruntime gives vitjax's logits (<= 1e-4, fp32) on images it was not traced with (another
batch size: the batch axis is dynamic), the npz loads in timm's own loader with vitjax's logits, and
each printed ``load with:`` line runs on its own (its imports included) in an empty namespace.

One ONNX export for the whole file: torch's dynamo exporter takes several seconds per model.
"""
from __future__ import annotations

import contextlib
import io
import json

import jax
import numpy as np
import pytest

import vitjax.export as export_cli
from conftest import make_tiny_config
from vitjax import param_tree
from vitjax.interop.onnx import export_onnx
from vitjax.interop.state_dict import model_shapes
from vitjax.models.clip import CLIP
from vitjax.models.vit import ViT

pytest.importorskip("torch")
pytest.importorskip("timm")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-4


@pytest.fixture(scope="module")
def run():
    """A class-token ViT shaped like the digits demo (1 channel, 16x16, 10 classes) with random weights,
    and the digits config (its eval ops become the export's preprocessing)."""
    model = ViT(num_classes=10, image_size=16, patch_size=4, in_channels=1, width=32, depth=1, num_heads=2,
                mlp_dim=64)
    rng = np.random.default_rng(0)
    params = param_tree.unflatten({k: (1.0 if k.endswith("/scale") else 0.0) + 0.05 * rng.normal(size=s)
                                   .astype(np.float32) for k, s in model_shapes(model).items()})
    return make_tiny_config(**{"model.pool": "token"}), model, params


@pytest.fixture
def workdir(run, monkeypatch):
    """``python -m vitjax.export``'s workdir reading answers with ``run`` (training a workdir would
    cost this file's budget; the workdir flow is tests/test_export_env.py's)."""
    config, model, params = run
    monkeypatch.setattr(export_cli, "load_evaluated", lambda wd, step, student: (config, model, params))
    monkeypatch.setattr(export_cli, "class_names", lambda wd, cfg, n: [f"digit {i}" for i in range(n)])
    return "unused-workdir"


def _cli(*argv) -> tuple[int, list[str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = export_cli.main(list(argv))
    return rc, out.getvalue().splitlines()


def _load_line(lines):
    return [ln for ln in lines if ln.startswith("load with: ")][-1][len("load with: "):]


def _images(n, size=16, c=1, seed=3):
    return np.random.default_rng(seed).normal(size=(n, size, size, c)).astype(np.float32)


def test_cli_onnx_export_matches_vitjax_in_onnxruntime(run, workdir, tmp_path):
    _, model, params = run
    out = tmp_path / "onnx"
    rc, lines = _cli("--workdir", workdir, "--format", "onnx", "--out", str(out))
    assert rc == 0
    assert lines[0].startswith(f"wrote {out / 'model.onnx'} (onnxruntime vs vitjax on 3 random images: max abs")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pretrained_cfg"]["input_size"] == [1, 16, 16] and cfg["label_names"][9] == "digit 9"

    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["pixel_values"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    x = _images(5)                                       # neither the traced (2) nor the checked (3) batch
    got = sess.run(None, {"pixel_values": x.transpose(0, 3, 1, 2).copy()})[0]
    want = np.asarray(jax.jit(model.apply)({"params": params}, x))
    assert got.shape == (5, 10)
    assert np.abs(got - want).max() <= TOL

    ns: dict = {}
    exec(_load_line(lines), ns)                          # the printed line, with its own imports
    assert ns["out"].shape == (1, 10)


def test_cli_npz_export_loads_in_timms_loader_with_vitjax_logits(run, workdir, tmp_path):
    import torch
    _, model, params = run
    out = tmp_path / "npz"
    rc, lines = _cli("--workdir", workdir, "--format", "npz", "--out", str(out))
    assert rc == 0
    assert lines[0].startswith(f"wrote {out / 'model.npz'} (")
    ns: dict = {}
    exec(_load_line(lines), ns)
    x = _images(2)
    with torch.no_grad():
        got = ns["net"](torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(got - np.asarray(jax.jit(model.apply)({"params": params}, x))).max() <= TOL


def test_a_model_without_a_timm_twin_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError) as e:
        export_onnx(CLIP(), {}, tmp_path / "x")
    assert str(e.value).startswith("--format onnx goes through the model's timm export: a CLIP cannot be "
                                   "exported as --format timm")
    assert not (tmp_path / "x").exists()
