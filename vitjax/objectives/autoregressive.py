"""Next-token prediction (``objective.name = "next_token"``): iGPT's next-pixel objective, Perceiver
AR's, and a text decoder's, for any model mapping tokens [B, T] -> logits [B, T', V].

Batches hold ``tokens`` int32 [B, seq_len]: a start token, then the sequence (``pixel_tokens`` or
``tokenize`` ops). The model reads ``tokens[:, :-1]`` (T = seq_len - 1 positions) and position t
predicts ``tokens[:, t + 1]``, so every token after the start token is a target: the 64 pixels of a
digit, or a caption's ids and end token (pad targets are excluded with ``pad_id``).

A model whose logits cover only the last T' < T positions (Perceiver AR: its M latents) is run on
the prefixes that end at M, 2M, ..., T (and T itself when M does not divide it); each prefix scores
the targets of its last M positions that no shorter prefix scored, so every target is predicted
exactly once per step, each from all the tokens before it, as a dense decoder predicts them.

Metrics (train and eval): ``loss``, the mean cross-entropy in nats over the target tokens, and
``bits_per_<unit>`` (``bits_per_pixel`` by default) = loss / ln 2. Both average over every real
target token of the batch -- train: all B x T targets that are not padding; eval: the same over the
real examples (``mask``), summed over the whole eval split and divided by its token count at the
end, so ``eval/bits_per_pixel`` is the mean over the 360 x 64 held-out digit pixels, not a mean of
per-image means. The start token is never a target.

At eval steps a linear probe (``default_evals``, the ``vitjax.evals`` ``linear_probe``) scores the
average-pooled hidden states of a middle block on the labels (iGPT, Chen et al. 2020, sec. 4.1:
the best linear-probe features are mid-network). ``probe_layer`` (default depth // 2) counts blocks:
layer l is the output of block ``probe_block.format(l - 1)``; the probed block is logged.
``probe_layers=[l1, l2, ...]`` instead probes the concatenation of several blocks' average-pooled
outputs ([B, width * len(probe_layers)]), as iGPT's best ImageNet linear probes did (sec. 4.3).
"""
from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vitjax.evals.probes import ProbeOptions
from vitjax.objectives.base import Objective, register_objective

log = logging.getLogger("vitjax")

LN2 = math.log(2.0)


def window_ends(num_inputs: int, num_predicted: int) -> list[int]:
    """The prefix lengths a model predicting its last ``num_predicted`` positions is run on, so that
    together they cover positions 0..num_inputs-1: M, 2M, ..., and num_inputs."""
    ends = list(range(num_predicted, num_inputs + 1, num_predicted))
    if not ends or ends[-1] != num_inputs:
        ends.append(num_inputs)
    return ends


def model_depth(model) -> int | None:
    for attr in ("depth", "num_layers", "num_blocks"):
        value = getattr(model, attr, None)
        if isinstance(value, int):
            return value
    return None


def _find(tree: Any, name: str):
    """The captured ``__call__`` output of the submodule called ``name`` anywhere in ``tree``."""
    if isinstance(tree, dict):
        if name in tree and "__call__" in tree[name]:
            out = tree[name]["__call__"][0]
            return out[0] if isinstance(out, (tuple, list)) else out
        for v in tree.values():
            found = _find(v, name)
            if found is not None:
                return found
    return None


