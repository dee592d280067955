"""Training objectives (loss + metrics), looked up by ``config.objective.name``."""
from vitjax.objectives import classification  # noqa: F401  (registers "classification")
from vitjax.objectives.base import Objective, create_objective, register_objective  # noqa: F401
from vitjax.objectives import mae  # noqa: F401  (registers "mae")
from vitjax.objectives import clip  # noqa: F401  (registers "clip")
from vitjax.objectives import distillation  # noqa: F401  (registers "distillation")
from vitjax.objectives import dino  # noqa: F401  (registers "dino")
