"""Interop with PyTorch: import and export of every family's weights (timm, HF transformers,
open_clip). The CLI is ``python -m vitjax.export``.

``state_dict`` holds the helpers every converter shares, ``registry`` the table of converters
(``exporter``, ``import_weights``); each family module (``vit`` with ``vit_timm`` / ``vit_hf`` /
``vit_layout`` and ``big_vision``'s npz, ``mae``, ``dino``, ``clip``, ``swin``, ``pvt``, ``perceiver``)
registers its own.
Importing this package imports them all, so the table is complete whichever module is imported.
"""
from vitjax.interop import big_vision, clip, detr, dino, lm, mae, perceiver, pvt, swin, vit, yolos  # noqa: F401  (registers the converters)
