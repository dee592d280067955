"""vitjax: pretraining vision and multimodal transformers in JAX/Flax across TPU/GPU meshes.

    vitjax.create_model("vit_b16", num_classes=10)      # vitjax.models
    model, params = vitjax.create_model("vit_b16", pretrained="timm/vit_base_patch16_224.augreg2_in21k_ft_in1k")
    vitjax.list_models("vit_*")
    config, model, params = vitjax.load("workdirs/run")  # vitjax.training.workdir

The names are imported on first use (PEP 562), so that ``python -m vitjax.data`` and converter
worker processes do not pay for importing JAX and Flax.
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "vitjax.interop.pretrained",    # vitjax.models.create_model plus pretrained=
    "list_models": "vitjax.models",
    "load": "vitjax.training.workdir",
    "predict": "vitjax.predict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitjax' has no attribute {name!r}")
