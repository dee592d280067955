"""``vitjax.create_model(name, pretrained=...)``: weights the exporters wrote (timm, HF and npz folders,
and a bare file) load into the named model and give the original logits; hub ids resolve through
``huggingface_hub`` (replaced here by a local stand-in: tests never download); anything else is one
error listing the accepted forms."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import vitjax
from vitjax import param_tree
from vitjax.interop import pretrained as pt
from vitjax.interop.registry import exporter
from vitjax.interop.state_dict import model_shapes
from vitjax.models import create_model as build_module_only

pytestmark = pytest.mark.usefixtures("fast_compiles")
# ViT-Ti/16 (width 192, 3 heads) cut to one block at 32x32 pixels (4 patches), 5 classes.
TINY = dict(image_size=32, depth=1, num_classes=5)


@pytest.fixture(scope="module")
def original():
    model = vitjax.create_model("vit_ti16", **TINY)
    rng = np.random.default_rng(0)
    params = param_tree.unflatten({k: (1.0 if k.endswith("/scale") else 0.0) + 0.05 * rng.normal(size=s)
                                   .astype(np.float32) for k, s in model_shapes(model).items()})
    apply = jax.jit(model.apply)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    return model, params, apply, x, np.asarray(apply({"params": params}, x))


@pytest.mark.parametrize("fmt", ["timm", "hf", "npz"])
def test_create_model_loads_what_the_exporter_wrote(original, tmp_path, fmt):
    model, params, apply, x, want = original
    export = exporter(model, fmt)
    export.writer.write_export(tmp_path, export.state_dict(params), export.config())
    loaded, got = vitjax.create_model("vit_ti16", pretrained=tmp_path, **TINY)
    assert loaded == model
    assert np.abs(np.asarray(apply({"params": got}, x)) - want).max() <= 1e-5


def test_a_bare_npz_file_and_the_module_only_call(original, tmp_path):
    model, params, apply, x, want = original
    export = exporter(model, "npz")
    export.writer.write_export(tmp_path, export.state_dict(params), export.config())
    _, got = vitjax.create_model("vit_ti16", pretrained=str(tmp_path / "model.npz"), **TINY)
    assert np.abs(np.asarray(apply({"params": got}, x)) - want).max() <= 1e-5
    assert vitjax.create_model("vit_ti16", **TINY) == model          # without pretrained: the module, as before
    with pytest.raises(TypeError, match=r"^vitjax.models.create_model builds the module only; load weights with "
                                        r"vitjax.create_model\(name, pretrained=...\)"):
        build_module_only("vit_ti16", pretrained=str(tmp_path))


def test_weights_of_another_shape_name_the_first_mismatched_tensor(original, tmp_path):
    model, params, *_ = original
    export = exporter(model, "npz")
    export.writer.write_export(tmp_path, export.state_dict(params), export.config())
    with pytest.raises(ValueError, match=r"^shape mismatch for 'head/bias': the checkpoint has \(5,\), the vitjax "
                                         r"model expects \(7,\)"):
        vitjax.create_model("vit_ti16", pretrained=tmp_path, **{**TINY, "num_classes": 7})


def test_hub_ids_download_the_first_weights_file_the_repository_has(original, tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    from huggingface_hub.errors import EntryNotFoundError
    model, params, apply, x, want = original
    export = exporter(model, "timm")
    export.writer.write_export(tmp_path, export.state_dict(params), export.config())
    asked = []

    def fake_download(repo_id, filename):                 # a repository holding only model.safetensors
        asked.append((repo_id, filename))
        if filename != "model.safetensors":
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(tmp_path / filename)

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    _, got = vitjax.create_model("vit_ti16", pretrained="timm/vit_tiny_patch16_224.augreg_in21k", **TINY)
    assert np.abs(np.asarray(apply({"params": got}, x)) - want).max() <= 1e-5
    assert pt.resolve_pretrained("hf-hub:someone/tiny-vit") == str(tmp_path / "model.safetensors")
    assert asked == [("timm/vit_tiny_patch16_224.augreg_in21k", "model.safetensors"),
                     ("someone/tiny-vit", "model.safetensors")]

    monkeypatch.setattr(hub, "hf_hub_download", lambda repo_id, filename: fake_download(repo_id, "none"))
    with pytest.raises(FileNotFoundError, match=r"^hub repository 'org/empty' has none of \['model.safetensors', "
                                                r"'pytorch_model.bin', 'model.npz'\]$"):
        pt.resolve_pretrained("hf-hub:org/empty")


@pytest.mark.parametrize("spec", ["no/such/dir", "hf-hub:no-slash", "imagenet", True])
def test_an_unknown_pretrained_value_lists_the_accepted_forms(spec):
    with pytest.raises(ValueError) as e:
        vitjax.create_model("vit_ti16", pretrained=spec, **TINY)
    assert str(e.value).startswith(f"pretrained={spec!r} is ")
    assert str(e.value).endswith(
        "expected a local checkpoint file (.safetensors, .bin, .pt, .pth or .npz), a local folder holding "
        "model.safetensors, pytorch_model.bin or model.npz, 'hf-hub:ORG/NAME', or 'timm/NAME'")
