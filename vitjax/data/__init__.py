"""Input pipelines: sources (``sources``), per-example ops (``ops``), grain pipelines (``pipeline``)."""
from vitjax.data.ops import OPS, build_ops, register_op  # noqa: F401
from vitjax.data.pipeline import eval_batches, train_iterator  # noqa: F401
from vitjax.data.sources import get_source  # noqa: F401
