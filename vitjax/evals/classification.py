"""The ``classification`` evaluator: a classifier's loss and top-k accuracy over a whole split.

    config.evals.real = dict(type="classification", data=dict(name="imagenet2012_real", split="validation"))
                                                           # -> eval/real_loss, eval/real_top1
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from vitjax.evals.base import EvalRun, Evaluator, plain
from vitjax.evals.registry import register_evaluator


@register_evaluator("classification")
class ClassificationEval(Evaluator):
    """Mean softmax cross-entropy and top-k accuracy of the model's logits
    (``model.apply(params, images, train=False)``) against the split's integer ``label``.

    Options: data (``get_source`` kwargs; default: the eval split), ops (default:
    ``config.input.eval_ops``), max_examples=None, ks=(1,) (a k above the class count is skipped).
    Metrics: ``loss``, ``top<k>``.
    """

    def __init__(self, name, *, data=None, ops=None, max_examples=None, ks=(1,), **common):
        super().__init__(name, **common)
        self.data, self.ops, self.max_examples = data, ops, max_examples
        self.ks = tuple(int(k) for k in ks)

    def __call__(self, run: EvalRun) -> dict[str, float]:
        _, src = run.split(self.data, "eval", f"{self.origin}.data")
        model, ks, name = run.ctx.model, self.ks, self.name

        def fn(p, b):
            if "label" not in b:
                raise ValueError(f"evaluator {name!r}: the split has no 'label' feature")
            logits = model.apply({"params": p}, b["image"], train=False).astype(jnp.float32)
            out = {"loss": optax.softmax_cross_entropy_with_integer_labels(logits, b["label"])}
            ranks = jnp.sum(logits > jnp.take_along_axis(logits, b["label"][:, None], axis=-1), axis=-1)
            for k in ks:
                if k == 1:          # as the classification objective scores it (ties: the first index)
                    out["top1"] = (jnp.argmax(logits, -1) == b["label"]).astype(jnp.float32)
                elif k <= logits.shape[-1]:
                    out[f"top{k}"] = (ranks < k).astype(jnp.float32)
            return out

        out = run.map(f"classification:{','.join(map(str, ks))}", fn, src,
                      ops=None if self.ops is None else plain(list(self.ops)), max_examples=self.max_examples)
        out.pop("label", None)
        return {k: float(np.mean(v)) if len(v) else float("nan") for k, v in out.items()}
