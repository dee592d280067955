"""Model families. Importing this package registers every family in ``MODELS``
(``vitjax.models.registry``); ``create_model``/``list_models`` look them up by name."""
from vitjax.models import clip, dino, mae, perceiver, pvt, swin, vit  # noqa: F401  (each registers its names)
from vitjax.models.registry import MODELS
from vitjax.models.vit import SIZES, ViT, decode_variant  # noqa: F401


def create_model(name: str, **overrides):
    """Builds a registered model; keyword overrides replace the variant's defaults."""
    return MODELS.get(name)(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the glob ``pattern``, sorted."""
    return MODELS.names(pattern)


def build_model(config):
    """The model that ``config.model`` describes (``name`` picks the factory, the rest override it)."""
    kwargs = dict(config.model)
    return create_model(kwargs.pop("name", "vit"), **kwargs)
