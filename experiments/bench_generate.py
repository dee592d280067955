"""Cached decoding, measured. Prints medians side by side and one JSON line.

    python experiments/bench_generate.py                  # CPU: KV cache vs recomputing the prefix
    python experiments/bench_generate.py --gpu            # GPU: GPT-2 124M, batch 32, vs HF generate
    python experiments/bench_generate.py --gpu --smoke    # the GPU code path at toy sizes (any device)

Default (CPU) mode: a decoder (width 256, 4 blocks, 4 heads, vocab 1024, fp32, batch 1) producing
tokens with a ``--context`` (256) position window: ``decode_step`` against a 256-position KV cache,
against a forward over the whole 256-token prefix (what a decoder without a cache recomputes for
every new token), each as a jitted loop of steps (so dispatch is not timed) divided per token,
timed in turns. Goal: >= 10x. Also the per-token time of ``vitjax.generation.generate`` (prefill +
while_loop, one call) over 128 new tokens.

``--gpu``: ``gpt2_small`` (124M parameters, bf16 compute) generating ``--new_tokens`` (256) greedy
tokens for a batch of ``--batch`` (32) prompts of ``--prompt_len`` (64) tokens: tokens/s of
``generate`` (compile excluded) and of HF ``GPT2LMHeadModel.generate(do_sample=False)`` (bf16, KV
cache, same lengths) on the same GPU, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _median_seconds(fn, reps: int) -> float:
    fn()                                        # compile / warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _interleaved_medians(fns, reps: int) -> list[float]:
    """Median seconds of each function, timed in turns (a, b, a, b, ...) so that a busy machine slows
    all of them alike rather than whichever happened to run during the busy spell."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def _random_params(model, seed: int = 0):
    """Parameters in init's shapes filled on the host (values do not change the speed)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vitjax.models.registry import model_param_shapes
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.ones(a.shape, a.dtype) if jax.tree_util.keystr(path).endswith("['scale']")
        else jnp.asarray(0.02 * rng.standard_normal(a.shape, np.float32), a.dtype), model_param_shapes(model))


def cpu(args) -> dict:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    import vitjax
    from vitjax.generation import generate

    model = vitjax.create_model("lm", vocab_size=1024, max_len=args.context, width=256, depth=4, num_heads=4)
    params = _random_params(model)
    n = args.context
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 1024, (1, n)), jnp.int32)
    k_cached, k_full = 64, 4
    cache = jax.jit(lambda: model.init_cache(1, n))()
    _, cache = jax.jit(functools.partial(model.apply, method="prefill"))(
        {"params": params}, tokens[:, :n - k_cached], jnp.array([n - k_cached]), cache)

    # Both run k steps inside one jitted loop, each step's argmax fed to the next, so the times are
    # per-token compute rather than Python dispatch. A decode step attends over the whole static
    # cache (masked), so its cost is that of position n whichever position it writes.
    @jax.jit
    def cached_tokens(p, cache):
        def body(i, state):
            tok, cache = state
            logits, cache = model.apply({"params": p}, tok, jnp.full((1,), n - k_cached + i, jnp.int32), cache,
                                        method="decode_step")
            return jnp.argmax(logits, -1).astype(jnp.int32), cache
        return jax.lax.fori_loop(0, k_cached, body, (tokens[:, n - k_cached], cache))[0]

    @jax.jit
    def recomputed_tokens(p, seq):
        def body(i, seq):
            logits = model.apply({"params": p}, seq)[:, -1]
            return jnp.roll(seq, -1, axis=1).at[:, -1].set(jnp.argmax(logits, -1).astype(jnp.int32))
        return jax.lax.fori_loop(0, k_full, body, seq)

    t_cache, t_full = _interleaved_medians([lambda: cached_tokens(params, cache).block_until_ready(),
                                            lambda: recomputed_tokens(params, tokens).block_until_ready()], args.reps)
    t_cache, t_full = t_cache / k_cached, t_full / k_full
    # Sanity: one cached step's logits are the full forward's (fp32).
    step = jax.jit(functools.partial(model.apply, method="decode_step"))
    _, cache = jax.jit(functools.partial(model.apply, method="prefill"))(
        {"params": params}, tokens[:, :n - 1], jnp.array([n - 1]), model.init_cache(1, n))
    diff = float(jnp.abs(step({"params": params}, tokens[:, -1], jnp.array([n - 1]), cache)[0]
                         - model.apply({"params": params}, tokens)[:, -1]).max())
    new = n // 2
    prompt = np.asarray(tokens[:, :n - new + 1])
    t_gen = _median_seconds(lambda: generate(model, params, prompt, max_new_tokens=new).tokens.block_until_ready(),
                            max(3, args.reps // 10)) / new
    print(f"decoder width 256, depth 4, vocab 1024, fp32, batch 1, token at position {n} ({jax.default_backend()}):")
    print(f"  {'KV-cache decode step':<34}{t_cache * 1e3:9.3f} ms/token")
    print(f"  {'recompute the whole prefix':<34}{t_full * 1e3:9.3f} ms/token   -> cache is {t_full / t_cache:.1f}x faster")
    print(f"  {'generate(), {} new tokens'.format(new):<34}{t_gen * 1e3:9.3f} ms/token (prefill + loop, averaged)")
    print(f"  cached vs full logits: max |diff| {diff:.2e}")
    return dict(mode="cpu", context=n, cache_ms=t_cache * 1e3, recompute_ms=t_full * 1e3,
                speedup=t_full / t_cache, generate_ms_per_token=t_gen * 1e3, max_abs_diff=diff)


def gpu(args) -> dict:
    import jax
    import numpy as np
    import torch
    import transformers

    import vitjax
    from vitjax.generation import generate

    if args.smoke:
        b, p, new, kw = 2, 8, 8, dict(width=64, depth=2, num_heads=4, vocab_size=512, max_len=64)
    else:
        b, p, new, kw = args.batch, args.prompt_len, args.new_tokens, {}
    model = vitjax.create_model("gpt2_small", dtype="bfloat16", **kw)
    params = _random_params(model)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    prompts = np.random.default_rng(0).integers(0, model.vocab_size, (b, p)).astype(np.int32)
    reps = 1 if args.smoke else 5

    def ours():
        return generate(model, params, prompts, max_new_tokens=new).tokens.block_until_ready()

    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    cfg = transformers.GPT2Config(n_embd=model.width, n_layer=model.depth, n_head=model.num_heads,
                                  vocab_size=model.vocab_size, n_positions=model.max_len,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=0)
    net = transformers.GPT2LMHeadModel(cfg).to(dev, torch.bfloat16).eval()
    x = torch.tensor(prompts, dtype=torch.long, device=dev)

    def theirs():
        with torch.no_grad():
            out = net.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, use_cache=True)
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    t_ours, t_hf = _interleaved_medians([ours, theirs], reps)
    tps_ours, tps_hf = b * new / t_ours, b * new / t_hf
    print(f"gpt2_small{' (smoke sizes)' if args.smoke else ''}: {n_params / 1e6:.1f}M params, bf16, batch {b}, "
          f"prompt {p}, {new} new tokens; jax on {jax.devices()[0].device_kind}, torch on {dev}:")
    print(f"  {'vitjax generate':<22}{tps_ours:12.0f} tokens/s   ({t_ours:.3f} s)")
    print(f"  {'HF generate':<22}{tps_hf:12.0f} tokens/s   ({t_hf:.3f} s)   -> vitjax/HF = {tps_ours / tps_hf:.2f}x")
    return dict(mode="gpu", smoke=args.smoke, params=n_params, batch=b, prompt_len=p, new_tokens=new,
                vitjax_tokens_per_s=tps_ours, hf_tokens_per_s=tps_hf, ratio=tps_ours / tps_hf,
                jax_device=jax.devices()[0].device_kind, torch_device=dev)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="GPT-2 124M at batch 32 against HF generate")
    ap.add_argument("--smoke", action="store_true", help="with --gpu: toy sizes, to check the code path anywhere")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt_len", type=int, default=64)
    ap.add_argument("--new_tokens", type=int, default=256)
    args = ap.parse_args(argv)
    if args.gpu:    # JAX would otherwise take 75% of the GPU before torch runs HF's generate on it
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    result = gpu(args) if args.gpu else cpu(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
