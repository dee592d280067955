"""CLIP / SigLIP / LiT: contrastive image-text training, with zero-shot and retrieval evaluation.

    c.model = dict(name="clip", variant="B/16")            # vitjax.models.clip
    c.objective = dict(name="clip", loss="softmax",          # "sigmoid" for SigLIP (model with a bias)
                       tokenizer="clip", context_length=77,  # must match the train/eval "tokenize" op
                       lock_image=False,                     # LiT: the image tower gets no gradient
                       zeroshot=dict(class_names=[...], templates=["a photo of a {}.", ...]),
                       retrieval=dict())

Batches hold ``image`` [B, H, W, C] float and ``tokens`` [B, T] int32 (the ``tokenize`` op). The
loss is ``vitjax.losses.contrastive``'s, sharded over the batch mesh axes inside the jitted step.

Evaluations (``extra_evals``, logged as ``eval/<name>``):

* ``zeroshot_top1`` (and ``zeroshot_top5`` with >= 5 classes): each class is embedded as the
  normalised mean of its prompts' text embeddings (Radford et al. 2021, sec. 3.1.4: prompt
  ensembling), every image of the zero-shot split is assigned the class of highest cosine.
  ``zeroshot.data`` names a split (``get_source`` kwargs; default: the eval split) whose examples
  have a ``label``; ``zeroshot.ops`` its preprocessing (default: the eval ops without ``tokenize``).
* ``i2t_r1/5/10`` and ``t2i_r1/5/10``: Recall@K of the paired caption among all captions of the
  retrieval split (``retrieval.data``, default the eval split, with the eval ops), and of the
  paired image among all images. Pairs are matched by index (one caption per image).
* ``probe_linear_top1`` / ``probe_knn_top1``: a linear probe / kNN (``vitjax.evals.representation``)
  on the image tower's pooled features (before the projection), fitted on ``probe.train_data``
  (default: the training split, read with the image eval ops) and scored on ``probe.test_data``
  (default: the eval split).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vitjax.evals import zeroshot as zs
from vitjax.losses.contrastive import contrastive_loss, sigmoid_loss, softmax_loss
from vitjax.objectives.base import Objective, register_objective

log = logging.getLogger("vitjax")


class _Records:
    """A list of dicts as a random-access source."""

    def __init__(self, records: Sequence[dict]):
        self.records = list(records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return dict(self.records[i])


def _tower_features(module, images):
    """The image tower's pooled features [B, Dv] (before the projection): what a probe reads."""
    return module.img(images, train=False)


