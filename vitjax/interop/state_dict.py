"""The state-dict helpers every PyTorch converter shares (one copy of each).

A PyTorch state dict here is a flat ``{torch name: array}``; vitjax parameters are a nested tree
that ``flat_params`` flattens to ``{"a/b/c": float32 array}`` and ``params_tree`` nests back (both
through ``vitjax.param_tree``, the one tree walker). This module holds:

- conversion of leaves: ``to_numpy`` (torch / jax / numpy -> numpy), ``f32`` (contiguous float32,
  0-d scalars kept 0-d, as torch holds ``logit_scale``), ``fmt_shape`` for error messages;
- vitjax side: ``flat_params``, ``params_tree``, ``need`` (a parameter the configuration requires),
  ``model_shapes`` and ``export_shapes`` (the shapes a model has, and exports to, from abstract
  shapes: nothing is allocated);
- torch side: ``inner_mapping`` / ``unwrap_state_dict`` (checkpoint wrappers, DDP prefixes),
  ``read_state_dict`` (safetensors / .bin / .pt / .pth files and hub folders);
- export folders: ``write_export`` (``model.safetensors`` + ``config.json``), ``channel_values``
  (timm's per-channel mean/std lists) and ``load_snippet`` (the Python line that loads a folder,
  which ``python -m vitjax.export`` prints).

torch is imported only for the files that need it (``.bin/.pt/.pth`` and bf16 safetensors).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from vitjax import param_tree
from vitjax.models.registry import model_param_shapes

__all__ = ["to_numpy", "f32", "fmt_shape", "flat_params", "params_tree", "need", "model_shapes",
           "export_shapes", "inner_mapping", "unwrap_state_dict", "read_state_dict", "write_export",
           "channel_values", "timm_load_snippet", "load_snippet"]


# ----------------------------------------------------------------------------------------------- leaves


def to_numpy(x) -> np.ndarray:
    """A torch tensor, jax array or numpy array -> numpy (bf16/fp16 torch tensors upcast to fp32)."""
    if hasattr(x, "detach"):                    # torch, duck-typed so torch need not be imported
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def f32(x) -> np.ndarray:
    """Contiguous float32 numpy of the same shape (``np.ascontiguousarray`` alone makes 0-d arrays 1-d;
    torch holds scalars such as CLIP's ``logit_scale`` 0-d)."""
    return np.ascontiguousarray(x, dtype=np.float32).reshape(np.shape(x))


def fmt_shape(s) -> str:
    """``(3, 4)`` for any shape-like, as error messages print shapes."""
    return str(tuple(int(i) for i in s))


# ----------------------------------------------------------------------------------------- vitjax side


def flat_params(params) -> dict[str, np.ndarray]:
    """Nested (Frozen)dict of arrays, optionally under ``{"params": ...}`` and/or boxed with
    ``nn.Partitioned`` -> {"a/b/c": float32 array}. (A tree with a top-level ``encoder`` is taken
    as the params themselves: ViT and MAE trees have one.)"""
    if isinstance(params, Mapping) and "params" in params and "encoder" not in params:
        params = params["params"]
    return param_tree.flatten(params, leaf=lambda x: np.asarray(x, dtype=np.float32))


def params_tree(flat: Mapping[str, Any], model) -> dict:
    """{"a/b/c": array} -> the nested params tree of ``model``, contiguous in ``model.param_dtype``
    (what ``model.apply({"params": ...})`` takes; host numpy; 0-d scalars such as CLIP's logit scale
    stay 0-d)."""
    dtype = np.dtype(model.param_dtype)
    return param_tree.unflatten({k: np.ascontiguousarray(v, dtype=dtype).reshape(np.shape(v))
                                 for k, v in flat.items()})


def need(flat: Mapping[str, np.ndarray], key: str, what: str = "model's") -> np.ndarray:
    """``flat[key]``, or a ValueError saying the params come from another configuration (``what``
    names it: "this {what} configuration")."""
    if key not in flat:
        raise ValueError(f"vitjax params lack '{key}', which this {what} configuration needs; "
                         f"were the params made by a model with a different configuration?")
    return flat[key]


def model_shapes(model) -> dict[str, tuple]:
    """{"a/b/c": shape} of ``model``'s parameters, traced abstractly (no compile, no memory; cached
    in ``vitjax.param_tree``)."""
    return param_tree.shapes(model_param_shapes(model))


def export_shapes(export: Callable[[Any, Any], Mapping[str, np.ndarray]], model) -> dict[str, tuple]:
    """{torch name: shape} that ``export(params, model)`` writes for ``model``: the export run on
    zeros of the model's abstract shapes, which checks an import against the exact layout export
    writes (one table of names for both directions)."""
    zeros = param_tree.unflatten({k: np.zeros(s, np.float32) for k, s in model_shapes(model).items()})
    return {k: tuple(np.shape(v)) for k, v in export(zeros, model).items()}


# ------------------------------------------------------------------------------------------ torch side


def inner_mapping(state_dict) -> Mapping:
    """The state dict inside checkpoint wrappers ``{"model": sd}`` / ``{"state_dict": sd}`` /
    ``{"module": sd}`` (DeiT, Lightning, DDP checkpoints)."""
    sd = state_dict
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(sd).__name__}")
    return sd


