"""Perceiver IO weights between vitjax and HF transformers ``PerceiverForImageClassificationFourier``.

Export (vitjax -> PyTorch)::

    from vitjax.interop.perceiver import to_hf, hf_config
    from vitjax.interop.state_dict import write_export
    write_export("out/hf", to_hf(params, model), hf_config(model))
    net = transformers.PerceiverForImageClassificationFourier.from_pretrained("out/hf")
    logits = net(inputs=images_nchw).logits

Import (PyTorch -> vitjax)::

    model = vitjax.create_model("perceiver_io", **model_kwargs_from_hf_config(config_json))
    params = from_hf(read_state_dict("dir"), model)

HF's class is the Perceiver IO ImageNet model (deepmind/vision-perceiver-fourier): raw pixels plus 2-D
Fourier features with 64 bands and max resolution 224 (both hard-coded in the class), ONE cross-attend,
``num_blocks`` repeats of one weight-shared tower of ``num_self_attends_per_block`` layers, and a
classification decoder (one learned query, 1 head, query residual). The vitjax model that matches is
``create_model("perceiver_io", in_channels=3, num_bands=64, max_resolution=224, share_weights=True, ...)``;
``check_hf_compatible`` lists what else must hold. The original Perceiver (``decoder="pool"``, several
cross-attends) has no HF class.

Layouts (Dq query width, Dkv input width, H heads, hd = channels / H; HF names under ``perceiver.``)::

    vitjax                                    HF
    latents (L, D)                            embeddings.latents
    cross_attend0/attn/norm_q, norm_kv        encoder.cross_attention.attention.self.layernorm1, layernorm2
    cross_attend0/attn/{query,key,value}/     encoder.cross_attention.attention.self.{query,key,value}.weight
      kernel (Din, H, hd), bias (H, hd)         (H*hd, Din), bias (H*hd,)
    cross_attend0/attn/out/kernel (H, hd, Dq) encoder.cross_attention.attention.output.dense.weight (Dq, H*hd)
    cross_attend0/norm2, mlp/fc1, mlp/fc2     encoder.cross_attention.layernorm, mlp.dense1, mlp.dense2
    self_attend{j}/norm1                      encoder.self_attends.{j}.attention.self.layernorm1
    self_attend{j}/attn/{query,key,value,out} encoder.self_attends.{j}.attention.self.{query,key,value},
                                                .attention.output.dense
    self_attend{j}/norm2, mlp/fc1, fc2        encoder.self_attends.{j}.layernorm, mlp.dense1, mlp.dense2
    decoder_query (1, D)                      decoder.decoder.output_position_encodings.position_embeddings
    decoder/*  (a cross-attend block)         decoder.decoder.decoding_cross_attention.*
    decoder_head/kernel (D, K)                decoder.decoder.final_layer.weight (K, D)

Registered as the ``(Perceiver, "hf")`` converter (``vitjax.interop.registry``), both ways; import
keeps the checkpoint's head (no ``drop_head``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from vitjax.interop.registry import register_converter
from vitjax.interop.state_dict import (f32, flat_params, model_shapes, params_tree, read_state_dict,
                                       unwrap_state_dict, write_export)
from vitjax.models.perceiver import Perceiver

__all__ = ["check_hf_compatible", "to_hf", "hf_config", "from_hf", "model_kwargs_from_hf_config",
           "import_pretrained", "write_export", "read_state_dict", "HF_NUM_BANDS", "HF_MAX_RESOLUTION"]

HF_ARCHITECTURE = "PerceiverForImageClassificationFourier"
HF_NUM_BANDS = 64            # fourier_position_encoding_kwargs of the HF class (modeling_perceiver.py)
HF_MAX_RESOLUTION = (224, 224)
HF_PREFIX = "perceiver."


def check_hf_compatible(model) -> None:
    """Raises ValueError naming every setting HF's ``PerceiverForImageClassificationFourier`` cannot hold."""
    problems = []
    want = dict(decoder="query", num_cross_attends=1, in_channels=3, num_bands=HF_NUM_BANDS,
                concat_pos=True, cross_qk_channels=None, cross_v_channels=None, decoder_heads=1,
                activation="gelu", layernorm_eps=1e-5)
    for key, val in want.items():
        if getattr(model, key) != val:
            problems.append(f"{key}={getattr(model, key)!r} (HF needs {val!r})")
    if tuple(model.resolution(2)) != HF_MAX_RESOLUTION:
        problems.append(f"max_resolution={model.max_resolution!r} (resolves to {model.resolution(2)}; HF "
                        f"needs {HF_MAX_RESOLUTION[0]})")
    if model.latent_dim % model.num_cross_heads:
        problems.append(f"latent_dim={model.latent_dim} not divisible by num_cross_heads={model.num_cross_heads} "
                        f"(HF checks it)")
    if not model.share_weights and model.num_blocks > 1:
        problems.append("share_weights=False with num_blocks > 1 (HF repeats one weight-shared tower)")
    if problems:
        raise ValueError("this Perceiver cannot be expressed as HF PerceiverForImageClassificationFourier: "
                         + "; ".join(problems))


