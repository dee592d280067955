"""CLIP / SigLIP / LiT: contrastive image-text training, with zero-shot and retrieval evaluation.

    c.model = dict(name="clip", variant="B/16")            # vitjax.models.clip
    c.objective = dict(name="clip", loss="softmax",          # "sigmoid" for SigLIP (model with a bias)
                       tokenizer="clip", context_length=77,  # must match the train/eval "tokenize" op
                       lock_image=False,                     # LiT: the image tower gets no gradient
                       zeroshot=dict(class_names=[...], templates=["a photo of a {}.", ...]),
                       retrieval=dict())

Batches hold ``image`` [B, H, W, C] float and ``tokens`` [B, T] int32 (the ``tokenize`` op). The
loss is ``vitjax.losses.contrastive``'s, sharded over the batch mesh axes inside the jitted step.

Evaluations (``default_evals``: evaluators of ``vitjax.evals``, logged as ``eval/<name>``;
``config.evals`` adds more or replaces them):

* ``zeroshot_top1`` (and ``zeroshot_top5`` with >= 5 classes): the ``zeroshot`` evaluator. Each
  class is embedded as the normalised mean of its prompts' text embeddings (Radford et al. 2021,
  sec. 3.1.4: prompt ensembling), every image of the zero-shot split is assigned the class of highest
  cosine. ``zeroshot.data`` names a split (``get_source`` kwargs; default: the eval split) whose
  examples have a ``label``; ``zeroshot.ops`` its preprocessing (default: the eval ops without
  ``tokenize``). The prompts are tokenized with this objective's tokenizer.
* ``i2t_r1/5/10`` and ``t2i_r1/5/10``: the ``retrieval`` evaluator. Recall@K of the paired caption
  among all captions of the retrieval split (``retrieval.data``, default the eval split, with the eval
  ops), and of the paired image among all images. Pairs are matched by index (one caption per image).
  Zero-shot reuses retrieval's image embeddings when both read the same split with the same cap.
* ``probe_linear_top1`` / ``probe_knn_top1`` / ``probe_ncm_top1``: the ``linear_probe`` / ``knn`` /
  ``ncm`` evaluators on the image tower's pooled features (``feature_fn``: before the projection),
  fitted on ``probe.train_data`` (default: the training split, read with the image eval ops) and
  scored on ``probe.test_data`` (default: the eval split).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vitjax.data.text import get_tokenizer
from vitjax.evals.image_text import check_prompts
from vitjax.evals.probes import PROBE_TYPES
from vitjax.losses.contrastive import contrastive_loss, sigmoid_loss, softmax_loss
from vitjax.objectives.base import Objective, register_objective


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
            self.zeroshot["class_names"], self.zeroshot["templates"] = check_prompts(
                self.zeroshot.get("class_names"), self.zeroshot.get("templates"), "objective.zeroshot")

    # ---------------------------------------------------------------------------------- set-up
    def tokenizer(self):
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

    def frozen(self, params) -> Any:
        return self.frozen_params(params) if self.lock_image else None

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

    def loss(self, model, params, state, batch, rng, *, train, step=None, run=None):
        emb = self.embed_for_loss(model, params, state, batch, rng, train=train)
        return self.loss_from_embeddings(model, params, state, emb, train=train, step=step, run=run)

    # The loss in two parts, so micro-batching stays exact (vitjax.training.gradcache): the image and
    # text embeddings per example, then the contrastive loss over the whole batch's embeddings.
    def embed_for_loss(self, model, params, state, batch, rng, *, train):
        """``{"zimg": [b, D], "ztxt": [b, D]}``: the normalised embeddings of ``batch``."""
        del state
        zimg, ztxt, _, _ = self.embed(model, params, batch, rng, train=train)
        return {"zimg": zimg, "ztxt": ztxt}

    def loss_from_embeddings(self, model, params, state, emb, *, train, step=None, run=None):
        """(loss, metrics, {}) of the whole batch from ``embed_for_loss``'s embeddings [B, D]."""
        del state, train, step, run
        scale, bias = model.apply({"params": params}, method="logit_params")
        loss, metrics = contrastive_loss(self.kind, emb["zimg"], emb["ztxt"], scale, bias)
        out = {"loss": loss, "logit_scale": scale, **metrics}
        if bias is not None:
            out["logit_bias"] = bias
        return loss, out, {}

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

    # ----------------------------------------------------------------------------- evaluation
    def feature_fn(self, model):
        """The image tower's pooled features [B, Dv] (before the projection): what a probe reads."""
        return lambda p, images: model.apply({"params": p}, images, method=_tower_features)

    def default_evals(self) -> dict[str, dict]:
        """The ``probe``, ``retrieval`` and ``zeroshot`` options as evaluator specs (module docstring)."""
        specs: dict[str, dict] = {}
        if self.probe is not None:
            pr = self.probe
            split = dict(train_data=pr.get("train_data"), test_data=pr.get("test_data"), ops=pr.get("ops"),
                         max_train_examples=pr.get("max_train_examples"),
                         max_test_examples=pr.get("max_test_examples"), origin="objective.probe")
            for m in pr.get("methods", ("linear",)):
                extra = dict(epochs=int(pr.get("linear_epochs", 90)),
                             batch_size=int(pr.get("linear_batch_size", 16384))) if m == "linear" else {}
                specs[f"probe_{m}"] = dict(type=PROBE_TYPES[m], **split, **extra)
        if self.retrieval is not None:
            specs["retrieval"] = dict(type="retrieval", prefix="", origin="objective.retrieval",
                                      **{k: self.retrieval.get(k) for k in ("data", "ops", "max_examples")})
        if self.zeroshot is not None:
            specs["zeroshot"] = dict(type="zeroshot", origin="objective.zeroshot", tokenize=self.tokenize_op(),
                                     **{k: self.zeroshot.get(k) for k in ("class_names", "templates", "data",
                                                                           "ops", "max_examples")})
        return specs
