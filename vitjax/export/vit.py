"""ViT / DeiT weights between vitjax (Flax) and PyTorch: timm ``VisionTransformer`` and HF ``ViT``/``DeiT``.

Export (vitjax -> PyTorch)::

    from vitjax.export.vit import to_timm, timm_config, to_hf, hf_config, write_export
    write_export("out/timm", to_timm(params, model), timm_config(model))
    write_export("out/hf", to_hf(params, model), hf_config(model))

Each folder then holds ``model.safetensors`` + ``config.json`` and loads with::

    import timm
    net = timm.create_model("local-dir:out/timm", pretrained=True)     # timm's local-dir: scheme (1.0.31)

    import transformers
    net = transformers.ViTForImageClassification.from_pretrained("out/hf")
    # DeiT (distilled=True): transformers.DeiTForImageClassificationWithTeacher.from_pretrained("out/hf")

timm's ``local-dir:`` reads ``config.json`` (``architecture`` picks the entry point, ``model_args`` override
all of its shape arguments, ``pretrained_cfg`` gives the preprocessing and class count) and loads
``model.safetensors`` with ``load_state_dict(strict=True)``, so a successful call means every key matched.
Without ``local-dir:`` (older timm), pass the class count too, or timm compares ``num_classes`` with the
registry's 1000 and silently drops the head::

    cfg = json.load(open("out/timm/config.json"))
    net = timm.create_model(cfg["architecture"], pretrained=True, **cfg["model_args"],
                            pretrained_cfg_overlay=dict(file="out/timm/model.safetensors",
                                                        num_classes=cfg["num_classes"]))

Import (PyTorch -> vitjax)::

    params = import_pretrained("path/to/dir_or_file", model, drop_head=False)
    logits = model.apply({"params": params}, images)

``import_pretrained`` takes a ``.safetensors`` file, a ``.bin/.pt/.pth`` file (read with
``torch.load(weights_only=True)``, never unrestricted pickle) or a folder with ``model.safetensors`` /
``pytorch_model.bin``; it detects timm vs HF key names (HF both on-disk/legacy names and transformers
v5 in-memory names) and returns the *inner* parameter dict (what ``model.init(...)["params"]`` holds
after ``flax.linen.meta.unbox``), as host numpy arrays of ``model.param_dtype``.

Layouts (D width, H heads, hd = D/H, M mlp_dim, P patch, C channels, K classes, T = prefix + N tokens):

    vitjax                              timm                         HF (on-disk, under vit./deit.)
    cls (1,1,D)                         cls_token                    embeddings.cls_token
    dist (1,1,D)                        dist_token                   embeddings.distillation_token
    pos_embedding (1,T,D)               pos_embed                    embeddings.position_embeddings
    patch_embed/kernel (P,P,C,D) HWIO   patch_embed.proj.weight      embeddings.patch_embeddings.
                                          (D,C,P,P) OIHW               projection.weight
    block{i}/attn/{query,key,value}/    blocks.{i}.attn.qkv.weight   encoder.layer.{i}.attention.attention.
      kernel (D,H,hd), bias (H,hd)        (3D,D) rows [q;k;v]          {query,key,value}.weight (D,D)
    block{i}/attn/out/kernel (H,hd,D)   blocks.{i}.attn.proj.weight  encoder.layer.{i}.attention.output.dense
    block{i}/norm1, norm2               blocks.{i}.norm1, norm2      encoder.layer.{i}.layernorm_before/after
    block{i}/mlp/fc1, fc2               blocks.{i}.mlp.fc1, fc2      encoder.layer.{i}.intermediate.dense,
      kernel (in,out)                     weight (out,in)              encoder.layer.{i}.output.dense
    encoder_norm (token pool)           norm                         layernorm
    encoder_norm (gap pool)             fc_norm (norm = Identity)    (no HF equivalent)
    head/kernel (D,K)                   head.weight (K,D)            classifier / cls_classifier
    head_dist/kernel (D,K)              head_dist.weight             distillation_classifier

Only numpy and safetensors are imported here; torch is imported inside ``read_state_dict`` for
``.bin/.pt/.pth`` files, and jax/flax/vitjax.models inside the functions that need them.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "to_timm", "timm_config", "timm_load_snippet", "from_timm",
    "to_hf", "hf_config", "from_hf",
    "detect_format", "read_state_dict", "write_export", "model_kwargs_from_torch_config",
    "import_pretrained",
]

# timm 1.0.31 entry points whose default shape a vitjax model may match: (name size) -> (D, depth, H);
# all have mlp_ratio 4. Names not registered in timm (e.g. vit_tiny_patch32_224) fall back to
# vit_base_patch16_224 + model_args, which builds the same module.
_TIMM_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
               "large": (1024, 24, 16), "huge": (1280, 32, 16)}
_TIMM_NAMES = frozenset({
    "deit_base_distilled_patch16_224", "deit_base_distilled_patch16_384", "deit_small_distilled_patch16_224",
    "deit_tiny_distilled_patch16_224", "vit_base_patch8_224", "vit_base_patch16_224", "vit_base_patch16_384",
    "vit_base_patch32_224", "vit_base_patch32_384", "vit_huge_patch14_224", "vit_large_patch14_224",
    "vit_large_patch16_224", "vit_large_patch16_384", "vit_large_patch32_224", "vit_large_patch32_384",
    "vit_small_patch8_224", "vit_small_patch16_224", "vit_small_patch16_384", "vit_small_patch32_224",
    "vit_small_patch32_384", "vit_tiny_patch16_224", "vit_tiny_patch16_384",
})
_TIMM_NAME_RE = re.compile(r"(vit|deit)_(tiny|small|base|large|huge)_(distilled_)?patch(\d+)_(\d+)")

# vitjax activation <-> (timm act_layer, HF hidden_act). All three libraries agree numerically.
_ACTS = {"gelu": ("gelu", "gelu"), "gelu_tanh": ("gelu_tanh", "gelu_pytorch_tanh"),
         "quick_gelu": ("quick_gelu", "quick_gelu")}
_HF_ACTS_IN = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
               "quick_gelu": "quick_gelu"}

_TIMM_HEADS = ("head", "head_dist")
_HF_HEADS = ("classifier", "cls_classifier", "distillation_classifier")


# ----------------------------------------------------------------------------------------------------
# small helpers


def _dims(model) -> dict[str, int]:
    d, h = model.width, model.num_heads
    if d % h:
        raise ValueError(f"width {d} is not divisible by num_heads={h}")
    gh, gw = model.grid
    return dict(D=d, H=h, hd=d // h, M=model.mlp_dim, P=model.patch_size, C=model.in_channels,
                K=model.num_classes, N=gh * gw, T=model.num_prefix_tokens + gh * gw)


def _to_np(x) -> np.ndarray:
    """A torch tensor, jax array or numpy array -> numpy (bf16/fp16 torch tensors upcast to fp32)."""
    if hasattr(x, "detach"):                    # torch, duck-typed so torch need not be imported
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _flat_params(params) -> dict[str, np.ndarray]:
    """Nested (Frozen)dict of arrays, optionally under ``{"params": ...}`` and/or boxed with
    ``nn.Partitioned`` -> {"a/b/c": float32 array}."""
    if isinstance(params, Mapping) and "params" in params and "encoder" not in params:
        params = params["params"]
    out: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
            return
        if hasattr(node, "unbox"):              # flax AxisMetadata (nn.Partitioned, LogicallyPartitioned)
            node = node.unbox()
        out[prefix] = np.asarray(node, dtype=np.float32)

    walk(params, "")
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def _need(flat: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in flat:
        raise ValueError(f"vitjax params lack '{key}', which this model's configuration needs; "
                         f"were the params made by a model with a different configuration?")
    return flat[key]


def _posemb_value(flat: Mapping[str, np.ndarray], model) -> np.ndarray:
    """(1, prefix+N, D): the learned table, or for ``posemb="sincos2d"`` the fixed table the model adds
    (zero rows for the prefix tokens), written out so torch models built with learned tables match."""
    if model.posemb == "learned":
        return _need(flat, "pos_embedding")
    from vitjax.models.posemb import sincos_2d_with_prefix
    return sincos_2d_with_prefix(model.width, *model.grid, model.num_prefix_tokens)[None]


def _c(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _inner_mapping(state_dict) -> Mapping:
    sd = state_dict
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(sd).__name__}")
    return sd


def _unwrap_state_dict(state_dict) -> dict[str, np.ndarray]:
    """Checkpoint dict -> flat {name: numpy}. Unwraps ``{"model": sd}`` / ``{"state_dict": sd}`` (DeiT and
    Lightning checkpoints) and strips DDP's ``module.`` prefix; drops non-tensor entries (epoch, ...)."""
    out = {}
    for k, v in _inner_mapping(state_dict).items():
        if not (hasattr(v, "shape") and hasattr(v, "dtype")):
            continue
        k = str(k)
        out[k[len("module."):] if k.startswith("module.") else k] = _to_np(v)
    return out


