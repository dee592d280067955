"""vitjax: pretraining vision and multimodal transformers in JAX/Flax across TPU/GPU meshes."""
__version__ = "0.1.0"

from vitjax.registry import create_model, list_models  # noqa: F401


def load(workdir: str, step: int | None = None, weights: str = "params"):
    """``(config, model, params)`` from a workdir's latest (or given) checkpoint; ``weights="teacher"``
    gives a DINO run's EMA teacher instead of the (student) params. See ``vitjax.checkpoint.load_workdir``."""
    from vitjax.checkpoint import load_workdir
    return load_workdir(workdir, step, weights)
