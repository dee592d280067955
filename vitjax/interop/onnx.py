"""ONNX export of a vitjax model through its PyTorch twin, checked with onnxruntime at export time.

    from vitjax.interop.onnx import export_onnx
    result = export_onnx(model, params, "out/onnx", config=run_config)   # model.onnx + config.json
    result.max_abs_diff        # onnxruntime vs vitjax on random images; above atol it is a ValueError

What it does: the model's timm export (``exporter(model, "timm")``, the folder ``--format timm``
writes) is loaded as timm loads it (``timm.create_model("local-dir:...", pretrained=True)``), traced
by ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export`` exporter, PyTorch's default since 2.9;
it needs ``onnxscript``) with a dynamic batch axis, and the file is run by onnxruntime (CPU) on a batch
of 3 random images (not the 2 it was traced with, which checks the batch axis) whose outputs must
equal vitjax's ``model.apply`` on the same pixels within ``atol`` (1e-4, fp32). A file that fails
the check is deleted.

The ONNX model takes ``pixel_values`` float32 [B, C, H, W] (channels first, as timm; normalised as the
run's eval ops say, which ``config.json`` records as timm's ``pretrained_cfg``) and returns ``logits``
[B, num_classes] (``features`` [B, width] for a model with ``num_classes=0``). Any model whose timm
twin computes the same function exports (ViT, DeiT, Swin, PVT); the others (MAE, DINO, whose timm
export is only their backbone) are a ValueError before anything is written.

torch, timm, onnx, onnxscript and onnxruntime are the ``onnx`` extra (``pip install vitjax[torch,onnx]``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from vitjax.interop.registry import exporter
from vitjax.interop.state_dict import write_export

__all__ = ["OnnxExport", "export_onnx", "onnx_load_snippet", "INPUT_NAME"]

INPUT_NAME = "pixel_values"
_TRACE_BATCH, _CHECK_BATCH = 2, 3


class OnnxExport(NamedTuple):
    """What ``export_onnx`` wrote and measured."""
    path: Path                 # out_dir/model.onnx
    config: dict               # the timm config.json written beside it (preprocessing, class names)
    output_name: str           # "logits" or "features"
    max_abs_diff: float        # onnxruntime vs vitjax on _CHECK_BATCH random images


def _image_shape(model) -> tuple[int, int, int]:
    size = model.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    return int(size[0]), int(size[1]), int(model.in_channels)


def _reference(model, params, x_nhwc: np.ndarray) -> np.ndarray:
    name = type(model).__name__
    try:
        out = jax.jit(model.apply)({"params": params}, x_nhwc)      # one compile, not one per op
    except Exception as e:             # a model whose call needs more than images (MAE, DINO)
        raise ValueError(f"--format onnx exports a model's timm twin and checks it against the model's own "
                         f"output on images; a {name} cannot be called on images alone ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); export --format timm instead") from e
    if not hasattr(out, "shape") or np.ndim(out) != 2:
        raise ValueError(f"--format onnx needs a model that maps images to one [batch, classes] array; a {name} "
                         f"returns {type(out).__name__}; export --format timm instead")
    return np.asarray(out, np.float32)


def _timm_twin(state: dict, cfg: dict):
    import timm  # noqa: F401  (lazy: timm is the optional torch extra)
    with tempfile.TemporaryDirectory(prefix="vitjax_onnx_") as tmp:
        write_export(tmp, state, cfg)
        return timm.create_model(f"local-dir:{tmp}", pretrained=True).eval()


def export_onnx(model, params, out_dir: str | os.PathLike, *, config=None, label_names=None,
                atol: float = 1e-4, seed: int = 0) -> OnnxExport:
    """Writes ``out_dir/model.onnx`` and ``out_dir/config.json`` (the timm config: preprocessing and
    class names) for ``model`` with ``params``, and checks onnxruntime's outputs against vitjax's.

    ``config``: the run's config (its eval ops become the preprocessing in config.json);
    ``label_names``: one name per class. Raises ValueError when the model has no timm twin, when its
    output is not one array, or when onnxruntime differs from vitjax by more than ``atol``.
    """
    try:
        export = exporter(model, "timm", config=config, label_names=label_names)
    except ValueError as e:
        raise ValueError(f"--format onnx goes through the model's timm export: {e}") from e
    h, w, c = _image_shape(model)
    rng = np.random.default_rng(seed)
    x_check = rng.normal(size=(_CHECK_BATCH, h, w, c)).astype(np.float32)
    ref = _reference(model, params, x_check)
    state, cfg = export.state_dict(params), export.config()

    import onnxruntime  # noqa: F401  (lazy: the optional onnx extra)
    import torch  # noqa: F401  (lazy: the optional torch extra)
    net = _timm_twin(state, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    output_name = "logits" if int(getattr(model, "num_classes", 1) or 0) > 0 else "features"
    x_trace = torch.from_numpy(rng.normal(size=(_TRACE_BATCH, c, h, w)).astype(np.float32))
    n_bytes = sum(int(np.prod(v.shape)) * 4 for v in state.values())
    with contextlib.redirect_stdout(io.StringIO()):   # the exporter prints its progress lines
        torch.onnx.export(net, (x_trace,), str(path), dynamo=True, input_names=[INPUT_NAME],
                          output_names=[output_name], dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=n_bytes > 1_800_000_000)   # ONNX's protobuf stops at 2 GB
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: np.ascontiguousarray(x_check.transpose(0, 3, 1, 2))})[0]
    err = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
    if not err <= atol:
        path.unlink(missing_ok=True)
        Path(str(path) + ".data").unlink(missing_ok=True)
        detail = f"max abs difference {err:.3g}" if got.shape == ref.shape else \
            f"shapes {tuple(got.shape)} vs {tuple(ref.shape)}"
        raise ValueError(f"the ONNX model's outputs differ from vitjax's ({detail} > atol={atol}) on "
                         f"{_CHECK_BATCH} random images; nothing was written")
    with open(out / "config.json", "w") as fh:
        json.dump(cfg, fh, indent=2)
        fh.write("\n")
    return OnnxExport(path, cfg, output_name, err)


def onnx_load_snippet(out_dir: str | os.PathLike, config: dict | None = None) -> str:
    """The Python line that loads an ``export_onnx`` folder (onnxruntime) and runs it on zeros."""
    c, h, w = (config or {}).get("pretrained_cfg", {}).get("input_size", (3, 224, 224))
    path = os.path.join(str(out_dir), "model.onnx")
    return (f"import numpy, onnxruntime; sess = onnxruntime.InferenceSession({path!r}); "
            f"out = sess.run(None, {{{INPUT_NAME!r}: numpy.zeros((1, {c}, {h}, {w}), numpy.float32)}})[0]")
