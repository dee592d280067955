"""Initialising a run from pretrained weights (``config.init``): one pure function.

    config.init = dict(path=...,            # a vitjax workdir, or PyTorch weights (timm / HF / open_clip)
                       drop_head=False,      # keep the new head's initialisation (new classes)
                       encoder_only=False,   # MAE <-> ViT classifier: move the encoder only
                       target=None)          # "img": load a ViT into a CLIP's image tower (LiT)

``init_params(init, model, params)`` takes the freshly initialised parameters (numpy, on the host)
and returns them with the pretrained groups in place; the trainer only places the result on the
mesh. PyTorch files go through the interop layer's converter registry (``vitjax.interop``).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import jax

from vitjax.interop.registry import import_weights
from vitjax.models.mae import MAE
from vitjax.models.posemb import resize_posemb
from vitjax.models.vit import ViT
from vitjax.param_tree import first_mismatch
from vitjax.training.workdir import is_workdir, load_workdir

log = logging.getLogger("vitjax")


def load_params(path: str, model) -> Any:
    """Host (numpy) params for ``model`` from a vitjax workdir or a PyTorch weights file."""
    if is_workdir(path):
        return jax.device_get(load_workdir(path)[2])
    return import_weights(path, model)


def init_params(init: Mapping[str, Any], model, params: Any) -> dict:
    """``params`` (host arrays) with the groups ``init.path`` provides in place of the fresh ones.

    Raises ValueError naming the path and the first parameter that does not fit."""
    path, drop_head = init["path"], bool(init.get("drop_head", False))
    params = dict(params)
    if init.get("target"):
        return _init_subtree(params, path, init["target"], model)
    encoder_only = bool(init.get("encoder_only", False))
    target_is_mae = isinstance(model, MAE)
    if is_workdir(path):
        raw = dict(jax.device_get(load_workdir(path)[2]))
        loaded = _encoder_init(raw, params, encoder_only, path)
        if target_is_mae and "decoder_pred" not in raw:
            log.info("initialising the MAE encoder from %s", path)
            return _put_subtree(params, "encoder", loaded["encoder"])
        if drop_head:
            loaded = {k: v for k, v in loaded.items() if not k.startswith("head")}
        pos = loaded.get("pos_embedding")
        if pos is not None and hasattr(model, "grid") and pos.shape[1] != \
                model.num_prefix_tokens + model.grid[0] * model.grid[1]:
            # Fine-tuning at another resolution: interpolate the learned table to the new grid.
            old = int(round((pos.shape[1] - model.num_prefix_tokens) ** 0.5))
            loaded["pos_embedding"] = resize_posemb(pos, model.num_prefix_tokens, (old, old), model.grid)
    elif target_is_mae:
        if not encoder_only:
            raise ValueError(f"config.init.path={path!r} is a PyTorch ViT, which has no MAE decoder; set "
                             f"config.init.encoder_only=True to start the MAE encoder from it")
        return _put_subtree(params, "encoder", import_weights(path, ViT(**model.encoder_config()), drop_head=True))
    else:
        loaded = import_weights(path, model, drop_head=drop_head)
    current = {k: v for k, v in params.items() if k in loaded}
    problem = first_mismatch(current, loaded)
    if problem:
        raise ValueError(f"config.init.path={path!r} does not fit the model: {problem}")
    params.update(loaded)
    log.info("initialised %d parameter groups from %s", len(loaded), path)
    return params


def _init_subtree(params: dict, path: str, target: str, model) -> dict:
    """``config.init.target="img"``: a pretrained ViT (PyTorch weights, or a vitjax ViT/MAE workdir,
    without its head or decoder) becomes the CLIP image tower ``params["img"]`` (LiT: lock it with
    ``objective.lock_image``). Build the CLIP with ``vision_pre_norm=False`` for a plain ViT."""
    if target != "img" or not hasattr(model, "image_tower_module"):
        raise ValueError(f"config.init.target={target!r}: only 'img' (a CLIP's image tower) is supported")
    tower = model.image_tower_module()
    current = dict(params["img"])
    if is_workdir(path):
        raw = dict(jax.device_get(load_workdir(path)[2]))
        if "decoder_pred" in raw:          # an MAE: its encoder is a ViT
            raw = dict(raw["encoder"])
        loaded = {k: v for k, v in raw.items() if k not in ("head", "head_dist")}
    else:
        loaded = import_weights(path, tower, drop_head=True)
    problem = first_mismatch({k: v for k, v in current.items() if k in loaded}, loaded)
    if problem:
        raise ValueError(f"config.init.path={path!r} does not fit the image tower: {problem}")
    missing = sorted(set(current) - set(loaded))
    if missing:
        raise ValueError(f"config.init.path={path!r} lacks image-tower parameters {missing}; build the CLIP "
                         f"with model.vision_pre_norm=False (and the ViT's pooling) to match a plain ViT")
    log.info("initialising the image tower from %s", path)
    return _put_subtree(params, "img", loaded)


def _put_subtree(params: dict, key: str, loaded: dict) -> dict:
    """``params`` with the groups of ``loaded`` replacing those under ``params[key]``."""
    return dict(params, **{key: dict(params[key], **loaded)})


def _encoder_init(loaded: dict, target: Any, encoder_only: bool, path: str) -> dict:
    """Adapts a workdir's params to the model being initialised when one is an MAE and the other a
    ViT classifier: with ``config.init.encoder_only`` the encoder moves across (the MAE's decoder, or
    the classifier's head and tokens the other model lacks, are left out); without it, a clear
    error naming what is missing and extra."""
    src_mae, dst_mae = "decoder_pred" in loaded, "decoder_pred" in target
    if src_mae == dst_mae:
        return loaded
    extra = sorted(set(loaded) - set(target))
    missing = sorted(set(target) - set(loaded))
    if not encoder_only:
        kind = ("an MAE checkpoint (encoder + decoder)", "a ViT classifier") if src_mae else \
            ("a ViT classifier checkpoint", "an MAE")
        raise ValueError(f"config.init.path={path!r} is {kind[0]} but the model is {kind[1]}: the checkpoint "
                         f"has parameters {extra} that the model lacks, and lacks {missing}. Set "
                         f"config.init.encoder_only=True to load the encoder only.")
    if src_mae:         # MAE -> classifier: the encoder's tree is a ViT's; keep what the classifier has
        enc = loaded["encoder"]
        kept = {k: v for k, v in enc.items() if k in target}
        dropped = sorted(set(enc) - set(kept))
        if dropped:
            log.info("encoder_only: left out %s (the classifier has no such parameters)", dropped)
        return kept
    enc_target = target["encoder"]
    return {"encoder": {k: v for k, v in loaded.items() if k in enc_target}}