def _fmt_shape(s) -> str:
    return str(tuple(int(i) for i in s))


def _reconcile(sd: dict[str, np.ndarray], expected: dict[str, tuple], model, *, drop_head: bool,
               head_names: Sequence[str], posemb_key: str, show, fmt: str) -> dict[str, np.ndarray]:
    """Checks a normalised torch state dict against the expected ``{key: shape}`` of ``model``.

    Resizes the position table to the model's grid, handles classifier heads (``drop_head``) and raises
    ValueError naming the first missing / mismatched / unexpected key with expected and actual shapes.
    ``show(key)`` gives the name to print (HF keys get their ``vit.``/``deit.`` prefix back).
    """
    sd = dict(sd)
    is_head = lambda k: k.split(".")[0] in head_names  # noqa: E731
    ckpt_heads = [k for k in sd if is_head(k)]
    if drop_head:
        for k in ckpt_heads:
            del sd[k]
    else:
        model_heads = [k for k in expected if is_head(k) and k.endswith(".weight")]
        if model.num_classes == 0 and ckpt_heads:
            k = next((h for h in ckpt_heads if h.endswith(".weight")), ckpt_heads[0])
            raise ValueError(
                f"the checkpoint has a classifier head '{show(k)}' of shape {_fmt_shape(sd[k].shape)} "
                f"but the model has num_classes=0; pass drop_head=True to discard it, or build the model "
                f"with num_classes={sd[k].shape[0]}")
        for k in model_heads:
            if k not in sd:
                raise ValueError(
                    f"the checkpoint has no classifier head '{show(k)}' (expected shape "
                    f"{_fmt_shape(expected[k])}, num_classes={model.num_classes}); pass drop_head=True to "
                    f"keep the model's freshly initialised head, or build it with num_classes=0")
            if tuple(sd[k].shape) != tuple(expected[k]):
                raise ValueError(
                    f"classifier head '{show(k)}' has shape {_fmt_shape(sd[k].shape)} "
                    f"({sd[k].shape[0]} classes) but the model expects {_fmt_shape(expected[k])} "
                    f"(num_classes={model.num_classes}); pass drop_head=True to keep the model's freshly "
                    f"initialised head, or build the model with num_classes={sd[k].shape[0]}")

    # Position table: a different grid is interpolated. A fixed sin-cos model has no parameter for it;
    # the table is only compared with the fixed one (on the same grid) so that importing a learned
    # table into a sin-cos model fails loudly instead of silently changing the function.
    if posemb_key in sd and posemb_key in expected:
        pe = sd[posemb_key]
        want = tuple(expected[posemb_key])
        prefix = model.num_prefix_tokens
        if tuple(pe.shape) != want:
            n_old = pe.shape[1] - prefix if pe.ndim == 3 else -1
            g = math.isqrt(n_old) if n_old > 0 else 0
            if pe.ndim != 3 or pe.shape[0] != 1 or pe.shape[2] != want[2] or g * g != n_old:
                raise ValueError(
                    f"shape mismatch for '{show(posemb_key)}': expected {_fmt_shape(want)}, got "
                    f"{_fmt_shape(pe.shape)} (cannot read it as {prefix} prefix tokens plus a square grid "
                    f"of width {want[2]})")
            if model.posemb == "learned":
                from vitjax.models.posemb import resize_posemb
                pe = resize_posemb(pe.astype(np.float32), prefix, (g, g), model.grid)
        elif model.posemb == "sincos2d":
            err = float(np.max(np.abs(pe.astype(np.float32) - _posemb_value({}, model))))
            if err > 1e-4:
                raise ValueError(
                    f"'{show(posemb_key)}' is not the fixed 2-D sin-cos table this model (posemb='sincos2d') "
                    f"adds (max abs difference {err:.3g}); build the model with posemb='learned' to import "
                    f"a learned position embedding")
        learned = model.posemb == "learned"
        sd[posemb_key] = np.asarray(pe).reshape(want) if learned else _posemb_value({}, model)

    for k, shape in expected.items():
        if k not in sd:
            hint = ""
            if fmt == "timm" and k.startswith("fc_norm.") and "norm.weight" in sd:
                hint = (" (the checkpoint normalises before pooling, timm fc_norm=False; vitjax's "
                        "pool='gap' normalises the average, timm's fc_norm)")
            elif fmt == "timm" and k.startswith("norm.") and "fc_norm.weight" in sd:
                hint = " (the checkpoint is average-pooled: build the model with pool='gap')"
            raise ValueError(f"missing key '{show(k)}' in the {fmt} checkpoint (expected shape "
                             f"{_fmt_shape(shape)}){hint}")
        if tuple(sd[k].shape) != tuple(shape):
            raise ValueError(f"shape mismatch for '{show(k)}': expected {_fmt_shape(shape)} (from the vitjax "
                             f"model's configuration), got {_fmt_shape(sd[k].shape)}")
    for k, v in sd.items():
        if k not in expected:
            raise ValueError(f"unexpected key '{show(k)}' (shape {_fmt_shape(v.shape)}) in the {fmt} "
                             f"checkpoint: the vitjax model (pool={model.pool!r}, "
                             f"distilled={model.distilled}, qkv_bias={model.qkv_bias}, depth={model.depth}) "
                             f"has no such parameter")
    return sd


