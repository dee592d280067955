"""Test-session setup: 8 simulated CPU devices, offline hubs, and CPU-torch compatibility.

Must run before jax initialises its backend, so it lives in conftest (imported first by pytest).
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # never wait on DNS for a hub download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")


def _cpu_torchvision_fix():
    """The only torchvision matching torch 2.13 CPU is a CUDA build whose import dies on missing op
    schemas (torchvision::nms); defining them first lets timm/open_clip import. No effect on a CUDA
    torch or when torch is absent."""
    try:
        import torch
    except ImportError:
        return
    if torch.version.cuda is None and not hasattr(torch.ops.torchvision, "nms"):
        try:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            sys.modules[__name__]._tv_lib = lib
        except Exception:
            pass


_cpu_torchvision_fix()