def _lin_to(kernel: np.ndarray, bias: np.ndarray | None, num_in: int) -> dict[str, np.ndarray]:
    """Flax kernel with ``num_in`` input dims -> torch Linear {weight (out, in), bias (out,)}."""
    shape = kernel.shape
    fan_in = int(np.prod(shape[:num_in]))
    out = {"weight": np.ascontiguousarray(kernel.reshape(fan_in, -1).T, np.float32)}
    if bias is not None:
        out["bias"] = np.ascontiguousarray(bias.reshape(-1), np.float32)
    return out


def _norm_to(f, key):
    return {"weight": f[f"{key}/scale"], "bias": f[f"{key}/bias"]}


def _attn_to(f, src: str, dst: str, cross: bool) -> dict[str, np.ndarray]:
    """One vitjax attention block (``CrossAttendBlock`` or ``EncoderBlock``) -> HF PerceiverLayer keys."""
    out = {}
    q_norm = f"{src}/attn/norm_q" if cross else f"{src}/norm1"
    for k, v in _norm_to(f, q_norm).items():
        out[f"{dst}.attention.self.layernorm1.{k}"] = v
    if cross:
        for k, v in _norm_to(f, f"{src}/attn/norm_kv").items():
            out[f"{dst}.attention.self.layernorm2.{k}"] = v
    for name in ("query", "key", "value"):
        for k, v in _lin_to(f[f"{src}/attn/{name}/kernel"], f[f"{src}/attn/{name}/bias"], 1).items():
            out[f"{dst}.attention.self.{name}.{k}"] = v
    for k, v in _lin_to(f[f"{src}/attn/out/kernel"], f[f"{src}/attn/out/bias"], 2).items():
        out[f"{dst}.attention.output.dense.{k}"] = v
    for k, v in _norm_to(f, f"{src}/norm2").items():
        out[f"{dst}.layernorm.{k}"] = v
    for a, b in (("fc1", "dense1"), ("fc2", "dense2")):
        for k, v in _lin_to(f[f"{src}/mlp/{a}/kernel"], f[f"{src}/mlp/{a}/bias"], 1).items():
            out[f"{dst}.mlp.{b}.{k}"] = v
    return out


def _layer_names(model) -> list[tuple[str, str, bool]]:
    """(vitjax prefix, HF prefix, is_cross) for every attention layer of an HF-compatible model."""
    names = [("cross_attend0", "encoder.cross_attention", True)]
    names += [(f"self_attend{j}", f"encoder.self_attends.{j}", False)
              for j in range(model.num_self_attends_per_block)]
    names.append(("decoder", "decoder.decoder.decoding_cross_attention", True))
    return names


def to_hf(params, model) -> dict[str, np.ndarray]:
    """vitjax Perceiver IO params -> HF ``PerceiverForImageClassificationFourier`` state dict (fp32 numpy)."""
    check_hf_compatible(model)
    f = flat_params(params)
    sd = {"embeddings.latents": f["latents"],
          "decoder.decoder.output_position_encodings.position_embeddings": f["decoder_query"]}
    for src, dst, cross in _layer_names(model):
        sd.update(_attn_to(f, src, dst, cross))
    sd.update({f"decoder.decoder.final_layer.{k}": v
               for k, v in _lin_to(f["decoder_head/kernel"], f["decoder_head/bias"], 1).items()})
    return {HF_PREFIX + k: f32(v) for k, v in sd.items()}