def _finish(flat: dict[str, np.ndarray], model) -> dict:
    """Casts to ``model.param_dtype`` and checks the tree against ``jax.eval_shape(model.init)``."""
    want = _init_shapes(model)
    dtype = np.dtype(model.param_dtype)
    for k, shape in want.items():
        if k in ("head/kernel", "head/bias", "head_dist/kernel", "head_dist/bias") and k not in flat:
            continue                                  # drop_head: the caller keeps its own head
        if k not in flat:
            raise ValueError(f"missing vitjax parameter '{k}' (expected shape {_fmt_shape(shape)})")
        if tuple(flat[k].shape) != tuple(shape):
            raise ValueError(f"shape mismatch for vitjax parameter '{k}': expected {_fmt_shape(shape)}, "
                             f"got {_fmt_shape(flat[k].shape)}")
    for k in flat:
        if k not in want:
            raise ValueError(f"unexpected vitjax parameter '{k}' (shape {_fmt_shape(flat[k].shape)})")
    return _unflatten({k: np.ascontiguousarray(v, dtype=dtype) for k, v in flat.items()})


@functools.lru_cache(maxsize=8)
def _init_shapes(model) -> dict[str, tuple]:
    """{"a/b/c": shape} of ``model.init``'s params, traced abstractly (no compile, no memory); cached
    because tracing a deep model takes about a second and flax modules hash by their fields."""
    import jax
    import jax.numpy as jnp
    from flax.linen import meta

    s = model.image_size
    abstract = jax.eval_shape(model.init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, s, s, model.in_channels), jnp.float32))
    return _flat_params_shapes(meta.unbox(abstract)["params"])


def _flat_params_shapes(tree, prefix="") -> dict[str, tuple]:
    out = {}
    for k, v in tree.items():
        p = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flat_params_shapes(v, p))
        else:
            out[p] = tuple(v.shape)
    return out


# ----------------------------------------------------------------------------------------------------
# timm


def _timm_shapes(model, heads: bool = True) -> dict[str, tuple]:
    """{timm key: torch shape} of the timm VisionTransformer(Distilled) equal to ``model``."""
    d = _dims(model)
    D, M, P, C, K = d["D"], d["M"], d["P"], d["C"], d["K"]
    out: dict[str, tuple] = {}
    if model.pool == "token":
        out["cls_token"] = (1, 1, D)
    if model.distilled:
        out["dist_token"] = (1, 1, D)
    out["pos_embed"] = (1, d["T"], D)
    out["patch_embed.proj.weight"] = (D, C, P, P)
    out["patch_embed.proj.bias"] = (D,)
    for i in range(model.depth):
        b = f"blocks.{i}."
        out[b + "norm1.weight"] = out[b + "norm1.bias"] = (D,)
        out[b + "attn.qkv.weight"] = (3 * D, D)
        if model.qkv_bias:
            out[b + "attn.qkv.bias"] = (3 * D,)
        out[b + "attn.proj.weight"], out[b + "attn.proj.bias"] = (D, D), (D,)
        out[b + "norm2.weight"] = out[b + "norm2.bias"] = (D,)
        out[b + "mlp.fc1.weight"], out[b + "mlp.fc1.bias"] = (M, D), (M,)
        out[b + "mlp.fc2.weight"], out[b + "mlp.fc2.bias"] = (D, M), (D,)
    norm = "fc_norm" if model.pool == "gap" else "norm"
    out[f"{norm}.weight"] = out[f"{norm}.bias"] = (D,)
    if heads and K > 0:
        for h in (("head", "head_dist") if model.distilled else ("head",)):
            out[f"{h}.weight"], out[f"{h}.bias"] = (K, D), (K,)
    return out


