"""ViT / DeiT weights between vitjax (Flax) and PyTorch: timm ``VisionTransformer`` and HF ``ViT``/``DeiT``.

Export (vitjax -> PyTorch)::

    from vitjax.interop.vit import to_timm, timm_config, to_hf, hf_config, write_export
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

The timm half lives in ``vitjax.interop.vit_timm``, the HF half in ``vitjax.interop.vit_hf``, what they
share (sizes, heads and position-table checks) in ``vitjax.interop.vit_layout``; this module re-exports
their public functions, tells the formats apart and registers both converters for ``ViT`` (and so its
subclasses, e.g. CLIP's image tower). torch is imported only to read ``.bin/.pt/.pth`` files.
"""
from __future__ import annotations

import os

from vitjax.interop.registry import import_state_dict, register_converter, register_detector
from vitjax.interop.state_dict import inner_mapping, read_state_dict, timm_load_snippet, write_export
from vitjax.interop.vit_hf import (from_hf, hf_block_from, hf_block_to, hf_config, hf_normalise, kwargs_from_hf,
                                   to_hf)
from vitjax.interop.vit_timm import from_timm, kwargs_from_timm, timm_config, timm_shapes, to_timm
from vitjax.models.vit import ViT

__all__ = [
    "to_timm", "timm_config", "timm_load_snippet", "from_timm", "timm_shapes",
    "to_hf", "hf_config", "from_hf", "hf_block_to", "hf_block_from", "hf_normalise",
    "detect_format", "read_state_dict", "write_export", "model_kwargs_from_torch_config",
    "import_pretrained",
]


def detect_format(state_dict) -> str:
    """``"timm"``, ``"hf"`` or ``"npz"`` (big_vision / vision_transformer, ``vitjax.interop.big_vision``)
    from the key names of a state dict (ValueError if none)."""
    keys = [str(k) for k in inner_mapping(state_dict)]
    keys = [k[len("module."):] if k.startswith("module.") else k for k in keys]
    if any(k == "embedding/kernel" or k.endswith("/embedding/kernel") for k in keys):
        return "npz"
    if any("embeddings.patch_embeddings.projection" in k or k.endswith("embeddings.cls_token") for k in keys):
        return "hf"
    if any(k == "patch_embed.proj.weight" or k.startswith("blocks.") for k in keys):
        return "timm"
    raise ValueError(f"cannot tell whether this state dict is timm or Hugging Face ViT: neither "
                     f"'patch_embed.proj.weight' (timm) nor '*embeddings.patch_embeddings.projection.weight' "
                     f"(HF) is among its keys; first keys: {keys[:5]}")


def model_kwargs_from_torch_config(config: dict) -> dict:
    """HF ViTConfig/DeiTConfig json or timm config.json -> vitjax ``ViT`` keyword arguments.

    Returns width, depth, num_heads, mlp_dim, patch_size, image_size, in_channels, num_classes,
    layernorm_eps, pool, distilled, qkv_bias, activation. Raises ValueError for configurations vitjax's
    ViT cannot reproduce (timm register tokens, layer scale, pre-norm, no_embed_class, avg pooling with a
    class token or norm-before-pool; HF DeiT without the teacher head).
    """
    if "architecture" in config:
        return kwargs_from_timm(config)
    if "model_type" in config or "hidden_size" in config:
        return kwargs_from_hf(config)
    raise ValueError("neither a timm config.json (no 'architecture') nor a Hugging Face ViT/DeiT config "
                     "(no 'model_type')")


def import_pretrained(path: str | os.PathLike, model, drop_head: bool = False) -> dict:
    """``read_state_dict(path)`` -> ``detect_format`` -> ``from_timm`` / ``from_hf`` / ``big_vision.from_npz``:
    vitjax params for ``model`` (the inner ``params`` dict of numpy arrays; use
    ``model.apply({"params": p}, images)``)."""
    return import_state_dict(read_state_dict(path), model, drop_head=drop_head)   # npz too (big_vision)


register_converter(ViT, "timm", export=to_timm, config=timm_config, load=from_timm, takes_normalisation=True)
register_converter(ViT, "hf", export=to_hf, config=hf_config, load=from_hf)
register_detector(ViT, detect_format)
