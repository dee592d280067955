"""The run's eval preprocessing, written the way timm and HF read it, so an export predicts like vitjax.

vitjax's eval ops (``config.input.eval_ops``) become:

- timm: the ``pretrained_cfg`` fields ``resolve_data_config`` reads (``input_size``, ``interpolation``,
  ``crop_pct``, ``crop_mode``, ``mean``, ``std``), so
  ``timm.data.create_transform(**timm.data.resolve_data_config({}, model=net))`` prepares images as
  the run's eval did;
- HF: ``preprocessor_config.json`` beside the weights, so ``pipeline("image-classification", model=dir)``
  and ``AutoImageProcessor.from_pretrained(dir)`` work.

| vitjax eval ops | timm | HF image processor |
|---|---|---|
| ``resize(size, method)`` (aspect ratio ignored) | ``crop_mode="squash"``, ``crop_pct=1`` | ``ViTImageProcessor``: resize to size x size |
| ``decode_center_crop(size, crop_fraction, method)`` | ``crop_mode="center"``, ``crop_pct=crop_fraction`` | ``BitImageProcessor``: shorter side to size / crop_fraction, centre crop |
| ``resize_small(s)`` + ``center_crop(c)`` | ``crop_pct = c / s`` | as above |
| ``normalize(mean, std)`` | ``mean``/``std`` | ``image_mean``/``image_std`` |

vitjax crops the central square first and resizes it (``decode_center_crop``), timm and HF resize the
whole image and then crop: the same pixels up to resampling differences at the crop border, which is
why the figure the README states is agreement of top-1 on held-out photos, not bit-equality.
"""
from __future__ import annotations

import dataclasses
import logging
import math

from vitjax.interop.state_dict import channel_values

log = logging.getLogger("vitjax")

# PIL's resampling codes (HF image processors store them as ints).
PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4}
# Ops that change no geometry or values the exported model would see differently.
_NEUTRAL_OPS = ("decode", "to_rgb", "keep")


@dataclasses.dataclass(frozen=True)
class EvalPreprocessing:
    """What an eval image goes through before the model, in the terms timm and HF use.

    Attributes:
      size: the model's input side (pixels).
      crop_pct: the fraction of the resized image's shorter side that is kept (1.0: none cropped).
      crop_mode: "center" (shorter side to size / crop_pct, then a central crop) or "squash" (resize
        to size x size ignoring the aspect ratio).
      interpolation: "bilinear", "bicubic", "nearest", "lanczos" or "box".
      mean, std: per-channel normalisation of pixels in [0, 1].
      channels: 1 (grey) or 3 (RGB).
      unmatched: eval ops with no timm/HF equivalent (the export then differs from vitjax's eval).
    """
    size: int
    crop_pct: float = 1.0
    crop_mode: str = "squash"
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channels: int = 3
    unmatched: tuple[str, ...] = ()

    def timm_fields(self) -> dict:
        """The ``pretrained_cfg`` entries timm's ``resolve_data_config`` reads."""
        # timm's interpolation names have no "box"; the nearest timm offers is bilinear.
        interp = self.interpolation if self.interpolation in ("bilinear", "bicubic", "nearest", "lanczos") \
            else "bilinear"
        return dict(input_size=[self.channels, self.size, self.size], interpolation=interp,
                    crop_pct=self.crop_pct, crop_mode=self.crop_mode, mean=list(self.mean), std=list(self.std))

    def hf_preprocessor_config(self) -> dict:
        """``preprocessor_config.json`` for ``AutoImageProcessor`` / ``pipeline``."""
        common = dict(do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(self.mean),
                      image_std=list(self.std), resample=PIL_RESAMPLE.get(self.interpolation, 2))
        if self.crop_mode == "center" and self.crop_pct < 1.0:
            # timm's and vitjax's scale size: floor(size / crop_pct) on the shorter side.
            return dict(image_processor_type="BitImageProcessor", do_resize=True,
                        size={"shortest_edge": int(math.floor(self.size / self.crop_pct))},
                        do_center_crop=True, crop_size={"height": self.size, "width": self.size},
                        do_convert_rgb=self.channels == 3, **common)
        return dict(image_processor_type="ViTImageProcessor", do_resize=True,
                    size={"height": self.size, "width": self.size}, **common)


def eval_preprocessing(config, model) -> EvalPreprocessing:
    """The ``EvalPreprocessing`` of a run's ``config.input.eval_ops`` for ``model`` (its image_size and
    in_channels); ops with no timm/HF equivalent are listed in ``unmatched`` and logged once."""
    size = int(getattr(model, "image_size", 224))
    channels = int(getattr(model, "in_channels", 3))
    ops = list((config.input.get("eval_ops") or []) if config is not None else [])
    fields: dict = dict(size=size, channels=channels)
    mean, std, unmatched, small = 0.5, 0.5, [], None
    for op in ops:
        op = dict(op)
        name = op.pop("op", None)
        if name == "normalize":
            mean, std = op.get("mean", 0.5), op.get("std", 0.5)
        elif name == "resize":
            fields.update(crop_pct=1.0, crop_mode="squash", interpolation=op.get("method", "bilinear"))
        elif name == "decode_center_crop":
            fields.update(crop_pct=float(op.get("crop_fraction", 0.875)), crop_mode="center",
                          interpolation=op.get("method", "bilinear"))
        elif name == "resize_small":
            small = int(op["size"])
            fields.update(crop_pct=1.0, crop_mode="center", interpolation="bilinear")
        elif name == "center_crop" and small:
            fields.update(crop_pct=int(op["size"]) / small)
        elif name not in _NEUTRAL_OPS:
            unmatched.append(str(name))
    if unmatched:
        log.warning("the eval ops %s have no timm/HF equivalent: the export's own preprocessing leaves "
                    "them out and may predict differently from vitjax's eval", unmatched)
    return EvalPreprocessing(mean=tuple(channel_values(mean, channels)), std=tuple(channel_values(std, channels)),
                             unmatched=tuple(unmatched), **fields)
