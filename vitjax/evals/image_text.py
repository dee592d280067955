"""Image-text evaluators: ``zeroshot`` classification and ``retrieval`` (numerics: ``zeroshot``).

    config.evals.zeroshot = dict(type="zeroshot", class_names=["zero", "one", ...],
                                 templates=["a photo of the number {}."])   # -> eval/zeroshot_top1, _top5
    config.evals.coco = dict(type="retrieval", data=dict(name="coco_captions", split="val"))
                                                                             # -> eval/coco_i2t_r1 ...

Both need a model with ``encode_image`` / ``encode_text`` methods returning unit embeddings
(``vitjax.models.clip``). The CLIP objective's ``zeroshot`` / ``retrieval`` options become these
evaluators (``Clip.default_evals``; retrieval there logs ``eval/i2t_r1`` with ``prefix=""``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vitjax.evals import zeroshot as zs
from vitjax.evals.base import EvalRun, Evaluator, plain, value_key, without_tokenize
from vitjax.evals.registry import register_evaluator


class Records:
    """A list of dicts as a random-access source."""

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return dict(self.records[i])


def check_prompts(class_names, templates, origin: str) -> tuple[list[str], list[str]]:
    """(class names, templates) of a zero-shot spec, checked; ``templates`` default to ``["{}"]``."""
    names = list(class_names or [])
    if not names:
        raise ValueError(f"{origin}.class_names is empty: zero-shot classification needs the class names in "
                         f"label order (e.g. ['zero', 'one', ...]); set them, or set {origin}=None to skip "
                         f"zero-shot evaluation")
    templates = list(templates or ["{}"])
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"{origin}.templates {bad} lack the '{{}}' where the class name goes, e.g. "
                         f"'a photo of a {{}}.'")
    return names, templates


def image_key(split_key: str, ops, max_examples) -> tuple:
    """Cache key of a split's image embeddings (shared by retrieval and zero-shot)."""
    return ("encode_image", split_key, value_key(without_tokenize(ops)), max_examples)


@register_evaluator("retrieval")
class Retrieval(Evaluator):
    """Cross-modal retrieval: Recall@K of each image's paired caption among all captions of the split
    (``i2t_r<K>``) and of each caption's image among all images (``t2i_r<K>``); pairs are matched by
    index (one caption per image). Cosine similarity; ties count against.

    Options: data (``get_source`` kwargs; default: the eval split), ops (with a ``tokenize`` op;
    default: ``config.input.eval_ops``), max_examples=None, ks=(1, 5, 10). Metrics: ``i2t_r<K>``,
    ``t2i_r<K>``.
    """

    def __init__(self, name, *, data=None, ops=None, max_examples=None, ks=zs.RECALL_AT, **common):
        super().__init__(name, **common)
        self.data, self.ops, self.max_examples = data, ops, max_examples
        self.ks = tuple(int(k) for k in ks)

    def __call__(self, run: EvalRun) -> dict[str, float]:
        key, src = run.split(self.data, "eval", f"{self.origin}.data")
        ops = plain(list(self.ops)) if self.ops else run.ctx.eval_ops
        model = run.ctx.model

        def both(p, b):
            return {"img": model.apply({"params": p}, b["image"], method="encode_image"),
                    "txt": model.apply({"params": p}, b["tokens"], method="encode_text")}

        out = run.map("clip_retrieval", both, src, ops=ops, max_examples=self.max_examples)
        results = {f"i2t_r{k}": v for k, v in zs.recall_at_k(out["img"], out["txt"], ks=self.ks).items()}
        results.update({f"t2i_r{k}": v for k, v in zs.recall_at_k(out["txt"], out["img"], ks=self.ks).items()})
        images = {"img": out["img"]}
        if "label" in out:
            images["label"] = out["label"]
        run.store(image_key(key, ops, self.max_examples), images)     # zero-shot on this split reuses them
        return results


@register_evaluator("zeroshot")
class ZeroShot(Evaluator):
    """Zero-shot classification (Radford et al. 2021): each class is the normalised mean of its
    prompts' unit text embeddings (sec. 3.1.4, prompt ensembling); an image takes the class of highest
    cosine. Images already embedded by a ``retrieval`` evaluator of the same split, ops and cap in the
    same evaluation are reused.

    Options: class_names (label order; required), templates (with ``{}``; default ``["{}"]``), data
    (``get_source`` kwargs of a labelled split; default: the eval split), ops (default: the eval ops
    without ``tokenize``), max_examples=None, tokenize (the ``tokenize`` op dict for the prompts;
    default: the one in ``config.input.eval_ops``), ks=(1, 5) (a k above the class count is skipped).
    Metrics: ``top<k>``.
    """
    run_order = 1

    def __init__(self, name, *, class_names=None, templates=None, data=None, ops=None, max_examples=None,
                 tokenize=None, ks=(1, 5), **common):
        super().__init__(name, **common)
        self.class_names, self.templates = check_prompts(class_names, templates, self.origin)
        self.data, self.ops, self.max_examples = data, ops, max_examples
        self.tokenize = plain(tokenize) if tokenize else None
        self.ks = tuple(int(k) for k in ks)

    def check(self, config) -> None:
        if self.tokenize is None:
            ops = [o for o in plain(list(config.input.get("eval_ops") or ())) if o.get("op") == "tokenize"]
            if not ops:
                raise ValueError(f"{self.origin} needs a tokenizer for its prompts: set {self.origin}.tokenize="
                                 f"dict(op='tokenize', ...) or add a tokenize op to config.input.eval_ops")
            self.tokenize = ops[0]

    def classifier(self, run: EvalRun) -> np.ndarray:
        """[num_classes, E]: per class, the normalised mean of its prompts' unit embeddings."""
        model = run.ctx.model
        texts = zs.prompts(self.class_names, self.templates)

        def fn(p, b):
            return {"z": model.apply({"params": p}, b["tokens"], method="encode_text")}

        out = run.map("clip_text", fn, Records([{"text": t} for t in texts]), ops=[self.tokenize])
        if len(out["z"]) != len(texts):
            raise ValueError(f"{len(texts) - len(out['z'])} zero-shot prompt(s) tokenized to nothing (empty)")
        return zs.class_embeddings(out["z"], len(self.class_names))

    def __call__(self, run: EvalRun) -> dict[str, float]:
        classes = self.classifier(run)
        key, src = run.split(self.data, "eval", f"{self.origin}.data")
        ops = without_tokenize(run.ctx.eval_ops if self.ops is None else self.ops)
        model = run.ctx.model

        def img(p, b):
            return {"img": model.apply({"params": p}, b["image"], method="encode_image")}

        images = run.cached(image_key(key, ops, self.max_examples),
                            lambda: run.map("clip_zeroshot", img, src, ops=ops, max_examples=self.max_examples))
        if "label" not in images:
            raise ValueError(f"the zero-shot split has no 'label' feature; point {self.origin}.data at a "
                             f"labelled split")
        return {f"top{k}": v for k, v in zs.zeroshot_accuracy(images["img"], images["label"], classes,
                                                               ks=self.ks).items()}
