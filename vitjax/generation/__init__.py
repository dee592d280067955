"""Autoregressive generation for every decoder in vitjax: the LM family, and the families that
generate text or image tokens from their own decoders (Flamingo, BLIP-2, DALL·E, Perceiver AR).

    from vitjax.generation import generate
    out = generate(model, params, prompts, lengths, max_new_tokens=32, temperature=0.8, top_k=40,
                   stop_tokens=(eot,), rng=jax.random.key(0), mesh=mesh, rules=rules)

``generate`` runs one jitted prefill over the right-padded prompts, then one jitted
``lax.while_loop`` of single-token steps (greedy, temperature, top-k, top-p; per-row stop tokens,
ending early once every row has stopped), and depends only on this protocol (``decode.Decoder``):

    init_cache(batch_size, length) -> cache
        a static-size cache (any pytree of arrays; the LM's is {"k", "v"}: [depth, B, length,
        kv_heads, head_dim]), created inside the jitted prefill so the model's logical sharding
        constraints place it (batch on the data axes, heads on ``tensor``).
    prefill(params, inputs, lengths, cache) -> (logits [B, V] float32, cache)
        inputs: tokens [B, P] or embeddings [B, P, D] (prefix embeddings, e.g. image features fed
        to a text decoder); row b's prompt is its first lengths[b] entries at positions 0..len-1;
        the logits predict position lengths[b].
    decode_step(params, tokens [B], positions [B], cache) -> (logits [B, V] float32, cache)
        one token per row at its own position, attending to cached positions <= it.

A flax module with methods of these names (minus ``params``, which go through ``apply``) is adapted
automatically (``ModuleDecoder``); a family with extra inputs (cross-attention memory) or its own
cache layout implements the three functions itself, carrying those inputs in ``params``.

Modules: ``sampling`` (logits -> next token), ``decode`` (the protocol, ``generate``).
"""
from vitjax.generation.decode import (SELECTS, Decoder, Generated, ModuleDecoder, as_decoder, check_vocab, generate,
                                     pick_best)
from vitjax.generation.sampling import check_sampling, filter_logits, next_token

__all__ = ["SELECTS", "Decoder", "Generated", "ModuleDecoder", "as_decoder", "check_vocab", "generate", "pick_best",
           "check_sampling", "filter_logits", "next_token"]