@register_objective("next_token")
class NextToken(Objective):
    """Attributes:
      seq_len: length of the ``tokens`` arrays (start token included): digits 65, digit pairs 129.
      vocab_size: the data's vocabulary (palette + start token, or the tokenizer's); checked against
        the model's ``vocab_size`` at start-up (None: unchecked).
      pad_id: a token id that is never a target (text padding); None: every target counts.
      unit: the metric is ``bits_per_<unit>``.
      probe, probe_layer, probe_block, probe_train_examples, knn_*, linear_*, num_classes: the
        frozen-feature probes run at eval steps (``ProbeOptions``); () for none.
      probe_layers: several layers whose average-pooled outputs are concatenated for the probes
        (None: the one ``probe_layer``; setting both is an error).
    """
    feature_input = "tokens"

    def __init__(self, seq_len: int, vocab_size: int | None = None, pad_id: int | None = None,
                 unit: str = "pixel", probe=("linear",), probe_layer: int | None = None, probe_layers=None,
                 probe_block: str = "block_{}", probe_train_examples=None, knn_k: int = 20,
                 knn_temperature: float = 0.07, linear_epochs: int = 100, linear_batch_size: int = 256,
                 linear_lr: float = 0.1, linear_optimizer: str = "sgd", num_classes=None):
        if int(seq_len) < 2:
            raise ValueError(f"objective.seq_len={seq_len}: a sequence needs a start token and at least one target")
        self.seq_len = int(seq_len)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.pad_id = None if pad_id is None else int(pad_id)
        self.metric = f"bits_per_{unit}"
        self.probe_layer = None if probe_layer is None else int(probe_layer)
        self.probe_layers = None if probe_layers is None else tuple(int(x) for x in probe_layers)
        if self.probe_layers is not None and (not self.probe_layers or self.probe_layer is not None):
            raise ValueError(f"objective.probe_layers={probe_layers} and probe_layer={probe_layer}: set one of "
                             f"them (probe_layers a non-empty list of layers)")
        self.probe_block = str(probe_block)
        self._announced = False
        self.probes = ProbeOptions(probe, probe_train_examples, knn_k, knn_temperature, linear_epochs,
                                   linear_batch_size, linear_lr, linear_optimizer, num_classes)

    # ------------------------------------------------------------------------------ shapes
    def example_batch(self, model, batch_size):
        return {"tokens": jax.ShapeDtypeStruct((batch_size, self.seq_len), jnp.int32)}

    def init_inputs(self, batch):
        return (batch["tokens"][:, :-1],)

    def check_model(self, model):
        n_model = getattr(model, "vocab_size", None)
        if self.vocab_size is not None and isinstance(n_model, int) and n_model < self.vocab_size:
            raise ValueError(f"the data's vocabulary has {self.vocab_size} tokens (objective.vocab_size) but "
                             f"model.vocab_size={n_model}: set --config.model.vocab_size={self.vocab_size}")
        max_len = getattr(model, "max_len", None)
        if isinstance(max_len, int) and max_len < self.seq_len - 1:
            raise ValueError(f"the model reads {self.seq_len - 1} positions (objective.seq_len={self.seq_len} "
                             f"less the last token) but model.max_len={max_len}: set "
                             f"--config.model.max_len={self.seq_len - 1}")
        if self.probe_layers and self.probes.probe:     # at start-up, not at the first eval step
            self.probed_blocks(model)

    def check_batch(self, model, batch):
        if "tokens" not in batch:
            raise ValueError(f"objective 'next_token' reads batch['tokens'] but the data give {sorted(batch)}: "
                             f"end input.train_ops with dict(op='pixel_tokens', ...) or dict(op='tokenize', ...)")
        got = tuple(batch["tokens"].shape[1:])
        if got != (self.seq_len,):
            raise ValueError(f"the data give 'tokens' of shape {got} per example but objective.seq_len="
                             f"{self.seq_len}: set --config.objective.seq_len={got[0] if got else '?'} "
                             f"(and the model's max_len to it minus 1)")

    # ------------------------------------------------------------------------------ losses
    def token_losses(self, model, params, tokens, rng=None, train: bool = False):
        """(cross-entropy [B, T] in nats, target weights [B, T]) of ``tokens`` [B, T + 1]."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        t = inputs.shape[1]

        def apply(p, x, r):
            rngs = {"dropout": r} if r is not None else {}
            return model.apply({"params": p}, x, train=train and r is not None, rngs=rngs)

        out = jax.eval_shape(lambda p, x: apply(p, x, None), params, inputs)
        m = out.shape[1]
        if m == t:
            logits = apply(params, inputs, rng).astype(jnp.float32)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        else:   # the model predicts its last m positions: one pass per prefix (module docstring)
            pieces, prev = [], 0
            for i, end in enumerate(window_ends(t, m)):
                r = None if rng is None else jax.random.fold_in(rng, i)
                logits = apply(params, inputs[:, :end], r).astype(jnp.float32)
                ce_w = optax.softmax_cross_entropy_with_integer_labels(logits, targets[:, end - m:end])
                pieces.append(ce_w[:, prev - (end - m):])
                prev = end
            ce = jnp.concatenate(pieces, axis=1)
        weights = jnp.ones(ce.shape, jnp.float32) if self.pad_id is None else \
            (targets != self.pad_id).astype(jnp.float32)
        return ce, weights

    def loss(self, model, params, state, batch, rng, *, train, step=None, run=None):
        del state, step, run
        ce, w = self.token_losses(model, params, batch["tokens"], rng, train)
        loss = jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)
        return loss, {"loss": loss, self.metric: loss / LN2}, {}

    def eval_metrics(self, model, params, batch):
        ce, w = self.token_losses(model, params, batch["tokens"])
        w = w * batch["mask"].astype(jnp.float32)[:, None]
        total, count = jnp.sum(ce * w), jnp.sum(w)
        return {"loss": (total, count), self.metric: (total / LN2, count)}

    def eval_losses(self, model, params, batch):
        """Per-example mean cross-entropy (nats per target token) [B]."""
        ce, w = self.token_losses(model, params, batch["tokens"])
        return jnp.sum(ce * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)

    # ------------------------------------------------------------------------------ evaluation
    def probed_blocks(self, model) -> tuple[list[str], list[int], int | None]:
        """(submodule names, layers, depth) of the features ``feature_fn`` returns."""
        depth = model_depth(model)
        layers = self.probe_layers or [self.probe_layer or (max(1, depth // 2) if depth else None)]
        if layers[0] is None:
            raise ValueError(f"objective.probe_layer is needed: {type(model).__name__} has no depth attribute")
        option = "probe_layers" if self.probe_layers else "probe_layer"
        for layer in layers:
            if depth is not None and not 1 <= layer <= depth:
                raise ValueError(f"objective.{option}={layer if option == 'probe_layer' else list(layers)} "
                                 f"must be between 1 and the model's depth {depth}")
        return [self.probe_block.format(layer - 1) for layer in layers], list(layers), depth

    def feature_fn(self, model):
        """``fn(params, tokens [B, seq_len]) -> [B, width * number of probed layers]``: the hidden
        states after ``probe_layer`` blocks (or each of ``probe_layers``, concatenated) of
        ``tokens[:, :-1]``, averaged over the positions: through ``return_layer`` for a model that has
        it (``lm``), else captured with flax's ``capture_intermediates`` from the submodules that
        ``probe_block`` names (e.g. Perceiver AR's ``self_attend{}``)."""
        names, layers, depth = self.probed_blocks(model)
        if len(layers) == 1:
            message = f"next_token: probing the average-pooled output of {names[0]} (layer {layers[0]} of {depth})"
        else:
            message = (f"next_token: probing the average-pooled outputs of {', '.join(names)} (layers "
                       f"{', '.join(map(str, layers))} of {depth}), concatenated")
        log.info(message)
        if not self._announced:     # once per run, beside the trainer's own "vitjax:" status lines
            print(f"vitjax: {message}")
            self._announced = True

        def pooled(hs):
            return jnp.concatenate([jnp.mean(h.astype(jnp.float32), axis=1) for h in hs], axis=-1)

        if "return_layer" in inspect.signature(type(model).__call__).parameters:   # the lm family's own API
            return lambda params, tokens: pooled(model.apply({"params": params}, tokens[:, :-1], train=False,
                                                             return_layer=list(layers)))    # one forward pass

        def fn(params, tokens):
            _, state = model.apply({"params": params}, tokens[:, :-1], train=False, mutable=["intermediates"],
                                   capture_intermediates=lambda mdl, method: mdl.name in names and method == "__call__")
            hs = [_find(state["intermediates"], name) for name in names]
            for name, h in zip(names, hs):
                if h is None:
                    raise ValueError(f"objective.probe_block={self.probe_block!r}: {type(model).__name__} has no "
                                     f"submodule {name!r}; name its blocks' pattern (e.g. 'self_attend{{}}')")
            return pooled(hs)
        return fn

    def default_evals(self):
        return self.probes.specs()
