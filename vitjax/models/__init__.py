"""Model families. Importing this package registers every family in ``MODELS``
(``vitjax.models.registry``); ``create_model``/``list_models`` look them up by name."""
import dataclasses

from vitjax.models import clip, detr, dino, lm, mae, perceiver, pvt, swin, vit, yolos  # noqa: F401  (each registers its names)
from vitjax.models.attention_core import AttentionOptions
from vitjax.models.registry import MODELS
from vitjax.models.vit import SIZES, ViT, decode_variant  # noqa: F401


def create_model(name: str, **overrides):
    """Builds a registered model; keyword overrides replace the variant's defaults. For weights, use
    ``vitjax.create_model(name, pretrained=PATH_OR_HUB_ID)`` (``vitjax.interop.pretrained``: the
    converters are a later stage than the models), which returns ``(model, params)``."""
    if "pretrained" in overrides:
        raise TypeError("vitjax.models.create_model builds the module only; load weights with "
                        "vitjax.create_model(name, pretrained=...), which returns (model, params)")
    return MODELS.get(name)(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the glob ``pattern``, sorted."""
    return MODELS.names(pattern)


# Every training config carries these (vitjax.config_defaults); families without a self-attention
# of the shared kind (Swin's windows, PVT's spatial reduction) take them only at their defaults.
ATTENTION_KEYS = ("attention", "attention_options")


def build_model(config):
    """The model that ``config.model`` describes (``name`` picks the factory, the rest override it)."""
    kwargs = dict(config.model)
    name = kwargs.pop("name", "vit")
    shared = {k: kwargs.pop(k) for k in ATTENTION_KEYS if k in kwargs}
    if shared.get("attention_options") is not None:
        opts = shared["attention_options"]
        shared["attention_options"] = AttentionOptions.of(opts.to_dict() if hasattr(opts, "to_dict") else opts)
    model = create_model(name, **kwargs)
    fields = {f.name for f in dataclasses.fields(model)}
    if all(k in fields for k in shared):
        return create_model(name, **kwargs, **shared) if shared else model
    opts = shared.get("attention_options")
    if shared.get("attention") not in (None, "auto") or (opts is not None and opts != AttentionOptions()):
        raise ValueError(f"model.attention / model.attention_options do not apply to the {name!r} model, which "
                         f"has its own attention (e.g. Swin's windows, PVT's spatial reduction); drop those "
                         f"overrides, or use a ViT-family model (vit, deit, mae, clip, dino, perceiver)")
    return model
