"""iGPT (Chen et al. 2020) on scikit-learn's digits: next-pixel prediction, the CPU demo of the ``lm`` family.

    python -m vitjax.train --config configs/igpt_digits.py --workdir /tmp/igpt_digits

Each 8x8 digit is a start token then its 64 pixels in raster order, each pixel the index of its grey
level in the digits' 17-level palette (k-means with k=17 recovers those levels exactly;
``vitjax.data.pixel_tokens``): vocabulary 18, logits over the 17 colours (no start-token logit).
The model is the ``lm`` family in ImageGPT's layout (RMS-style norm without bias, learned positions,
quick_gelu, untied head). ``eval/bits_per_pixel`` is the mean over the 360 held-out digits' 23,040
pixels; simple baselines on that split: per-position frequencies 2.435, a causal up+left context
table 2.305, autoregressive logistic regression on all previous pixels 2.138.
Measured (2 CPU cores shared with other jobs, load average ~20): 792 steps (18 epochs, batch 32) in
8.9 minutes; eval/bits_per_pixel 1.868 (1.931 at step 396). Linear probe (eval/linear_top1) on the
default layer 2 of 4: 0.892; by layer 1-4: 0.867, 0.892, 0.886, 0.883 -- best mid-network, as iGPT
found (logistic regression on the raw pixels: 0.967). Bottom halves sampled at temperature 1.0 are
classified as the true digit 0.617 of the time (the classifier gets 0.975 on real digits and 0.392
on the top halves alone). Width 64 (mlp 256): 1.882 bits/pixel, probe 0.844, completions 0.617.
At every eval step a linear probe on the average-pooled output of block ``depth // 2`` is scored on
the labels (``eval/linear_top1``; the probed block is logged). Completions of held-out digits' top
halves: ``python experiments/igpt_completion.py --workdir ...``.
"""
import ml_collections

from vitjax.data.pixel_tokens import DIGITS_PALETTE

PALETTE = [list(c) for c in DIGITS_PALETTE]      # the digits' 17 grey levels


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(name="lm", vocab_size=len(PALETTE) + 1, head_vocab_size=len(PALETTE), max_len=64,
                   width=96, depth=4, num_heads=4, mlp_dim=384,
                   # ImageGPT's layout (vitjax.models.lm.IGPT)
                   norm="rmsnorm", norm_eps=1e-5, positions="learned", mlp="quick_gelu", use_bias=True,
                   tie_embeddings=False, head_bias=False,
                   dropout=0.1, dtype="float32", param_dtype="float32", remat="none")
    c.objective = dict(name="next_token", seq_len=65, vocab_size=len(PALETTE) + 1, unit="pixel",
                       probe=["linear"], probe_layer=None, probe_block="block_{}",
                       linear_epochs=100, linear_batch_size=256, linear_optimizer="sgd", linear_lr=0.1,
                       num_classes=10)
    # What vitjax.generate needs to turn prompts and samples into images.
    c.data = dict(tokens="pixels", palette=PALETTE, image_shape=(8, 8, 1))

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="digits", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="test", data_dir=None)
    c.input.batch_size = 32
    c.input.eval_batch_size = 120
    c.input.train_ops = [dict(op="pixel_tokens", palette=PALETTE)]
    c.input.eval_ops = [dict(op="pixel_tokens", palette=PALETTE)]
    c.input.num_threads = 0
    c.input.num_workers = 0

    c.optim = dict(name="adamw", lr=3e-3, b1=0.9, b2=0.98, weight_decay=0.1, clip_norm=1.0,
                   warmup_steps=100, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=18, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=50,
                   eval_every_steps=396, checkpoint_every_steps=396, keep_checkpoints=2, tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
