"""Cached autoregressive generation: one jitted prefill over the padded prompts, then one jitted
``lax.while_loop`` of single-token decode steps against a static-size KV cache.

    out = generate(model, params, prompts, lengths, max_new_tokens=32)                 # greedy
    out = generate(model, params, prompts, lengths, max_new_tokens=32, temperature=0.8, top_k=40,
                   top_p=0.95, stop_tokens=(eot,), rng=jax.random.key(0))
    out.tokens [B, 32] int32 (pad_id after a row's stop token), out.lengths [B], out.finished [B],
    out.logprobs [B] (the model's log-probability of each row's generated tokens)
    out = generate(..., temperature=1.0, best_of=8)     # per prompt, the likeliest of 8 samples
    out = generate(..., temperature=1.0, best_of=16, select="consensus")   # minimum-Bayes-risk pick

``generate`` needs only the decoder protocol (``Decoder``, in the package docstring); a flax module
with ``init_cache`` / ``prefill`` / ``decode_step`` methods (``vitjax.models.lm.LM``) is adapted
by ``as_decoder``. With ``mesh`` and ``rules`` the whole loop runs under them: the prompts and the
cache are split along ``act_batch`` (the data axes), the attention heads along ``tensor``, and the
parameters stay as sharded as they were passed in.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, NamedTuple, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from vitjax import sharding as sh
from vitjax.generation.sampling import check_sampling, next_token

__all__ = ["Decoder", "ModuleDecoder", "Generated", "SELECTS", "as_decoder", "generate", "pick_best", "check_vocab"]

#: How ``best_of`` keeps one of its candidates (``pick_best``).
SELECTS = ("likelihood", "consensus")


@runtime_checkable
class Decoder(Protocol):
    """What ``generate`` calls; every array is batch-first and the cache is any pytree of arrays.

    init_cache(batch_size, length) -> cache
        An empty cache for ``length`` positions (ValueError when the model cannot hold that many).
    prefill(params, inputs, lengths, cache) -> (logits [B, V] float32, cache)
        ``inputs``: right-padded prompts, tokens [B, P] or embeddings [B, P, D]; row b's real prompt
        is its first ``lengths[b]`` entries, at positions 0..lengths[b]-1. Returns the logits that
        predict position ``lengths[b]`` and the cache holding positions 0..P-1.
    decode_step(params, tokens, positions, cache) -> (logits [B, V] float32, cache)
        One token per row at its own position ``positions[b]``, attending to every cached position
        <= ``positions[b]`` (positions beyond it may hold stale padding and must be ignored).

    ``params`` is opaque to ``generate``: any pytree the decoder's methods take (a family with
    cross-attention passes e.g. ``{"params": p, "media": image_features}``). Instances must be
    hashable (the compiled loop is cached per decoder).
    """

    def init_cache(self, batch_size: int, length: int) -> Any: ...

    def prefill(self, params, inputs, lengths, cache) -> tuple[jax.Array, Any]: ...

    def decode_step(self, params, tokens, positions, cache) -> tuple[jax.Array, Any]: ...


@dataclasses.dataclass(frozen=True)
class ModuleDecoder:
    """The ``Decoder`` of a flax module whose methods ``init_cache(batch, length)``,
    ``prefill(inputs, lengths, cache)`` and ``decode_step(tokens, positions, cache)`` take the
    variables through ``apply`` (``params`` may be the params tree or ``{"params": ...}``)."""
    module: nn.Module

    @staticmethod
    def _variables(params):
        return params if isinstance(params, dict) and "params" in params else {"params": params}

    def init_cache(self, batch_size: int, length: int):
        return self.module.init_cache(batch_size, length)

    def prefill(self, params, inputs, lengths, cache):
        return self.module.apply(self._variables(params), inputs, lengths, cache, method="prefill")

    def decode_step(self, params, tokens, positions, cache):
        return self.module.apply(self._variables(params), tokens, positions, cache, method="decode_step")


def as_decoder(obj) -> Decoder:
    """``obj`` itself when it implements the protocol with ``params`` arguments, a ``ModuleDecoder``
    for a flax module with the three methods; TypeError otherwise."""
    if isinstance(obj, nn.Module):
        missing = [m for m in ("init_cache", "prefill", "decode_step") if not hasattr(obj, m)]
        if missing:
            raise TypeError(f"a {type(obj).__name__} cannot generate: it lacks {missing} (see vitjax.generation)")
        return ModuleDecoder(obj)
    if not isinstance(obj, Decoder):
        raise TypeError(f"{type(obj).__name__} does not implement the vitjax.generation Decoder protocol "
                        f"(init_cache, prefill, decode_step)")
    return obj


def check_vocab(tokenizer_vocab: int, model_vocab: int) -> None:
    """ValueError naming both sizes when a tokenizer's ids do not all fit the model's embedding."""
    if tokenizer_vocab > model_vocab:
        raise ValueError(f"the tokenizer has {tokenizer_vocab} tokens but the model's vocabulary has "
                         f"{model_vocab}: its ids would index past the embedding; use the run's tokenizer "
                         f"or a model with vocab_size >= {tokenizer_vocab}")


class Generated(NamedTuple):
    """``generate``'s result. tokens [B, max_new_tokens] int32 (``pad_id`` after a row's stop token);
    lengths [B] tokens generated per row, its stop token included; finished [B] whether the row
    produced a stop token; logprobs [B] float32 the sum over the row's generated tokens (its stop
    token included, pads not) of log softmax(logits) at the chosen token: the model's own
    log-probability of the continuation, before temperature and top-k/top-p filtering."""
    tokens: jax.Array
    lengths: jax.Array
    finished: jax.Array
    logprobs: jax.Array


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The static settings one compiled generation is specialised on (the sampling values, stop
    tokens and pad id are arguments, so changing them compiles nothing)."""
    max_new_tokens: int
    cache_len: int
    greedy: bool