def hf_config(model, *, label_names: Sequence[str] | None = None) -> dict:
    """config.json for ``PerceiverForImageClassificationFourier.from_pretrained``."""
    check_hf_compatible(model)
    labels = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(model.num_classes)]
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} label names for {model.num_classes} classes")
    return {
        "architectures": [HF_ARCHITECTURE], "model_type": "perceiver",
        "num_latents": model.num_latents, "d_latents": model.latent_dim,
        "d_model": model.in_channels + 2 * (2 * HF_NUM_BANDS + 1),
        "num_blocks": model.num_blocks, "num_self_attends_per_block": model.num_self_attends_per_block,
        "num_self_attention_heads": model.num_self_heads, "num_cross_attention_heads": model.num_cross_heads,
        "qk_channels": None, "v_channels": None, "cross_attention_shape_for_attention": "kv",
        "self_attention_widening_factor": model.self_widening_factor,
        "cross_attention_widening_factor": model.cross_widening_factor,
        "hidden_act": "gelu", "attention_probs_dropout_prob": 0.0, "use_query_residual": True,
        "image_size": model.image_size,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
    }


def model_kwargs_from_hf_config(config: Mapping) -> dict:
    """HF PerceiverConfig json (of a ...ImageClassificationFourier model) -> ``perceiver_io`` kwargs."""
    c = dict(config)
    if c.get("qk_channels") is not None or c.get("v_channels") is not None:
        raise ValueError(f"HF config sets qk_channels={c.get('qk_channels')} / v_channels="
                         f"{c.get('v_channels')}; vitjax's latent tower keeps q/k/v at the latent width")
    if c.get("cross_attention_shape_for_attention", "kv") != "kv":
        raise ValueError("HF config cross_attention_shape_for_attention must be 'kv'")
    if c.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"HF config hidden_act={c.get('hidden_act')!r}; only 'gelu' is mapped")
    num_classes = len(c["id2label"]) if c.get("id2label") else int(c.get("num_labels", 2))
    size = c.get("image_size", 224)
    return dict(num_classes=num_classes, image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
                in_channels=3, num_latents=int(c.get("num_latents", 256)),
                latent_dim=int(c.get("d_latents", 1280)),
                num_blocks=int(c.get("num_blocks", 1)),
                num_self_attends_per_block=int(c.get("num_self_attends_per_block", 26)),
                num_cross_attends=1, share_weights=True,
                num_self_heads=int(c.get("num_self_attention_heads", 8)),
                num_cross_heads=int(c.get("num_cross_attention_heads", 8)),
                self_widening_factor=int(c.get("self_attention_widening_factor", 1)),
                cross_widening_factor=int(c.get("cross_attention_widening_factor", 1)),
                num_bands=HF_NUM_BANDS, max_resolution=HF_MAX_RESOLUTION[0], decoder="query", decoder_heads=1)


