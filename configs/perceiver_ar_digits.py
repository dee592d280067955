"""Perceiver AR (Hawthorne et al. 2022) on pairs of digits: the CPU demo of long-context autoregression.

    python -m vitjax.train --config configs/perceiver_ar_digits.py --workdir /tmp/perceiver_ar_digits

Each example is two same-class digits stacked into a 16x8 image (``digit_pairs``), read as a start
token then 128 pixel tokens over the digits' 17 grey levels (vocabulary 18). 16 causal latents
cross-attend to the whole prefix, then 3 causal self-attention layers run over the latents only
(4 layers of width 32 in all, as the dense decoder of configs/lm_pairs_digits.py). The latents
cover the last 16 positions, so the objective runs the model on the prefixes ending at 16, 32, ...,
128 and every pixel is predicted once per step (``vitjax.objectives.autoregressive``).
Measured (2 CPU cores shared with other jobs, load average ~20): 445 steps (5 epochs, batch 16) in
13.6 minutes, 7 of them tracing and compiling the step (8 window passes); eval/bits_per_pixel 2.056 over
the 360 held-out pairs' 46,080 pixels, against 2.089 for the dense decoder (configs/lm_pairs_digits.py)
at 0.23x its attention FLOPs (experiments/perceiver_ar_vs_dense.py).
Sample the second digit given the first: ``python -m vitjax.generate --workdir ...`` (prompt: the top
digit) or ``experiments/perceiver_ar_vs_dense.py``, which also compares this run with the dense one.
"""
import ml_collections

from vitjax.data.pixel_tokens import DIGITS_PALETTE

PALETTE = [list(c) for c in DIGITS_PALETTE]      # the digits' 17 grey levels (k-means, k=17, recovers them)


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(name="perceiver_ar", vocab_size=len(PALETTE) + 1, max_len=128, num_latents=16,
                   width=32, depth=3, num_heads=2, mlp_ratio=4, dropout=0.0,
                   dtype="float32", param_dtype="float32")
    c.objective = dict(name="next_token", seq_len=129, vocab_size=len(PALETTE) + 1, unit="pixel", probe=())
    # What vitjax.generate needs to turn prompts and samples into images.
    c.data = dict(tokens="pixels", palette=PALETTE, image_shape=(16, 8, 1))

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="digit_pairs", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="test", data_dir=None)
    c.input.batch_size = 16
    c.input.eval_batch_size = 120
    c.input.train_ops = [dict(op="pixel_tokens", palette=PALETTE)]
    c.input.eval_ops = [dict(op="pixel_tokens", palette=PALETTE)]
    c.input.num_threads = 0
    c.input.num_workers = 0

    c.optim = dict(name="adamw", lr=3e-3, b1=0.9, b2=0.98, weight_decay=0.1, clip_norm=1.0,
                   warmup_steps=50, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=5, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=50,
                   eval_every_steps=445, checkpoint_every_steps=445, keep_checkpoints=2, tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
