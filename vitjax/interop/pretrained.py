"""``vitjax.create_model(name, pretrained=...)``: a registered model with weights from a file, a
folder or the Hugging Face hub.

    model, params = vitjax.create_model("vit_s16", pretrained="timm/vit_small_patch16_224.augreg_in21k_ft_in1k")
    logits = model.apply({"params": params}, images)          # images [B, 224, 224, 3]

``pretrained`` is one of

- a local file: ``.safetensors`` / ``.bin`` / ``.pt`` / ``.pth`` (timm or HF key names) or ``.npz``
  (big_vision / vision_transformer, ``vitjax.interop.big_vision``);
- a local folder holding ``model.safetensors``, ``pytorch_model.bin`` or ``model.npz`` (what
  ``python -m vitjax.export`` writes; a hub snapshot);
- ``hf-hub:ORG/NAME`` or ``timm/NAME`` (timm's weights live under ``timm/`` on the hub): the first of
  ``model.safetensors``, ``pytorch_model.bin``, ``model.npz`` the repository has, downloaded with
  ``huggingface_hub.hf_hub_download`` into its cache (``HF_HUB_OFFLINE=1`` reads the cache only).

The format is told by the key names (``vitjax.interop.registry.import_weights``). The model's shape
comes from ``name`` and the keyword overrides, as without ``pretrained``; the weights must fit it (the
first missing or mis-shaped tensor is a ValueError naming it and both shapes), classifier head
included: build the model with the checkpoint's ``num_classes`` (or 0 and import with
``import_weights(..., drop_head=True)`` to leave the head out).

This lives in ``interop`` rather than beside ``vitjax.models.create_model`` because loading uses the
converters, a later stage than the models (the import graph runs one way).
"""
from __future__ import annotations

import os
from pathlib import Path

from vitjax.interop.registry import import_weights
from vitjax.models import create_model as build

__all__ = ["create_model", "resolve_pretrained", "HUB_PREFIXES", "WEIGHT_FILES"]

HUB_PREFIXES = ("hf-hub:", "timm/")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.npz")
_FORMS = ("a local checkpoint file (.safetensors, .bin, .pt, .pth or .npz), a local folder holding "
          "model.safetensors, pytorch_model.bin or model.npz, 'hf-hub:ORG/NAME', or 'timm/NAME'")


def _download(repo_id: str) -> str:
    try:
        import huggingface_hub  # noqa: F401  (lazy: optional, installed with the torch extra)
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as e:
        raise ImportError(f"pretrained='{repo_id}' is a hub id, which needs huggingface_hub: pip install "
                          f"huggingface_hub (or vitjax[torch]), or pass a local path") from e
    for name in WEIGHT_FILES:
        try:
            return huggingface_hub.hf_hub_download(repo_id, name)
        except EntryNotFoundError:
            continue
    raise FileNotFoundError(f"hub repository '{repo_id}' has none of {list(WEIGHT_FILES)}")


def resolve_pretrained(pretrained: str | os.PathLike) -> str:
    """A ``pretrained`` value -> the local file or folder to read (hub ids are downloaded first).
    ValueError listing the accepted forms for anything else."""
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained={pretrained!r} is not a path or a hub id (vitjax has no table of "
                         f"named weights); expected {_FORMS}")
    spec = os.fspath(pretrained)
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser())
    if spec.startswith("hf-hub:"):
        repo = spec[len("hf-hub:"):]
    elif spec.startswith("timm/"):
        repo = spec
    else:
        repo = ""
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"pretrained={spec!r} is neither an existing path nor a hub id; expected {_FORMS}")
    return _download(repo)


def create_model(name: str, pretrained: str | os.PathLike | None = None, **overrides):
    """Builds the registered model ``name`` (keyword overrides replace the variant's defaults).

    Without ``pretrained``: returns the module (``vitjax.models.create_model``). With it (a path or a
    hub id, see this module's docstring): returns ``(model, params)``, the module and its weights as
    the inner ``params`` tree (host numpy in ``model.param_dtype``), ready for
    ``model.apply({"params": params}, images)``.
    """
    model = build(name, **overrides)
    if pretrained is None:
        return model
    return model, import_weights(resolve_pretrained(pretrained), model)