@register_objective("clip")
class Clip(Objective):
    """Contrastive image-text objective. See the module docstring for the options.

    Args:
      loss: "softmax" (CLIP's InfoNCE) or "sigmoid" (SigLIP; the model needs ``logit_bias_init``).
      tokenizer, tokenizer_path, context_length: the tokenizer the data's ``tokenize`` op uses; its
        vocabulary must equal the text tower's ``text_vocab_size`` (checked at start-up).
      lock_image: LiT (Zhai et al. 2022): the image tower (``params["img"]``) gets no gradient and runs
        in inference mode; its projection ``img_proj`` still trains. Its parameters must also be kept
        out of the optimizer (weight decay would move them): see ``frozen_params``.
      zeroshot: dict(class_names, templates, data=None, ops=None, max_examples=None) or None.
      retrieval: dict(data=None, ops=None, max_examples=None) or None.
      probe: dict(methods=("linear",), train_data=None, test_data=None, ops=None,
        max_train_examples=None, max_test_examples=None, linear_epochs=90, linear_batch_size=16384)
        or None.
    """

    def __init__(self, loss: str = "softmax", tokenizer: str = "clip", tokenizer_path: str | None = None,
                 context_length: int = 77, lock_image: bool = False,
                 zeroshot: dict | None = None, retrieval: dict | None = None, probe: dict | None = None):
        if loss not in ("softmax", "sigmoid"):
            raise ValueError(f"objective.loss must be 'softmax' (CLIP) or 'sigmoid' (SigLIP), got {loss!r}")
        self.kind = loss
        self.tokenizer_name, self.tokenizer_path = tokenizer, tokenizer_path
        self.context_length = int(context_length)
        self.lock_image = bool(lock_image)
        self.zeroshot = dict(zeroshot) if zeroshot else None
        self.retrieval = dict(retrieval) if retrieval is not None else None
        self.probe = dict(probe) if probe else None
        if self.probe is not None:
            bad = [m for m in self.probe.get("methods", ("linear",)) if m not in ("linear", "knn", "ncm")]
            if bad:
                raise ValueError(f"objective.probe.methods {bad}: choose from linear, knn, ncm")
        if self.zeroshot is not None:
            names = list(self.zeroshot.get("class_names") or [])
            if not names:
                raise ValueError("objective.zeroshot.class_names is empty: zero-shot classification needs "
                                 "the class names in label order (e.g. ['zero', 'one', ...]); set them, or "
                                 "set objective.zeroshot=None to skip zero-shot evaluation")
            templates = list(self.zeroshot.get("templates") or ["{}"])
            bad = [t for t in templates if "{}" not in t]
            if bad:
                raise ValueError(f"objective.zeroshot.templates {bad} lack the '{{}}' where the class name "
                                 f"goes, e.g. 'a photo of a {{}}.'")
            self.zeroshot["class_names"] = names
            self.zeroshot["templates"] = templates
        self._sources: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------- set-up
    def tokenizer(self):
        from vitjax.data.text import get_tokenizer
        return get_tokenizer(self.tokenizer_name, self.tokenizer_path)

    def tokenize_op(self) -> dict:
        op = dict(op="tokenize", tokenizer=self.tokenizer_name, context_length=self.context_length)
        if self.tokenizer_path:
            op["path"] = self.tokenizer_path
        return op

    def check_model(self, model) -> None:
        """Start-up checks of the tokenizer against the text tower (raise ValueError)."""
        tok = self.tokenizer()
        if tok.vocab_size != model.text_vocab_size:
            raise ValueError(
                f"the tokenizer {self.tokenizer_name!r} has a vocabulary of {tok.vocab_size} tokens but the "
                f"text tower's embedding has text_vocab_size={model.text_vocab_size}; set "
                f"config.model.text_vocab_size={tok.vocab_size} or use the tokenizer the model was built for")
        if self.context_length > model.text_context_length:
            raise ValueError(
                f"objective.context_length={self.context_length} exceeds the text tower's "
                f"text_context_length={model.text_context_length}")
        if model.text_pool == "eos" and tok.eot_id is not None and tok.eot_id != model.eos_id:
            raise ValueError(f"the text tower pools at eos_id={model.eos_id} but the tokenizer's end token "
                             f"is {tok.eot_id}; set config.model.eos_id={tok.eot_id}")
        if model.text_pool == "argmax" and tok.eot_id is not None and tok.eot_id != tok.vocab_size - 1:
            raise ValueError(f"text_pool='argmax' reads the largest token id, which must be the end token, "
                             f"but the tokenizer's end token is {tok.eot_id} of {tok.vocab_size}; use "
                             f"config.model.text_pool='eos' with eos_id={tok.eot_id}")
        if self.kind == "sigmoid" and model.logit_bias_init is None:
            raise ValueError("objective.loss='sigmoid' needs a model with a logit bias: set "
                             "config.model.logit_bias_init=-10.0 (SigLIP) or use model name 'siglip'")

    def example_batch(self, model, batch_size):
        self.check_model(model)
        size = (batch_size, model.image_size, model.image_size, model.in_channels)
        return {"image": jax.ShapeDtypeStruct(size, jnp.float32),
                "tokens": jax.ShapeDtypeStruct((batch_size, self.context_length), jnp.int32)}

    def init_inputs(self, batch):
        return (batch["image"], batch["tokens"])

    @property
    def freezes_params(self) -> bool:
        return self.lock_image

    def frozen(self, params) -> Any:
        return self.frozen_params(params)

    @staticmethod
    def frozen_params(params) -> Any:
        """True for the parameters LiT keeps fixed (the image tower ``img``): the mask a trainer
        passes to ``optax.multi_transform`` / ``optax.masked`` to give them no update at all."""
        return {k: jax.tree.map(lambda _: k == "img", v) for k, v in params.items()}

    # ---------------------------------------------------------------------------------- losses
    def embed(self, model, params, batch, rng=None, *, train: bool):
        rngs = {"dropout": rng} if rng is not None else {}
        img_params = params
        if self.lock_image:
            img_params = dict(params, img=jax.lax.stop_gradient(params["img"]))
        zimg = model.apply({"params": img_params}, batch["image"], train=train and not self.lock_image,
                           rngs=rngs, method="encode_image")
        ztxt = model.apply({"params": params}, batch["tokens"], train=train, rngs=rngs, method="encode_text")
        scale, bias = model.apply({"params": params}, method="logit_params")
        return zimg, ztxt, scale, bias

    def loss(self, model, params, batch, rng, *, train):
        zimg, ztxt, scale, bias = self.embed(model, params, batch, rng, train=train)
        loss, metrics = contrastive_loss(self.kind, zimg, ztxt, scale, bias)
        out = {"loss": loss, "logit_scale": scale, **metrics}
        if bias is not None:
            out["logit_bias"] = bias
        return loss, out

    def eval_metrics(self, model, params, batch):
        if "tokens" not in batch:      # an image-only eval split: the whole-split evals still run
            return {}
        zimg, ztxt, scale, bias = self.embed(model, params, batch, train=False)
        mask = batch["mask"]
        n = jnp.sum(mask.astype(jnp.float32))
        if self.kind == "softmax":
            loss = softmax_loss(zimg, ztxt, scale, mask=mask)
        else:
            loss = sigmoid_loss(zimg, ztxt, scale, bias, mask=mask)
        return {"loss": (loss * n, n)}

    # ----------------------------------------------------------------------------- evaluations
    def _source(self, trainer, data: dict | None):
        if not data:
            if trainer.eval_source is None:
                raise ValueError("zero-shot / retrieval evaluation needs a split: set config.input.eval_data "
                                 "or objective.zeroshot.data / objective.retrieval.data")
            return trainer.eval_source
        key = repr(sorted(dict(data).items()))
        if key not in self._sources:
            from vitjax.data.sources import get_source
            self._sources[key] = get_source(**dict(data))
        return self._sources[key]

    def _image_ops(self, trainer, ops):
        if ops is not None:
            return list(ops)
        return [dict(o) for o in trainer.config.input.eval_ops if dict(o).get("op") != "tokenize"]

    def text_embeddings(self, trainer, params, texts: Sequence[str]) -> np.ndarray:
        """Unit text embeddings [len(texts), E] for host strings, through the tokenize op."""
        model = trainer.model

        def fn(p, b):
            return {"z": model.apply({"params": p}, b["tokens"], method="encode_text")}

        out = trainer.map_batches("clip_text", fn, params, _Records([{"text": t} for t in texts]),
                                  ops=[self.tokenize_op()])
        if len(out["z"]) != len(texts):
            raise ValueError(f"{len(texts) - len(out['z'])} zero-shot prompt(s) tokenized to nothing (empty)")
        return out["z"]

    def zeroshot_classifier(self, trainer, params) -> np.ndarray:
        """[num_classes, E]: per class, the normalised mean of its prompts' unit embeddings."""
        names, templates = self.zeroshot["class_names"], self.zeroshot["templates"]
        z = self.text_embeddings(trainer, params, zs.prompts(names, templates))
        return zs.class_embeddings(z, len(names))

    def probe_evals(self, trainer, params) -> dict[str, float]:
        """Linear probe / kNN on the image tower's pooled features (see the module docstring)."""
        from vitjax.evals.representation import representation_evals
        model, pr = trainer.model, self.probe
        ops = self._image_ops(trainer, pr.get("ops"))

        def feats(p, b):
            return {"f": model.apply({"params": p}, b["image"], method=_tower_features)}

        train = trainer.map_batches("clip_probe", feats, params,
                                    self._source(trainer, pr.get("train_data") or dict(trainer.config.input.data)),
                                    ops=ops, max_examples=pr.get("max_train_examples"))
        test = trainer.map_batches("clip_probe", feats, params, self._source(trainer, pr.get("test_data")),
                                   ops=ops, max_examples=pr.get("max_test_examples"))
        if "label" not in train or "label" not in test:
            raise ValueError("the linear-probe splits need a 'label' feature; set objective.probe.train_data "
                             "/ test_data to labelled splits or objective.probe=None")
        out = representation_evals(train["f"], train["label"], test["f"], test["label"],
                                   methods=tuple(pr.get("methods", ("linear",))),
                                   linear_epochs=int(pr.get("linear_epochs", 90)),
                                   linear_batch_size=int(pr.get("linear_batch_size", 16384)))
        return {f"probe_{k}": v for k, v in out.items()}

    def extra_evals(self, trainer, params) -> dict[str, float]:
        results: dict[str, float] = self.probe_evals(trainer, params) if self.probe is not None else {}
        if self.zeroshot is None and self.retrieval is None:
            return results
        model = trainer.model
        image_feats = None      # reused by zero-shot when it reads the same split as retrieval

        if self.retrieval is not None:
            src = self._source(trainer, self.retrieval.get("data"))
            ops = self.retrieval.get("ops") or trainer.config.input.eval_ops

            def both(p, b):
                return {"img": model.apply({"params": p}, b["image"], method="encode_image"),
                        "txt": model.apply({"params": p}, b["tokens"], method="encode_text")}

            out = trainer.map_batches("clip_retrieval", both, params, src, ops=ops,
                                      max_examples=self.retrieval.get("max_examples"))
            for k, v in zs.recall_at_k(out["img"], out["txt"]).items():
                results[f"i2t_r{k}"] = v
            for k, v in zs.recall_at_k(out["txt"], out["img"]).items():
                results[f"t2i_r{k}"] = v
            if (self.zeroshot is not None and not self.zeroshot.get("data") and not self.retrieval.get("data")
                    and self.zeroshot.get("ops") is None and "label" in out
                    and self.zeroshot.get("max_examples") == self.retrieval.get("max_examples")):
                image_feats = (out["img"], out["label"])

        if self.zeroshot is not None:
            classifier = self.zeroshot_classifier(trainer, params)
            if image_feats is None:
                src = self._source(trainer, self.zeroshot.get("data"))

                def img(p, b):
                    return {"img": model.apply({"params": p}, b["image"], method="encode_image")}

                out = trainer.map_batches("clip_zeroshot", img, params, src,
                                          ops=self._image_ops(trainer, self.zeroshot.get("ops")),
                                          max_examples=self.zeroshot.get("max_examples"))
                if "label" not in out:
                    raise ValueError("the zero-shot split has no 'label' feature; point "
                                     "objective.zeroshot.data at a labelled split")
                image_feats = (out["img"], out["label"])
            for k, v in zs.zeroshot_accuracy(*image_feats, classifier, ks=(1, 5)).items():
                results[f"zeroshot_top{k}"] = v
        return results