def _logprob(logits, tokens):
    """log softmax(logits [B, V]) at tokens [B] -> [B] float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]


def _check_select(select: str) -> None:
    if select not in SELECTS:
        raise ValueError(f"select={select!r}: choose {' or '.join(map(repr, SELECTS))}")


def pick_best(out: Generated, k: int, select: str = "likelihood", token_values=None) -> Generated:
    """Rows i*k .. i*k+k-1 of ``out`` are k candidates for prompt i; keeps one per prompt.

    select="likelihood": the highest log-probability per generated token (OpenAI's ``best_of``).
    select="consensus": minimum-Bayes-risk decoding: the candidate with the smallest summed squared
      distance to the other k-1, i.e. the one nearest the samples' mode rather than the likeliest
      single sequence (which favours bland continuations). Distances compare ``token_values[t]``
      ([V] or [V, C]: e.g. an image palette) position by position; without ``token_values``, the
      number of positions where two candidates' tokens differ."""
    _check_select(select)
    b = out.tokens.shape[0] // k
    if select == "likelihood":
        score = (out.logprobs / jnp.maximum(out.lengths, 1)).reshape(b, k)
    else:
        toks = out.tokens.reshape(b, k, -1)
        if token_values is None:
            dist = jnp.sum(toks[:, :, None] != toks[:, None], axis=-1).astype(jnp.float32)
        else:
            vals = jnp.asarray(token_values, jnp.float32)
            x = vals[jnp.clip(toks, 0, vals.shape[0] - 1)].reshape(b, k, -1)
            dist = jnp.sum((x[:, :, None] - x[:, None]) ** 2, axis=-1)
        score = -jnp.sum(dist, axis=-1)
    pick = jnp.arange(b) * k + jnp.argmax(score, axis=1)
    return Generated(*(x[pick] for x in out))


def _is_stop(tokens, stop_tokens):
    """tokens [...] -> bool [...]: whether each is one of ``stop_tokens`` [S] (S may be 0)."""
    return jnp.any(tokens[..., None] == stop_tokens.astype(tokens.dtype), axis=-1)


@functools.lru_cache(maxsize=32)
def _compiled(dec: Decoder, plan: _Plan, mesh, rules):
    """(prefill, loop): the two jitted halves of ``generate`` for one decoder and plan. Traced under
    ``mesh``/``rules`` (part of the key, as flax's logical constraints read them at trace time).
    ``knobs``: dict(temperature, top_k, top_p, stop [S], pad) of scalars / arrays."""
    def sample(logits, rng, knobs):
        return next_token(logits, rng, temperature=knobs["temperature"], top_k=knobs["top_k"],
                          top_p=knobs["top_p"], greedy=plan.greedy)

    def prefill(params, prompts, lengths, rng, knobs):
        cache = dec.init_cache(prompts.shape[0], plan.cache_len)
        logits, cache = dec.prefill(params, prompts, lengths, cache)
        tok = sample(logits, jax.random.fold_in(rng, 0), knobs)
        return tok, _is_stop(tok, knobs["stop"]), _logprob(logits, tok), cache

    def loop(params, cache, tok0, finished0, logprob0, lengths, rng, knobs):
        b, n = tok0.shape[0], plan.max_new_tokens
        out = jnp.full((b, n), knobs["pad"], jnp.int32).at[:, 0].set(tok0)

        def cond(state):
            step, _, _, _, finished, _ = state
            return (step < n) & ~jnp.all(finished)

        def body(state):
            step, out, tok, cache, finished, logprob = state
            # Token `step` is predicted from token step-1, which sits at position lengths + step - 1.
            logits, cache = dec.decode_step(params, tok, lengths + step - 1, cache)
            new = jnp.where(finished, knobs["pad"], sample(logits, jax.random.fold_in(rng, step), knobs))
            logprob = logprob + jnp.where(finished, 0.0, _logprob(logits, new))
            out = jax.lax.dynamic_update_slice(out, new[:, None], (0, step))
            return step + 1, out, new, cache, finished | _is_stop(new, knobs["stop"]), logprob

        state = (jnp.int32(1), out, tok0, cache, finished0, logprob0)
        _, out, _, _, finished, logprob = jax.lax.while_loop(cond, body, state)
        stops = _is_stop(out, knobs["stop"])
        count = jnp.where(jnp.any(stops, axis=1), jnp.argmax(stops, axis=1) + 1, n).astype(jnp.int32)
        return Generated(out, count, finished, logprob)

    return jax.jit(prefill), jax.jit(loop)


def _context(mesh, rules):
    if mesh is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(rules))
    return stack


