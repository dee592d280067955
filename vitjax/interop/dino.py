"""DINO's backbone between vitjax and PyTorch: timm ``VisionTransformer`` and HF ``ViTModel``.

A DINO model's ``params["backbone"]`` is exactly a ViT's tree (``dino_backbone``), so both formats go
through ``vitjax.interop.vit``::

    vit, backbone = dino_backbone(model, params)
    write_export("out/timm", to_timm(params, model), timm_config(model))   # timm's ``.dino`` layout
    timm.create_model("local-dir:out/timm", pretrained=True)               # num_classes=0: features
    write_export("out/hf", to_hf(params, model), hf_config(model))
    transformers.ViTModel.from_pretrained("out/hf", add_pooling_layer=False)

The projection head is not exported (neither library has one). Import a released backbone with
``vitjax.interop.vit.from_timm(state_dict, dino_backbone(model)[0])``. Registered converters
(``vitjax.interop.registry``): ``(DINO, "timm")`` and ``(DINO, "hf")``, export only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vitjax.interop import vit as vx
from vitjax.interop.registry import register_converter
from vitjax.models.dino import DINO
from vitjax.models.vit import ViT

__all__ = ["dino_backbone", "to_timm", "timm_config", "to_hf", "hf_config"]


def dino_backbone(model: DINO, params=None):
    """(ViT, its params) of a DINO model's backbone: ``params["backbone"]`` is exactly that ViT's tree.
    ``dynamic_img_size`` is dropped: it only lets vitjax resample positions for other input sizes and
    changes neither the parameters nor the exported shapes (the table is for ``image_size``)."""
    vit = ViT(**{k: v for k, v in model.backbone_config().items() if k != "dynamic_img_size"})
    return vit, (params["backbone"] if params is not None else None)


def to_timm(params, model: DINO) -> dict[str, np.ndarray]:
    """The backbone of DINO ``params`` as a timm ``VisionTransformer`` state dict (num_classes=0)."""
    vit, backbone = dino_backbone(model, params)
    return vx.to_timm(backbone, vit)


def timm_config(model: DINO, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5) -> dict:
    """timm config.json of ``to_timm``'s weights (``mean``/``std``: the run's input normalisation)."""
    return vx.timm_config(dino_backbone(model)[0], mean=mean, std=std)


def to_hf(params, model: DINO) -> dict[str, np.ndarray]:
    """The backbone as HF ``ViTModel`` names (``embeddings.*``, ``encoder.layer.{i}.*``, ``layernorm.*``;
    no ``vit.`` prefix, no pooler: load with ``add_pooling_layer=False``)."""
    vit, backbone = dino_backbone(model, params)
    return {k[len("vit."):]: v for k, v in vx.to_hf(backbone, vit).items()}


def hf_config(model: DINO) -> dict:
    """HF config.json (ViTConfig, ``architectures=["ViTModel"]``, no labels) of ``to_hf``'s weights."""
    cfg = vx.hf_config(dino_backbone(model)[0])
    for k in ("id2label", "label2id"):
        cfg.pop(k)
    return dict(cfg, architectures=["ViTModel"])


register_converter(DINO, "timm", export=to_timm, config=timm_config, takes_normalisation=True)
register_converter(DINO, "hf", kind="hf_vitmodel", export=to_hf, config=hf_config)