def to_timm(params, model) -> dict[str, np.ndarray]:
    """vitjax ViT/DeiT params -> timm ``VisionTransformer`` (or ``VisionTransformerDistilled``) state dict.

    ``params``: the model's parameter tree (``{"params": ...}`` or its content, boxed or unboxed).
    Returns {timm key: float32 numpy}, e.g. ``blocks.0.attn.qkv.weight`` (3D, D) with rows [q; k; v];
    ``pos_embed`` (1, prefix + N, D) is written for sin-cos models too (the fixed table's values). GAP
    models map ``encoder_norm`` to ``fc_norm.*``; DeiT adds ``dist_token`` and ``head_dist.*``.
    """
    f = _flat_params(params)
    d = _dims(model)
    D = d["D"]
    out: dict[str, np.ndarray] = {}
    if model.pool == "token":
        out["cls_token"] = _need(f, "cls")
    if model.distilled:
        out["dist_token"] = _need(f, "dist")
    out["pos_embed"] = _posemb_value(f, model)
    out["patch_embed.proj.weight"] = _need(f, "patch_embed/kernel").transpose(3, 2, 0, 1)   # HWIO -> OIHW
    out["patch_embed.proj.bias"] = _need(f, "patch_embed/bias")
    for i in range(model.depth):
        j, b = f"encoder/block{i}/", f"blocks.{i}."
        out[b + "norm1.weight"], out[b + "norm1.bias"] = _need(f, j + "norm1/scale"), f[j + "norm1/bias"]
        out[b + "attn.qkv.weight"] = np.concatenate(
            [_need(f, j + f"attn/{n}/kernel").reshape(D, -1).T for n in ("query", "key", "value")], 0)
        if model.qkv_bias:
            out[b + "attn.qkv.bias"] = np.concatenate(
                [_need(f, j + f"attn/{n}/bias").reshape(-1) for n in ("query", "key", "value")], 0)
        out[b + "attn.proj.weight"] = _need(f, j + "attn/out/kernel").reshape(-1, D).T
        out[b + "attn.proj.bias"] = f[j + "attn/out/bias"]
        out[b + "norm2.weight"], out[b + "norm2.bias"] = _need(f, j + "norm2/scale"), f[j + "norm2/bias"]
        for n in ("fc1", "fc2"):
            out[b + f"mlp.{n}.weight"] = _need(f, j + f"mlp/{n}/kernel").T
            out[b + f"mlp.{n}.bias"] = f[j + f"mlp/{n}/bias"]
    norm = "fc_norm" if model.pool == "gap" else "norm"
    out[f"{norm}.weight"], out[f"{norm}.bias"] = _need(f, "encoder_norm/scale"), f["encoder_norm/bias"]
    if model.num_classes > 0:
        for h in (("head", "head_dist") if model.distilled else ("head",)):
            out[f"{h}.weight"], out[f"{h}.bias"] = _need(f, f"{h}/kernel").T, f[f"{h}/bias"]
    return {k: _c(v) for k, v in out.items()}


def _timm_architecture(model) -> str:
    """A registered timm name whose defaults match ``model``'s shape, else a generic one.

    The name only selects the entry point (and so the class: DeiT distilled -> VisionTransformerDistilled);
    ``model_args`` in the config override every shape argument anyway.
    """
    sizes = {v: k for k, v in _TIMM_SIZES.items()}
    size = sizes.get((model.width, model.depth, model.num_heads))
    if size and model.mlp_dim == 4 * model.width:
        fam = f"deit_{size}_distilled" if model.distilled else f"vit_{size}"
        name = f"{fam}_patch{model.patch_size}_{model.image_size}"
        if name in _TIMM_NAMES:
            return name
    return "deit_base_distilled_patch16_224" if model.distilled else "vit_base_patch16_224"


def _mean_std(value, channels: int) -> list[float]:
    v = np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (channels,))
    return [float(x) for x in v]


def timm_config(model, *, mean: float | Sequence[float] = 0.5, std: float | Sequence[float] = 0.5,
                label_names: Sequence[str] | None = None) -> dict:
    """config.json for ``timm.create_model("local-dir:<dir>", pretrained=True)`` (timm's hub layout).

    ``mean``/``std``: the input normalisation the model was trained with (vitjax's default 0.5/0.5 maps
    pixels to [-1, 1]; ImageNet's is mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)); timm's
    ``resolve_data_config`` reads them from here. Raises ValueError for settings timm's ViT cannot
    express from a JSON config (a LayerNorm eps other than 1e-6, an mlp_dim timm's int(D * ratio) misses).
    """
    if not math.isclose(model.layernorm_eps, 1e-6, rel_tol=1e-9):
        hint = "; export with --format hf, whose config carries layer_norm_eps" if model.pool == "token" \
            else ""
        raise ValueError(f"timm's ViT LayerNorm eps is fixed at 1e-6 but the model uses "
                         f"layernorm_eps={model.layernorm_eps}{hint}")
    if model.activation not in _ACTS:
        raise ValueError(f"activation {model.activation!r} has no timm equivalent; choose one of "
                         f"{list(_ACTS)}")
    mlp_ratio = model.mlp_dim / model.width
    if int(model.width * mlp_ratio) != model.mlp_dim:   # timm builds the MLP with int(dim * mlp_ratio)
        raise ValueError(f"timm cannot express mlp_dim={model.mlp_dim} for width {model.width} as an "
                         f"mlp_ratio")
    k, s, c = model.num_classes, model.image_size, model.in_channels
    gap = model.pool == "gap"
    model_args = dict(
        num_classes=k, img_size=[s, s], patch_size=model.patch_size, in_chans=c,
        embed_dim=model.width, depth=model.depth, num_heads=model.num_heads, mlp_ratio=mlp_ratio,
        qkv_bias=bool(model.qkv_bias), class_token=not gap, global_pool="avg" if gap else "token",
        fc_norm=gap, no_embed_class=False, pos_embed="learn", reg_tokens=0, pre_norm=False,
        final_norm=True, act_layer=_ACTS[model.activation][0],
    )
    pretrained_cfg = dict(
        tag="vitjax", custom_load=False, input_size=[c, s, s], fixed_input_size=True,
        interpolation="bicubic", crop_pct=0.9, crop_mode="center",
        mean=_mean_std(mean, c), std=_mean_std(std, c), num_classes=k, pool_size=None,
        first_conv="patch_embed.proj", classifier=["head", "head_dist"] if model.distilled else "head",
    )
    cfg = dict(architecture=_timm_architecture(model), num_classes=k, num_features=model.width,
               global_pool=model_args["global_pool"])
    if label_names is not None:
        if len(label_names) != k:
            raise ValueError(f"{len(label_names)} label names for num_classes={k}")
        cfg["label_names"] = list(label_names)
    cfg["model_args"] = model_args
    cfg["pretrained_cfg"] = pretrained_cfg
    return cfg


def timm_load_snippet(out_dir: str | os.PathLike, config: dict | None = None) -> str:
    """The Python line that loads a ``write_export(out_dir, to_timm(...), timm_config(...))`` folder."""
    del config                                      # local-dir: reads everything from config.json
    return f"timm.create_model({'local-dir:' + str(out_dir)!r}, pretrained=True)"