def generate(decoder, params, prompts, lengths=None, *, max_new_tokens: int, rng=None,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, stop_tokens: Sequence[int] = (),
             pad_id: int = 0, cache_len: int | None = None, best_of: int = 1, select: str = "likelihood",
             token_values=None, mesh=None, rules=None) -> Generated:
    """Continues each prompt by up to ``max_new_tokens`` tokens.

    Args:
      decoder: a ``Decoder`` or a flax module with the protocol's methods (``vitjax.models.lm.LM``).
      params: what the decoder's methods take (for an ``LM``: its params tree).
      prompts: right-padded tokens [B, P] int (or embeddings [B, P, D]); lengths: [B] real prompt
        lengths (default: all P). Row b's result equals generating from its unpadded prompt alone.
      temperature: 0 = greedy (argmax); else sample softmax(logits / temperature) after the
        ``top_k`` (0 = off) and ``top_p`` (1 = off) filters. rng: a PRNG key (default key(0)).
      stop_tokens: a row stops after producing any of these; later positions hold ``pad_id``; the
        loop ends early once every row has stopped.
      cache_len: KV-cache positions (default P + max_new_tokens - 1, the fewest that fit).
      best_of: sample this many continuations of every prompt (one batch of B * best_of rows) and
        return, per prompt, the one the model finds likeliest (highest log-probability per token,
        ``Generated.logprobs / lengths``): an approximate mode of p(continuation | prompt) that
        still varies with the seed. Needs temperature > 0 (greedy candidates would be identical).
        select="consensus" keeps instead the candidate closest to the others (minimum-Bayes-risk
        decoding, ``pick_best``; ``token_values`` [V] or [V, C] give tokens values to compare, e.g.
        an image model's palette).
      mesh, rules: run sharded (``vitjax.sharding``): prompts and cache along the batch axes.

    Raises ValueError for bad sampling settings, lengths outside 1..P, or a prompt (plus the new
    tokens) longer than the cache, naming the lengths.
    """
    check_sampling(temperature, top_k, top_p)
    if best_of < 1 or (best_of > 1 and temperature == 0):
        raise ValueError(f"best_of={best_of} must be >= 1, and > 1 only when sampling (temperature > 0, "
                         f"got {temperature}): greedy candidates are all the same")
    _check_select(select)
    if best_of > 1:
        prompts = np.repeat(np.asarray(prompts), best_of, axis=0)
        lengths = None if lengths is None else np.repeat(np.asarray(lengths), best_of, axis=0)
        out = generate(decoder, params, prompts, lengths, max_new_tokens=max_new_tokens, rng=rng,
                       temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stop_tokens,
                       pad_id=pad_id, cache_len=cache_len, mesh=mesh, rules=rules)
        return pick_best(out, best_of, select, token_values)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    dec = as_decoder(decoder)
    prompts = np.asarray(prompts) if not isinstance(prompts, jax.Array) else prompts
    b, p = prompts.shape[:2]
    lengths = np.full((b,), p, np.int32) if lengths is None else np.asarray(lengths, np.int32)
    if lengths.shape != (b,) or lengths.min() < 1 or lengths.max() > p:
        raise ValueError(f"lengths must be [{b}] values in 1..{p} (the padded prompt length); got {lengths.tolist()}")
    need = p + max_new_tokens - 1
    cache_len = need if cache_len is None else int(cache_len)
    if p > cache_len:
        raise ValueError(f"the prompt has {p} tokens but the KV cache holds {cache_len} positions; "
                         f"raise cache_len or shorten the prompt")
    if need > cache_len:
        raise ValueError(f"a prompt of {p} tokens plus max_new_tokens={max_new_tokens} needs a KV cache of "
                         f"{need} positions but cache_len={cache_len}")
    plan = _Plan(int(max_new_tokens), cache_len, temperature == 0)
    # Stop ids padded with -1 (never a token) to a multiple of 8, so their number rarely retraces.
    stop = np.full((-(-max(len(stop_tokens), 1) // 8) * 8,), -1, np.int32)
    stop[:len(stop_tokens)] = np.asarray(stop_tokens, np.int32).reshape(-1)
    knobs = dict(temperature=np.float32(temperature or 1.0), top_k=np.int32(top_k), top_p=np.float32(top_p),
                 stop=stop, pad=np.int32(pad_id))
    rules = (tuple(rules) if rules is not None else sh.DEFAULT_RULES) if mesh is not None else None
    rng = jax.random.key(0) if rng is None else rng
    prefill, loop = _compiled(dec, plan, mesh, rules)
    with _context(mesh, rules):
        lengths = jnp.asarray(lengths)
        prompts = jnp.asarray(prompts)
        if mesh is not None:
            ways = sh.batch_axes_size(mesh, rules)
            if b % ways:
                raise ValueError(f"{b} prompts do not split over the mesh's {ways}-way batch axes; pass a "
                                 f"multiple of {ways} prompts (pad with copies) or a smaller data/fsdp mesh")
            prompts = jax.device_put(prompts, sh.activation_sharding(mesh, rules, ("act_batch",)))
            lengths = jax.device_put(lengths, sh.activation_sharding(mesh, rules, ("act_batch",)))
        tok0, finished0, logprob0, cache = prefill(params, prompts, lengths, rng, knobs)
        return loop(params, cache, tok0, finished0, logprob0, lengths, rng, knobs)
