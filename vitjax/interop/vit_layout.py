"""What the timm and HF ViT converters share: the ViT's sizes, the activation table, the position
table export writes, and the checks of an imported state dict against the model (classifier heads,
position-table resizing, missing / unexpected / mis-shaped keys, the final parameter tree).

``vitjax.interop.vit_timm`` and ``vitjax.interop.vit_hf`` hold the two layouts; ``vitjax.interop.vit``
documents them and registers both converters.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from vitjax.interop.state_dict import fmt_shape, model_shapes, need, params_tree
from vitjax.models.posemb import resize_posemb, sincos_2d_with_prefix

__all__ = ["ACTIVATIONS", "dims", "posemb_value", "reconcile", "finish", "square_size"]

# vitjax activation <-> (timm act_layer, HF hidden_act). All three libraries agree numerically.
ACTIVATIONS = {"gelu": ("gelu", "gelu"), "gelu_tanh": ("gelu_tanh", "gelu_pytorch_tanh"),
               "quick_gelu": ("quick_gelu", "quick_gelu")}


def dims(model) -> dict[str, int]:
    """The sizes the layout tables use: D width, H heads, hd = D / H, M mlp_dim, P patch, C channels,
    K classes, N patches, T = prefix + N tokens."""
    d, h = model.width, model.num_heads
    if d % h:
        raise ValueError(f"width {d} is not divisible by num_heads={h}")
    gh, gw = model.grid
    return dict(D=d, H=h, hd=d // h, M=model.mlp_dim, P=model.patch_size, C=model.in_channels,
                K=model.num_classes, N=gh * gw, T=model.num_prefix_tokens + gh * gw)


def posemb_value(flat: Mapping[str, np.ndarray], model) -> np.ndarray:
    """(1, prefix+N, D): the learned table, or for ``posemb="sincos2d"`` the fixed table the model adds
    (zero rows for the prefix tokens), written out so torch models built with learned tables match."""
    if model.posemb == "learned":
        return need(flat, "pos_embedding")
    return sincos_2d_with_prefix(model.width, *model.grid, model.num_prefix_tokens)[None]


def reconcile(sd: dict[str, np.ndarray], expected: dict[str, tuple], model, *, drop_head: bool,
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
                f"the checkpoint has a classifier head '{show(k)}' of shape {fmt_shape(sd[k].shape)} "
                f"but the model has num_classes=0; pass drop_head=True to discard it, or build the model "
                f"with num_classes={sd[k].shape[0]}")
        for k in model_heads:
            if k not in sd:
                raise ValueError(
                    f"the checkpoint has no classifier head '{show(k)}' (expected shape "
                    f"{fmt_shape(expected[k])}, num_classes={model.num_classes}); pass drop_head=True to "
                    f"keep the model's freshly initialised head, or build it with num_classes=0")
            if tuple(sd[k].shape) != tuple(expected[k]):
                raise ValueError(
                    f"classifier head '{show(k)}' has shape {fmt_shape(sd[k].shape)} "
                    f"({sd[k].shape[0]} classes) but the model expects {fmt_shape(expected[k])} "
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
                    f"shape mismatch for '{show(posemb_key)}': expected {fmt_shape(want)}, got "
                    f"{fmt_shape(pe.shape)} (cannot read it as {prefix} prefix tokens plus a square grid "
                    f"of width {want[2]})")
            if model.posemb == "learned":
                pe = resize_posemb(pe.astype(np.float32), prefix, (g, g), model.grid)
        elif model.posemb == "sincos2d":
            err = float(np.max(np.abs(pe.astype(np.float32) - posemb_value({}, model))))
            if err > 1e-4:
                raise ValueError(
                    f"'{show(posemb_key)}' is not the fixed 2-D sin-cos table this model (posemb='sincos2d') "
                    f"adds (max abs difference {err:.3g}); build the model with posemb='learned' to import "
                    f"a learned position embedding")
        learned = model.posemb == "learned"
        sd[posemb_key] = np.asarray(pe).reshape(want) if learned else posemb_value({}, model)

    for k, shape in expected.items():
        if k not in sd:
            hint = ""
            if fmt == "timm" and k.startswith("fc_norm.") and "norm.weight" in sd:
                hint = (" (the checkpoint normalises before pooling, timm fc_norm=False; vitjax's "
                        "pool='gap' normalises the average, timm's fc_norm)")
            elif fmt == "timm" and k.startswith("norm.") and "fc_norm.weight" in sd:
                hint = " (the checkpoint is average-pooled: build the model with pool='gap')"
            raise ValueError(f"missing key '{show(k)}' in the {fmt} checkpoint (expected shape "
                             f"{fmt_shape(shape)}){hint}")
        if tuple(sd[k].shape) != tuple(shape):
            raise ValueError(f"shape mismatch for '{show(k)}': expected {fmt_shape(shape)} (from the vitjax "
                             f"model's configuration), got {fmt_shape(sd[k].shape)}")
    for k, v in sd.items():
        if k not in expected:
            raise ValueError(f"unexpected key '{show(k)}' (shape {fmt_shape(v.shape)}) in the {fmt} "
                             f"checkpoint: the vitjax model (pool={model.pool!r}, "
                             f"distilled={model.distilled}, qkv_bias={model.qkv_bias}, depth={model.depth}) "
                             f"has no such parameter")
    return sd


def finish(flat: dict[str, np.ndarray], model) -> dict:
    """Checks the converted {"a/b/c": array} against the model's abstract parameter shapes (heads may be
    absent: ``drop_head``) and nests it, cast to ``model.param_dtype``."""
    want = model_shapes(model)
    for k, shape in want.items():
        if k in ("head/kernel", "head/bias", "head_dist/kernel", "head_dist/bias") and k not in flat:
            continue                                  # drop_head: the caller keeps its own head
        if k not in flat:
            raise ValueError(f"missing vitjax parameter '{k}' (expected shape {fmt_shape(shape)})")
        if tuple(flat[k].shape) != tuple(shape):
            raise ValueError(f"shape mismatch for vitjax parameter '{k}': expected {fmt_shape(shape)}, "
                             f"got {fmt_shape(flat[k].shape)}")
    for k in flat:
        if k not in want:
            raise ValueError(f"unexpected vitjax parameter '{k}' (shape {fmt_shape(flat[k].shape)})")
    return params_tree(flat, model)


def square_size(size, what: str) -> int:
    """An image or patch size from a torch config (int, [H, W] or timm's (C, H, W)) -> its side;
    ValueError when not square."""
    if isinstance(size, (list, tuple)):
        if len(size) == 3:                          # timm input_size (C, H, W)
            size = size[1:]
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{what} {list(size)} is not square; vitjax ViT takes square images")
        size = size[0]
    return int(size)
