"""Zero-shot classification and cross-modal retrieval from embeddings (numpy, on the host).

The ``zeroshot`` and ``retrieval`` evaluators (``vitjax.evals.image_text``) embed a whole split and
score it here:

* ``class_embeddings``: prompt ensembling (Radford et al. 2021, sec. 3.1.4): a class is the
  normalised mean of the unit text embeddings of its prompts ("a photo of a {}.", ...).
* ``zeroshot_accuracy``: top-k accuracy of cosine nearest class.
* ``recall_at_k``: Recall@K of each query finding its own paired key among all keys.
* ``imagenet_prompts``: ImageNet's 1,000 class names and OpenAI's 80 prompt templates, read from
  open_clip's ``zero_shot_metadata.py`` file (without importing open_clip, i.e. torch).
"""
from __future__ import annotations

import importlib.util
import os
from typing import Sequence

import numpy as np

RECALL_AT = (1, 5, 10)


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def prompts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major list: every template of class 0, then of class 1, ..."""
    return [t.format(c) for c in class_names for t in templates]


def class_embeddings(text_emb: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes * num_templates, D] class-major prompt embeddings -> [num_classes, D] unit vectors."""
    z = normalize(text_emb).reshape(num_classes, -1, text_emb.shape[-1])
    return normalize(z.mean(axis=1))


def zeroshot_accuracy(image_emb: np.ndarray, labels: np.ndarray, classes: np.ndarray,
                      ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy of the nearest class by cosine; k larger than the class count is skipped."""
    labels = np.asarray(labels)
    if labels.size and int(labels.max()) >= len(classes):
        raise ValueError(f"the zero-shot split has label {int(labels.max())} but only {len(classes)} "
                         f"class names are configured")
    scores = normalize(image_emb) @ classes.T
    order = np.argsort(-scores, axis=1)
    return {k: float(np.mean((order[:, :k] == labels[:, None]).any(axis=1)))
            for k in ks if k <= len(classes)}


def recall_at_k(zq: np.ndarray, zk: np.ndarray, ks: Sequence[int] = RECALL_AT,
                chunk: int = 1024) -> dict[int, float]:
    """Recall@K of query i finding key i among all keys (cosine; ties count against), [N, D] each;
    computed in row chunks so memory stays chunk x N."""
    n = zq.shape[0]
    if zk.shape[0] != n:
        raise ValueError(f"retrieval needs one key per query, got {n} queries and {zk.shape[0]} keys")
    ranks = np.empty(n, np.int64)
    for s in range(0, n, chunk):
        sim = zq[s:s + chunk] @ zk.T                                  # [c, N]
        own = sim[np.arange(sim.shape[0]), np.arange(s, s + sim.shape[0])]
        ranks[s:s + chunk] = (sim > own[:, None]).sum(axis=1)
    return {k: float(np.mean(ranks < k)) for k in ks}


def imagenet_prompts(templates: str = "openai") -> tuple[list[str], list[str]]:
    """(1,000 ImageNet class names in label order, prompt templates with '{}'): open_clip's lists
    (the names and the 80 templates of OpenAI's CLIP notebook; ``templates="simple"``: open_clip's 7)."""
    spec = importlib.util.find_spec("open_clip")
    path = None
    for folder in (spec.submodule_search_locations if spec else None) or ():
        if os.path.isfile(os.path.join(folder, "zero_shot_metadata.py")):
            path = os.path.join(folder, "zero_shot_metadata.py")
    if path is None:
        raise FileNotFoundError("ImageNet class names and prompt templates come from open_clip's "
                                "zero_shot_metadata.py: pip install open_clip_torch, or list "
                                "objective.zeroshot.class_names / templates in the config")
    meta = importlib.util.module_from_spec(importlib.util.spec_from_file_location("_oc_zs_meta", path))
    meta.__spec__.loader.exec_module(meta)
    table = {"openai": meta.OPENAI_IMAGENET_TEMPLATES, "simple": meta.SIMPLE_IMAGENET_TEMPLATES}
    if templates not in table:
        raise ValueError(f"templates must be 'openai' or 'simple', got {templates!r}")
    return list(meta.IMAGENET_CLASSNAMES), [t("{}") for t in table[templates]]
