"""Model families. Importing this package registers every family with ``vitjax.registry``."""
from vitjax.models import vit  # noqa: F401
from vitjax.models.vit import SIZES, ViT, decode_variant  # noqa: F401
from vitjax.models import mae  # noqa: F401
from vitjax.models import clip  # noqa: F401
from vitjax.models import perceiver  # noqa: F401
from vitjax.models import swin  # noqa: F401
from vitjax.models import pvt  # noqa: F401
from vitjax.models import dino  # noqa: F401