def unwrap_state_dict(state_dict) -> dict[str, np.ndarray]:
    """Checkpoint dict -> flat {name: numpy}. Unwraps ``{"model": sd}`` / ``{"state_dict": sd}`` (DeiT and
    Lightning checkpoints) and strips DDP's ``module.`` prefix; drops non-tensor entries (epoch, ...)."""
    out = {}
    for k, v in inner_mapping(state_dict).items():
        if not (hasattr(v, "shape") and hasattr(v, "dtype")):
            continue
        k = str(k)
        out[k[len("module."):] if k.startswith("module.") else k] = to_numpy(v)
    return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A checkpoint file or folder -> {name: numpy array}.

    ``*.safetensors`` (read without torch unless it holds bf16), ``*.bin/.pt/.pth`` (``torch.load(path,
    map_location="cpu", weights_only=True)``: plain tensors and containers only, never arbitrary
    pickle), ``*.npz`` (big_vision / vision_transformer JAX checkpoints, read with
    ``allow_pickle=False``), or a folder holding ``model.safetensors``, ``pytorch_model.bin`` or
    ``model.npz``. Wrappers such as
    ``{"model": sd}`` are unwrapped. FileNotFoundError names the path when nothing is there.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.npz"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(f"no model.safetensors, pytorch_model.bin or model.npz in folder "
                                    f"{str(path)!r}")
    elif not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if p.suffix == ".safetensors":
        try:
            return unwrap_state_dict(load_file(str(p)))
        except (TypeError, ValueError):             # dtypes numpy lacks (bf16): go through torch
            from safetensors.torch import load_file as load_torch   # lazy: needs torch, an optional extra
            return unwrap_state_dict(load_torch(str(p), device="cpu"))
    if p.suffix in (".bin", ".pt", ".pth"):
        import torch                                # lazy: torch is an optional extra (vitjax[torch])
        return unwrap_state_dict(torch.load(str(p), map_location="cpu", weights_only=True))
    if p.suffix == ".npz":
        with np.load(str(p), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    raise ValueError(f"unsupported checkpoint file {str(path)!r}: expected .safetensors, .bin, .pt, .pth "
                     f"or .npz")


# --------------------------------------------------------------------------------------- export folders


WEIGHTS_FILE = "model.safetensors"     # what write_export names the weights (export_folder reports it)


def write_export(out_dir: str | os.PathLike, state_dict: Mapping[str, Any], config: dict) -> Path:
    """Writes ``out_dir/model.safetensors`` (metadata format=pt, which transformers requires) and
    ``out_dir/config.json``; creates the folder. Scalars stay 0-d. Returns its Path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for k, v in state_dict.items():
        v = to_numpy(v)
        arrays[k] = np.ascontiguousarray(v).reshape(np.shape(v))
    save_file(arrays, str(out / "model.safetensors"), metadata={"format": "pt"})
    with open(out / "config.json", "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return out


def channel_values(value, channels: int) -> list[float]:
    """A scalar or per-channel mean/std -> the ``channels``-long list timm's ``pretrained_cfg`` holds."""
    v = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (channels,))
    return [float(x) for x in v]


def timm_load_snippet(out_dir: str | os.PathLike, config: dict | None = None) -> str:
    """The Python line that loads a ``write_export(out_dir, to_timm(...), timm_config(...))`` folder."""
    del config                                      # local-dir: reads everything from config.json
    return f"timm.create_model({'local-dir:' + str(out_dir)!r}, pretrained=True)"


def load_snippet(kind: str, out_dir: str, config: dict) -> str:
    """The Python line that loads an export folder of ``kind`` (a converter's ``kind``: "timm",
    "open_clip", "npz", "hf_vitmodel", or any HF kind, loaded by its config's architecture)."""
    if kind == "open_clip":
        return (f"net = open_clip.model.CLIP(**json.load(open({os.path.join(out_dir, 'config.json')!r}))); "
                f"net.load_state_dict(safetensors.torch.load_file({os.path.join(out_dir, 'model.safetensors')!r}))")
    if kind == "timm":
        return timm_load_snippet(out_dir, config)
    if kind == "npz":           # vitjax.interop.big_vision's folder, read by timm's own npz loader
        return (f"import json, timm.models.vision_transformer as tv; net = tv.VisionTransformer(**json.load(open("
                f"{os.path.join(out_dir, 'config.json')!r}))['timm_model_args']).eval(); "
                f"tv._load_weights(net, {os.path.join(out_dir, 'model.npz')!r})")
    if kind == "hf_vitmodel":
        return f"transformers.ViTModel.from_pretrained({out_dir!r}, add_pooling_layer=False)"
    arch = config.get("architectures", ["AutoModel"])[0]
    return f"transformers.{arch}.from_pretrained({out_dir!r})"