def from_timm(state_dict, model, drop_head: bool = False) -> dict:
    """timm ViT/DeiT state dict -> vitjax params for ``model`` (the inner ``params`` dict, numpy).

    ``state_dict``: {name: torch tensor or array} (``model.state_dict()``, a safetensors dict, or a
    checkpoint wrapping it under ``model``/``state_dict``; a DDP ``module.`` prefix is stripped).
    A ``pos_embed`` for another square grid is resized bilinearly (``resize_posemb``). Heads: a class
    count different from ``model.num_classes`` raises unless ``drop_head=True``, which omits
    ``head``/``head_dist`` from the result whether or not the counts match (the caller keeps its own
    head). Any other missing, unexpected or mis-shaped key raises ValueError naming it with expected
    and actual shapes.
    """
    sd = _unwrap_state_dict(state_dict)
    expected = _timm_shapes(model, heads=not drop_head)
    sd = _reconcile(sd, expected, model, drop_head=drop_head, head_names=_TIMM_HEADS,
                    posemb_key="pos_embed", show=lambda k: k, fmt="timm")
    d = _dims(model)
    D, H = d["D"], d["H"]
    f: dict[str, np.ndarray] = {}
    if model.pool == "token":
        f["cls"] = sd["cls_token"]
    if model.distilled:
        f["dist"] = sd["dist_token"]
    if model.posemb == "learned":
        f["pos_embedding"] = sd["pos_embed"]
    f["patch_embed/kernel"] = sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)   # OIHW -> HWIO
    f["patch_embed/bias"] = sd["patch_embed.proj.bias"]
    for i in range(model.depth):
        j, b = f"encoder/block{i}/", f"blocks.{i}."
        f[j + "norm1/scale"], f[j + "norm1/bias"] = sd[b + "norm1.weight"], sd[b + "norm1.bias"]
        qkv = sd[b + "attn.qkv.weight"]
        for n, w in zip(("query", "key", "value"), np.split(qkv, 3, axis=0)):
            f[j + f"attn/{n}/kernel"] = w.T.reshape(D, H, -1)
        if model.qkv_bias:
            for n, bb in zip(("query", "key", "value"), np.split(sd[b + "attn.qkv.bias"], 3)):
                f[j + f"attn/{n}/bias"] = bb.reshape(H, -1)
        f[j + "attn/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(H, -1, D)
        f[j + "attn/out/bias"] = sd[b + "attn.proj.bias"]
        f[j + "norm2/scale"], f[j + "norm2/bias"] = sd[b + "norm2.weight"], sd[b + "norm2.bias"]
        for n in ("fc1", "fc2"):
            f[j + f"mlp/{n}/kernel"] = sd[b + f"mlp.{n}.weight"].T
            f[j + f"mlp/{n}/bias"] = sd[b + f"mlp.{n}.bias"]
    norm = "fc_norm" if model.pool == "gap" else "norm"
    f["encoder_norm/scale"], f["encoder_norm/bias"] = sd[f"{norm}.weight"], sd[f"{norm}.bias"]
    if not drop_head and model.num_classes > 0:
        for h in (("head", "head_dist") if model.distilled else ("head",)):
            f[f"{h}/kernel"], f[f"{h}/bias"] = sd[f"{h}.weight"].T, sd[f"{h}.bias"]
    return _finish(f, model)


# ----------------------------------------------------------------------------------------------------
# Hugging Face transformers


def _hf_check(model):
    if model.pool == "gap":
        raise ValueError("a GAP-pooled ViT (pool='gap') has no Hugging Face transformers equivalent "
                         "(HF ViT/DeiT classify from the class token); use --format timm (timm "
                         "VisionTransformer with global_pool='avg') instead")


def _hf_prefix(model) -> str:
    return "deit." if model.distilled else "vit."


def _hf_heads(model) -> tuple[str, ...]:
    return ("cls_classifier", "distillation_classifier") if model.distilled else ("classifier",)


def _hf_shapes(model, heads: bool = True) -> dict[str, tuple]:
    """{HF on-disk key without the vit./deit. prefix (heads top-level): torch shape}."""
    d = _dims(model)
    D, M, P, C, K = d["D"], d["M"], d["P"], d["C"], d["K"]
    out: dict[str, tuple] = {"embeddings.cls_token": (1, 1, D)}
    if model.distilled:
        out["embeddings.distillation_token"] = (1, 1, D)
    out["embeddings.position_embeddings"] = (1, d["T"], D)
    out["embeddings.patch_embeddings.projection.weight"] = (D, C, P, P)
    out["embeddings.patch_embeddings.projection.bias"] = (D,)
    for i in range(model.depth):
        b = f"encoder.layer.{i}."
        out[b + "layernorm_before.weight"] = out[b + "layernorm_before.bias"] = (D,)
        for n in ("query", "key", "value"):
            out[b + f"attention.attention.{n}.weight"] = (D, D)
            if model.qkv_bias:
                out[b + f"attention.attention.{n}.bias"] = (D,)
        out[b + "attention.output.dense.weight"], out[b + "attention.output.dense.bias"] = (D, D), (D,)
        out[b + "layernorm_after.weight"] = out[b + "layernorm_after.bias"] = (D,)
        out[b + "intermediate.dense.weight"], out[b + "intermediate.dense.bias"] = (M, D), (M,)
        out[b + "output.dense.weight"], out[b + "output.dense.bias"] = (D, M), (D,)
    out["layernorm.weight"] = out["layernorm.bias"] = (D,)
    if heads and K > 0:
        for h in _hf_heads(model):
            out[f"{h}.weight"], out[f"{h}.bias"] = (K, D), (K,)
    return out


def hf_block_to(f: Mapping[str, np.ndarray], j: str, b: str, D: int, qkv_bias: bool) -> dict[str, np.ndarray]:
    """One vitjax EncoderBlock (flat names under ``j``) -> HF ViTLayer on-disk names under ``b``."""
    out = {b + "layernorm_before.weight": _need(f, j + "norm1/scale"), b + "layernorm_before.bias": f[j + "norm1/bias"]}
    for n in ("query", "key", "value"):
        out[b + f"attention.attention.{n}.weight"] = _need(f, j + f"attn/{n}/kernel").reshape(D, -1).T
        if qkv_bias:
            out[b + f"attention.attention.{n}.bias"] = _need(f, j + f"attn/{n}/bias").reshape(-1)
    out[b + "attention.output.dense.weight"] = _need(f, j + "attn/out/kernel").reshape(-1, D).T
    out[b + "attention.output.dense.bias"] = f[j + "attn/out/bias"]
    out[b + "layernorm_after.weight"] = _need(f, j + "norm2/scale")
    out[b + "layernorm_after.bias"] = f[j + "norm2/bias"]
    out[b + "intermediate.dense.weight"] = _need(f, j + "mlp/fc1/kernel").T
    out[b + "intermediate.dense.bias"] = f[j + "mlp/fc1/bias"]
    out[b + "output.dense.weight"] = _need(f, j + "mlp/fc2/kernel").T
    out[b + "output.dense.bias"] = f[j + "mlp/fc2/bias"]
    return out


def hf_block_from(sd: Mapping[str, np.ndarray], b: str, j: str, D: int, H: int,
                  qkv_bias: bool) -> dict[str, np.ndarray]:
    """HF ViTLayer on-disk names under ``b`` -> one vitjax EncoderBlock (flat names under ``j``)."""
    f = {}
    for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
        f[j + f"{ours}/scale"] = sd[b + f"{theirs}.weight"]
        f[j + f"{ours}/bias"] = sd[b + f"{theirs}.bias"]
    for n in ("query", "key", "value"):
        f[j + f"attn/{n}/kernel"] = sd[b + f"attention.attention.{n}.weight"].T.reshape(D, H, -1)
        if qkv_bias:
            f[j + f"attn/{n}/bias"] = sd[b + f"attention.attention.{n}.bias"].reshape(H, -1)
    f[j + "attn/out/kernel"] = sd[b + "attention.output.dense.weight"].T.reshape(H, -1, D)
    f[j + "attn/out/bias"] = sd[b + "attention.output.dense.bias"]
    for ours, theirs in (("fc1", "intermediate.dense"), ("fc2", "output.dense")):
        f[j + f"mlp/{ours}/kernel"] = sd[b + f"{theirs}.weight"].T
        f[j + f"mlp/{ours}/bias"] = sd[b + f"{theirs}.bias"]
    return f


def to_hf(params, model) -> dict[str, np.ndarray]:
    """vitjax ViT/DeiT params -> HF state dict with the on-disk (hub, transformers v4) names.

    ``vit.embeddings.cls_token`` (1,1,D), ``vit.encoder.layer.{i}.attention.attention.query.weight`` (D,D),
    ..., ``classifier.weight`` (K,D); DeiT (distilled) uses the ``deit.`` prefix, adds
    ``deit.embeddings.distillation_token`` and the heads ``cls_classifier`` / ``distillation_classifier``.
    ``from_pretrained`` of transformers v4 and v5 accept these names. Raises ValueError for GAP models.
    """
    _hf_check(model)
    f = _flat_params(params)
    d = _dims(model)
    D = d["D"]
    p = _hf_prefix(model)
    out: dict[str, np.ndarray] = {p + "embeddings.cls_token": _need(f, "cls")}
    if model.distilled:
        out[p + "embeddings.distillation_token"] = _need(f, "dist")
    out[p + "embeddings.position_embeddings"] = _posemb_value(f, model)
    out[p + "embeddings.patch_embeddings.projection.weight"] = \
        _need(f, "patch_embed/kernel").transpose(3, 2, 0, 1)
    out[p + "embeddings.patch_embeddings.projection.bias"] = _need(f, "patch_embed/bias")
    for i in range(model.depth):
        out.update(hf_block_to(f, f"encoder/block{i}/", f"{p}encoder.layer.{i}.", D, model.qkv_bias))
    out[p + "layernorm.weight"] = _need(f, "encoder_norm/scale")
    out[p + "layernorm.bias"] = f["encoder_norm/bias"]
    if model.num_classes > 0:
        for hf_name, ours in zip(_hf_heads(model), ("head", "head_dist")):
            out[f"{hf_name}.weight"] = _need(f, f"{ours}/kernel").T
            out[f"{hf_name}.bias"] = f[f"{ours}/bias"]
    return {k: _c(v) for k, v in out.items()}


def hf_config(model, *, label_names: Sequence[str] | None = None) -> dict:
    """config.json (ViTConfig, or DeiTConfig for distilled models) matching ``to_hf``'s weights.

    ``architectures`` is ``["ViTForImageClassification"]`` / ``["DeiTForImageClassificationWithTeacher"]``;
    ``layer_norm_eps`` is the model's (HF's own default 1e-12 would not match); ``num_classes=0`` gives an
    empty ``id2label``, for which HF builds an Identity classifier (logits = normalised class token).
    """
    _hf_check(model)
    if model.activation not in _ACTS:
        raise ValueError(f"activation {model.activation!r} has no HF equivalent; choose one of {list(_ACTS)}")
    k = model.num_classes
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} label names for num_classes={k}")
    arch = "DeiTForImageClassificationWithTeacher" if model.distilled else "ViTForImageClassification"
    return dict(
        architectures=[arch],
        model_type="deit" if model.distilled else "vit",
        hidden_size=model.width, num_hidden_layers=model.depth, num_attention_heads=model.num_heads,
        intermediate_size=model.mlp_dim, hidden_act=_ACTS[model.activation][1],
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02,
        layer_norm_eps=float(model.layernorm_eps), image_size=model.image_size, patch_size=model.patch_size,
        num_channels=model.in_channels, qkv_bias=bool(model.qkv_bias), encoder_stride=model.patch_size,
        pooler_output_size=model.width, pooler_act="tanh",
        id2label={str(i): n for i, n in enumerate(names)}, label2id={n: i for i, n in enumerate(names)},
        dtype="float32",
    )


