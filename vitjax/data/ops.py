"""Per-example preprocessing ops, named in configs as lists of dicts.

    config.input.train_ops = [dict(op="decode_random_resized_crop", size=224), dict(op="flip_lr"),
                              dict(op="randaugment", num_ops=2, magnitude=9),
                              dict(op="normalize", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))]

Each op maps ``(example, rng) -> example`` on numpy arrays inside grain workers (no JAX, no TF);
``rng`` is a ``np.random.Generator`` seeded per example by grain, so augmentation is reproducible
and resumable. Images are encoded bytes as sources give them, uint8 [H, W, C] once decoded, and
float32 after ``normalize``. Every image op decodes bytes itself when it gets them, but the fused
``decode_random_resized_crop`` (train) and ``decode_center_crop`` (eval) are the fast way: they
decode at reduced JPEG resolution when the crop allows and resize only the crop.

The ops are entries of ``vitjax.data.registry.OPS``, registered with ``@register_op(NAME)`` by
the modules that define them: ``image_ops`` (decoding, geometry, normalize), ``augment``
(RandAugment, colour, blur, multi-crop), ``text`` (tokenize), ``pixel_tokens`` (images as
palette-index sequences for autoregressive models) and ``translate`` (per-axis random translations;
``detection`` adds the box-aware ops). This module imports them all, so
``build_ops`` always sees every op. Batch-level ops (mixup/cutmix) live in ``batch_ops``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from vitjax.data import augment, detection, image_ops, pixel_tokens, text, translate  # noqa: F401  (they fill OPS)
from vitjax.data.image_ops import apply_ops, pixels  # noqa: F401  (re-exported)
from vitjax.data.registry import OPS, register_op  # noqa: F401  (re-exported)
from vitjax.registry import build_from_specs


def build_ops(specs: Sequence[Mapping[str, Any]] | None) -> list[Callable]:
    """Turns a config list of ``dict(op=NAME, **kwargs)`` into per-example op callables; an unknown
    name or bad arguments are a ValueError naming the op."""
    return build_from_specs(specs, OPS)