def _lin_from(sd, key: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    w = sd[f"{key}.weight"]                                   # (out, in)
    return (np.ascontiguousarray(w.T.reshape(in_shape + out_shape)),
            np.ascontiguousarray(sd[f"{key}.bias"].reshape(out_shape)))


def _attn_from(sd, src: str, dst: str, cross: bool, f_shapes: Mapping[str, tuple]) -> dict:
    out = {}
    q_norm = f"{dst}/attn/norm_q" if cross else f"{dst}/norm1"
    out[f"{q_norm}/scale"], out[f"{q_norm}/bias"] = (sd[f"{src}.attention.self.layernorm1.weight"],
                                                     sd[f"{src}.attention.self.layernorm1.bias"])
    if cross:
        out[f"{dst}/attn/norm_kv/scale"] = sd[f"{src}.attention.self.layernorm2.weight"]
        out[f"{dst}/attn/norm_kv/bias"] = sd[f"{src}.attention.self.layernorm2.bias"]
    for name in ("query", "key", "value"):
        shape = f_shapes[f"{dst}/attn/{name}/kernel"]
        out[f"{dst}/attn/{name}/kernel"], out[f"{dst}/attn/{name}/bias"] = _lin_from(
            sd, f"{src}.attention.self.{name}", shape[:1], shape[1:])
    shape = f_shapes[f"{dst}/attn/out/kernel"]
    out[f"{dst}/attn/out/kernel"], out[f"{dst}/attn/out/bias"] = _lin_from(
        sd, f"{src}.attention.output.dense", shape[:2], shape[2:])
    out[f"{dst}/norm2/scale"] = sd[f"{src}.layernorm.weight"]
    out[f"{dst}/norm2/bias"] = sd[f"{src}.layernorm.bias"]
    for a, b in (("fc1", "dense1"), ("fc2", "dense2")):
        shape = f_shapes[f"{dst}/mlp/{a}/kernel"]
        out[f"{dst}/mlp/{a}/kernel"], out[f"{dst}/mlp/{a}/bias"] = _lin_from(
            sd, f"{src}.mlp.{b}", shape[:1], shape[1:])
    return out


def from_hf(state_dict, model) -> dict:
    """HF ``PerceiverForImageClassificationFourier`` state dict -> vitjax params (numpy, param_dtype).

    Every HF tensor must be used and every vitjax parameter filled with its exact shape; otherwise a
    ValueError names the offending keys."""
    check_hf_compatible(model)
    raw = unwrap_state_dict(state_dict)
    original = {(k[len(HF_PREFIX):] if k.startswith(HF_PREFIX) else k): k for k in raw}   # for messages
    sd = {k: np.asarray(raw[o], np.float32) for k, o in original.items()}
    shapes = model_shapes(model)
    missing = []
    flat: dict[str, np.ndarray] = {}
    try:
        flat["latents"] = sd["embeddings.latents"]
        flat["decoder_query"] = sd["decoder.decoder.output_position_encodings.position_embeddings"]
        for dst, src, cross in _layer_names(model):
            flat.update(_attn_from(sd, src, dst, cross, shapes))
        head = shapes["decoder_head/kernel"]
        flat["decoder_head/kernel"], flat["decoder_head/bias"] = _lin_from(
            sd, "decoder.decoder.final_layer", head[:1], head[1:])
    except KeyError as e:
        missing.append(HF_PREFIX + str(e).strip("'"))
    except ValueError as e:          # a reshape that does not fit: the checkpoint has other sizes
        raise ValueError(f"HF Perceiver checkpoint does not fit this model's shapes: {e}") from e
    if missing:
        raise ValueError(f"HF Perceiver state dict lacks {missing}; is it a "
                         f"PerceiverForImageClassificationFourier checkpoint with {model.num_self_attends_per_block} self-attends per block?")
    used = {"embeddings.latents", "decoder.decoder.output_position_encodings.position_embeddings",
            "decoder.decoder.final_layer.weight", "decoder.decoder.final_layer.bias"}
    used |= {k for k in sd for _, src, _ in _layer_names(model) if k.startswith(src + ".")}
    unused = sorted(original[k] for k in set(sd) - used)
    if unused:
        raise ValueError(f"HF Perceiver state dict has tensors this model does not use: {unused[:8]}"
                         f"{' ...' if len(unused) > 8 else ''}")
    for k, shape in shapes.items():
        if k not in flat:
            raise ValueError(f"missing vitjax parameter '{k}' (expected shape {shape})")
        if tuple(flat[k].shape) != tuple(shape):
            raise ValueError(f"shape mismatch for vitjax parameter '{k}': expected {tuple(shape)}, got "
                             f"{tuple(flat[k].shape)}")
    return params_tree(flat, model)


def import_pretrained(path, model) -> dict:
    """A folder or file written by ``save_pretrained`` / ``write_export`` -> vitjax params."""
    return from_hf(read_state_dict(path), model)


register_converter(Perceiver, "hf", kind="hf_perceiver", export=to_hf, config=hf_config, load=from_hf,
                   drop_head=False)