# transformers v5 in-memory names -> on-disk names (transformers/conversion_mapping.py "ViTModel",
# applied in reverse); only keys under layers.{i}. are renamed.
_HF_V5_RENAMES = (
    (re.compile(r"^layers\.(\d+)\.attention\.q_proj\."), r"encoder.layer.\1.attention.attention.query."),
    (re.compile(r"^layers\.(\d+)\.attention\.k_proj\."), r"encoder.layer.\1.attention.attention.key."),
    (re.compile(r"^layers\.(\d+)\.attention\.v_proj\."), r"encoder.layer.\1.attention.attention.value."),
    (re.compile(r"^layers\.(\d+)\.attention\.o_proj\."), r"encoder.layer.\1.attention.output.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc1\."), r"encoder.layer.\1.intermediate.dense."),
    (re.compile(r"^layers\.(\d+)\.mlp\.fc2\."), r"encoder.layer.\1.output.dense."),
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
)


def _hf_normalise(sd: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    """-> (prefix, {on-disk name without prefix (heads top-level): array}).

    Drops ViTModel's ``pooler.*`` and ``embeddings.mask_token`` (masked-image-modelling only): vitjax's
    ViT has neither and neither affects ViTModel's last_hidden_state or a classifier's logits.
    """
    prefix = ""
    for p in ("vit.", "deit."):
        if any(k.startswith(p) for k in sd):
            prefix = p
            break
    out = {}
    for k, v in sd.items():
        body = k[len(prefix):] if prefix and k.startswith(prefix) else k
        if body.startswith("pooler.") or body == "embeddings.mask_token":
            continue
        for pat, rep in _HF_V5_RENAMES:
            new, n = pat.subn(rep, body)
            if n:
                body = new
                break
        out[body] = v
    return prefix, out


def from_hf(state_dict, model, drop_head: bool = False) -> dict:
    """HF ViT/DeiT state dict -> vitjax params for ``model`` (the inner ``params`` dict, numpy).

    Accepts on-disk/legacy names (``vit.encoder.layer.{i}.attention.attention.query.weight``) and
    transformers v5 in-memory names (``vit.layers.{i}.attention.q_proj.weight``), with a ``vit.`` /
    ``deit.`` prefix or none (ViTModel dumps; their pooler is ignored). ViTForImageClassification maps
    to a token-pooled ViT, DeiTForImageClassificationWithTeacher to ``distilled=True``. Position-table
    resizing, ``drop_head`` and the errors are as in ``from_timm``.
    """
    _hf_check(model)
    prefix, sd = _hf_normalise(_unwrap_state_dict(state_dict))
    shown_prefix = prefix
    heads = set(_HF_HEADS)
    show = lambda k: k if k.split(".")[0] in heads else shown_prefix + k  # noqa: E731
    expected = _hf_shapes(model, heads=not drop_head)
    sd = _reconcile(sd, expected, model, drop_head=drop_head, head_names=_HF_HEADS,
                    posemb_key="embeddings.position_embeddings", show=show, fmt="Hugging Face")
    d = _dims(model)
    D, H = d["D"], d["H"]
    f: dict[str, np.ndarray] = {"cls": sd["embeddings.cls_token"]}
    if model.distilled:
        f["dist"] = sd["embeddings.distillation_token"]
    if model.posemb == "learned":
        f["pos_embedding"] = sd["embeddings.position_embeddings"]
    f["patch_embed/kernel"] = sd["embeddings.patch_embeddings.projection.weight"].transpose(2, 3, 1, 0)
    f["patch_embed/bias"] = sd["embeddings.patch_embeddings.projection.bias"]
    for i in range(model.depth):
        f.update(hf_block_from(sd, f"encoder.layer.{i}.", f"encoder/block{i}/", D, H, model.qkv_bias))
    f["encoder_norm/scale"], f["encoder_norm/bias"] = sd["layernorm.weight"], sd["layernorm.bias"]
    if not drop_head and model.num_classes > 0:
        for hf_name, ours in zip(_hf_heads(model), ("head", "head_dist")):
            f[f"{ours}/kernel"], f[f"{ours}/bias"] = sd[f"{hf_name}.weight"].T, sd[f"{hf_name}.bias"]
    return _finish(f, model)


# ----------------------------------------------------------------------------------------------------
# files, formats, configs


def detect_format(state_dict) -> str:
    """``"timm"`` or ``"hf"`` from the key names of a state dict (ValueError if neither)."""
    keys = [str(k) for k in _inner_mapping(state_dict)]
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    if any("embeddings.patch_embeddings.projection" in k or k.endswith("embeddings.cls_token") for k in keys):
        return "hf"
    if any(k == "patch_embed.proj.weight" or k.startswith("blocks.") for k in keys):
        return "timm"
    raise ValueError(f"cannot tell whether this state dict is timm or Hugging Face ViT: neither "
                     f"'patch_embed.proj.weight' (timm) nor '*embeddings.patch_embeddings.projection.weight' "
                     f"(HF) is among its keys; first keys: {keys[:5]}")


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A checkpoint file or folder -> {name: numpy array}.

    ``*.safetensors`` (read without torch unless it holds bf16), ``*.bin/.pt/.pth`` (``torch.load(path,
    map_location="cpu", weights_only=True)``: plain tensors and containers only, never arbitrary
    pickle), or a folder holding ``model.safetensors`` or ``pytorch_model.bin``. Wrappers such as
    ``{"model": sd}`` are unwrapped. FileNotFoundError names the path when nothing is there.
    """
    p = Path(path)
    if p.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in folder {str(path)!r}")
    elif not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if p.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
            return _unwrap_state_dict(load_file(str(p)))
        except (TypeError, ValueError):             # dtypes numpy lacks (bf16): go through torch
            from safetensors.torch import load_file as load_torch
            return _unwrap_state_dict(load_torch(str(p), device="cpu"))
    if p.suffix in (".bin", ".pt", ".pth"):
        import torch
        return _unwrap_state_dict(torch.load(str(p), map_location="cpu", weights_only=True))
    raise ValueError(f"unsupported checkpoint file {str(path)!r}: expected .safetensors, .bin, .pt or .pth")


def write_export(out_dir: str | os.PathLike, state_dict: Mapping[str, np.ndarray], config: dict) -> Path:
    """Writes ``out_dir/model.safetensors`` (metadata format=pt, which transformers requires) and
    ``out_dir/config.json``; creates the folder. Returns its Path."""
    from safetensors.numpy import save_file
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(_to_np(v)) for k, v in state_dict.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    with open(out / "config.json", "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")
    return out


def _square(size, what: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) == 3:                          # timm input_size (C, H, W)
            size = size[1:]
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{what} {list(size)} is not square; vitjax ViT takes square images")
        size = size[0]
    return int(size)


def model_kwargs_from_torch_config(config: dict) -> dict:
    """HF ViTConfig/DeiTConfig json or timm config.json -> vitjax ``ViT`` keyword arguments.

    Returns width, depth, num_heads, mlp_dim, patch_size, image_size, in_channels, num_classes,
    layernorm_eps, pool, distilled, qkv_bias, activation. Raises ValueError for configurations vitjax's
    ViT cannot reproduce (timm register tokens, layer scale, pre-norm, no_embed_class, avg pooling with a
    class token or norm-before-pool; HF DeiT without the teacher head).
    """
    if "architecture" in config:
        return _kwargs_from_timm(config)
    if "model_type" in config or "hidden_size" in config:
        return _kwargs_from_hf(config)
    raise ValueError("neither a timm config.json (no 'architecture') nor a Hugging Face ViT/DeiT config "
                     "(no 'model_type')")


def _kwargs_from_hf(c: dict) -> dict:
    mtype = c.get("model_type", "vit")
    if mtype not in ("vit", "deit"):
        raise ValueError(f"model_type {mtype!r} is not a ViT/DeiT config")
    archs = c.get("architectures") or []
    distilled = mtype == "deit"
    teacher = ("DeiTForImageClassificationWithTeacher", "DeiTModel")
    if distilled and archs and not any(a in teacher for a in archs):
        raise ValueError(f"HF {archs} keeps the distillation token but classifies from the class token "
                         f"only, which vitjax's DeiT (mean of both heads) does not reproduce")
    if "id2label" in c:
        k = len(c["id2label"])
    else:
        k = int(c.get("num_labels", 2))
    if archs and not any("ForImageClassification" in a for a in archs):
        k = 0                                       # ViTModel / DeiTModel: features only
    act = c.get("hidden_act", "gelu")
    if act not in _HF_ACTS_IN:
        raise ValueError(f"hidden_act {act!r} has no vitjax equivalent ({sorted(_HF_ACTS_IN)})")
    return dict(
        width=int(c.get("hidden_size", 768)), depth=int(c.get("num_hidden_layers", 12)),
        num_heads=int(c.get("num_attention_heads", 12)), mlp_dim=int(c.get("intermediate_size", 3072)),
        patch_size=_square(c.get("patch_size", 16), "patch_size"),
        image_size=_square(c.get("image_size", 224), "image_size"),
        in_channels=int(c.get("num_channels", 3)), num_classes=k,
        layernorm_eps=float(c.get("layer_norm_eps", 1e-12)), pool="token", distilled=distilled,
        qkv_bias=bool(c.get("qkv_bias", True)), activation=_HF_ACTS_IN[act],
    )


_TIMM_MUST = dict(no_embed_class=(False,), reg_tokens=(0,), init_values=(None,), pre_norm=(False,),
                  final_norm=(True,), qk_norm=(False,), proj_bias=(True,), pos_embed=("learn",),
                  norm_layer=(None, "layernorm"), scale_attn_norm=(False,), scale_mlp_norm=(False,),
                  pool_include_prefix=(False,))


def _kwargs_from_timm(c: dict) -> dict:
    arch = str(c["architecture"]).split(".")[0]
    args = dict(c.get("model_args") or {})
    # hub configs written before timm split them keep the pretrained_cfg fields at the top level
    pcfg = c.get("pretrained_cfg") or {k: v for k, v in c.items() if k not in ("architecture", "model_args")}
    m = _TIMM_NAME_RE.fullmatch(arch)
    base: dict[str, Any] = {}
    if m:
        width, depth, heads = _TIMM_SIZES[m.group(2)]
        base = dict(embed_dim=width, depth=depth, num_heads=heads, patch_size=int(m.group(4)))
        if not pcfg.get("input_size"):              # timm builds fixed-size ViTs at input_size otherwise
            base["img_size"] = int(m.group(5))
    base.update(args)
    missing = [k for k in ("embed_dim", "depth", "num_heads") if k not in base]
    if missing:
        raise ValueError(f"timm architecture {arch!r} is not one whose shape vitjax knows and its model_args "
                         f"lack {missing}")
    for k, allowed in _TIMM_MUST.items():
        if k in base and base[k] not in allowed:
            raise ValueError(f"timm model_args {k}={base[k]!r} has no vitjax ViT equivalent")
    pool = base.get("global_pool", c.get("global_pool", "token"))
    class_token = base.get("class_token", True)
    fc_norm = base.get("fc_norm")
    if pool == "token":
        if fc_norm:
            raise ValueError("timm fc_norm=True with token pooling has no vitjax equivalent")
        vit_pool = "token"
    elif pool == "avg":
        if class_token or fc_norm is False:
            raise ValueError("vitjax's pool='gap' is timm global_pool='avg' with class_token=False and the "
                             f"norm after pooling (fc_norm); this config has class_token={class_token}, "
                             f"fc_norm={fc_norm}")
        vit_pool = "gap"
    else:
        raise ValueError(f"timm global_pool={pool!r} has no vitjax equivalent (token or avg)")
    act = base.get("act_layer") or "gelu"
    acts_in = {v[0]: k for k, v in _ACTS.items()}
    if act not in acts_in:
        raise ValueError(f"timm act_layer {act!r} has no vitjax equivalent ({sorted(acts_in)})")
    width = int(base["embed_dim"])
    if "img_size" in base:
        size = _square(base["img_size"], "img_size")
    else:
        size = _square(pcfg.get("input_size", (3, 224, 224)), "input_size")
    chans = base.get("in_chans") or (pcfg.get("input_size") or (3,))[0]
    num_classes = base.get("num_classes", c.get("num_classes", pcfg.get("num_classes", 1000)))
    return dict(
        width=width, depth=int(base["depth"]), num_heads=int(base["num_heads"]),
        mlp_dim=int(width * float(base.get("mlp_ratio", 4.0))),
        patch_size=_square(base.get("patch_size", 16), "patch_size"), image_size=size,
        in_channels=int(chans), num_classes=int(num_classes), layernorm_eps=1e-6, pool=vit_pool,
        distilled="distilled" in arch, qkv_bias=bool(base.get("qkv_bias", True)), activation=acts_in[act],
    )


def import_pretrained(path: str | os.PathLike, model, drop_head: bool = False) -> dict:
    """``read_state_dict(path)`` -> ``detect_format`` -> ``from_timm`` / ``from_hf``: vitjax params for
    ``model`` (the inner ``params`` dict of numpy arrays; use ``model.apply({"params": p}, images)``)."""
    sd = read_state_dict(path)
    fmt = detect_format(sd)
    return (from_timm if fmt == "timm" else from_hf)(sd, model, drop_head=drop_head)
