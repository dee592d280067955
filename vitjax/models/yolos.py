"""YOLOS (Fang et al. 2021, "You Only Look at One Sequence", arXiv:2106.00666): a plain ViT that
detects. ``T`` learned detection tokens (with their own learned positions) are appended after the
class token and patch tokens; the ViT encoder runs over all of them; after the final norm each
detection token goes through DETR's prediction MLPs (3 layers each, as HF's
``YolosForObjectDetection``): logits [B, T, K + 1] (the last class is "no object") and boxes
[B, T, 4] (centre x, centre y, width, height in [0, 1]). Trained with DETR's set loss
(``vitjax.objectives.detection``).

``YOLOS`` subclasses ``ViT``, so the patch embedding, class token, positions, encoder and final norm
are ViT's own parameters and code (``embed``, ``encode``, ``pool_features``), and an ImageNet-trained
ViT's weights load into it unchanged. Not implemented: the "mid" position embeddings that YOLOS-S/B
add before every layer (HF ``use_mid_position_embeddings``); YOLOS-Ti does without them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from vitjax.models.detr import prediction_mlp
from vitjax.models.registry import build_module, register_model
from vitjax.models.transformer import ACT_TOKENS, _p
from vitjax.models.vit import ViT, decode_variant


class YOLOS(ViT):
    """ViT + detection tokens (module docstring). ``num_classes``: object classes K.

    Attributes (beyond ViT's):
      num_detection_tokens: T, the number of predictions per image (the paper: 100).
    """
    num_detection_tokens: int = 100

    def __post_init__(self):
        if self.pool != "token" or self.distilled:
            raise ValueError("YOLOS needs pool='token' and distilled=False (a class token, as HF YOLOS)")
        super().__post_init__()

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images [B, H, W, C] -> dict(logits [B, T, K + 1], boxes [B, T, 4])."""
        t, d = self.num_detection_tokens, self.width
        x = self.embed(images, train=train)                                  # [B, 1 + N, D]
        det = self.param("det_tokens", _p(nn.initializers.zeros, (None, "posemb_len", "embed")),
                         (1, t, d), self.param_dtype)
        det_pos = self.param("det_pos_embedding", _p(nn.initializers.normal(0.02), (None, "posemb_len", "embed")),
                             (1, t, d), self.param_dtype)
        det = jnp.broadcast_to((det + det_pos).astype(x.dtype), (x.shape[0], t, d))
        x = nn.with_logical_constraint(jnp.concatenate([x, det], axis=1), ACT_TOKENS)
        x = self.pool_features(self.encode(x, train=train), all_tokens=True)[:, -t:]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        logits = prediction_mlp(x, (d, d, self.num_classes + 1), "class_head", **kw)
        boxes = jax.nn.sigmoid(prediction_mlp(x, (d, d, 4), "box_head", **kw).astype(jnp.float32))
        return {"logits": logits.astype(jnp.float32), "boxes": boxes}


@register_model("yolos")
def yolos(variant: str | None = "Ti/16", **overrides) -> YOLOS:
    """YOLOS on a ViT of ``variant``: ``create_model("yolos", variant="Ti/16", num_classes=91,
    image_size=512)``. Defaults: 100 detection tokens (Fang et al. 2021, sec. 2.1)."""
    kwargs = dict(num_classes=91, **(decode_variant(variant) if variant else {}))
    kwargs.update(overrides)
    return build_module(YOLOS, kwargs, "YOLOS")
