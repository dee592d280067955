"""iGPT (Chen et al. 2020) on scikit-learn's digits: next-pixel prediction, the CPU demo of the ``lm`` family.

    python -m vitjax.train --config configs/igpt_digits.py --workdir /tmp/igpt_digits

Each 8x8 digit is a start token then its 64 pixels in raster order, each pixel the index of its grey
level in the digits' 17-level palette (k-means with k=17 recovers those levels exactly;
``vitjax.data.pixel_tokens``): vocabulary 18, logits over the 17 colours (no start-token logit).
The model is the ``lm`` family in ImageGPT's layout (RMS-style norm without bias, learned positions,
quick_gelu, untied head). ``eval/bits_per_pixel`` is the mean over the 360 held-out digits' 23,040
pixels; simple baselines on that split: per-position frequencies 2.435, a causal up+left context
table 2.305, autoregressive logistic regression on all previous pixels 2.138.
Measured (2 quiet CPU cores): 3,520 steps (80 epochs, batch 32) in 7 minutes (11.5 with another run
beside it); eval/bits_per_pixel 1.986 (1.828 at step 1,760: the second 40 epochs overfit the 1,437
digits), linear probe (eval/linear_top1) on the concatenated average-pooled outputs of blocks 1-4:
0.961. Completions of the held-out top halves (``experiments/igpt_completion.py``, classified by the
README's ``vit_digits`` run: 0.969 on real digits, 0.350 on top halves alone): the best of 16 plain
samples by consensus 0.831 (0.814 and 0.814 with sampling seeds 1 and 2); the plain samples
themselves 0.799. Training seed 1 (``--config.train.seed=1``): 2.053 bits/pixel, probe 0.967, plain
0.798, consensus 0.839. Why 80 epochs: the completions improve as the model
fits the training digits more closely (bottoms copied from the training digit nearest in the top
half are right 0.875 of the time, from the 20 nearest only 0.765), at the cost of held-out bits: 40
epochs gave 1.797 bits/pixel, probe 0.956, but plain samples 0.723 and consensus 0.775 (60 epochs:
1.826, probe 0.939, consensus 0.833; width 192 at 40 epochs: 1.808, probe 0.931, consensus 0.769).
The probe's layers and optimiser were chosen by 5-fold cross-validation on training-split features
(blocks 1-4 with AdamW lr 0.01: CV 0.951 on the 40-epoch model; block 2 alone with SGD lr 0.1, the
former default: CV 0.939, test 0.928). The training digits move by up to one column
(``random_translate``; iGPT trains on random crops): without it the 40-epoch model overfits (1.866
bits/pixel, probe 0.933); moving rows too (``random_pad_crop``) gives 1.831, probe 0.961, completions
0.692. Earlier default (width 96, 18 epochs, no translations): 1.868 bits/pixel, probe 0.892,
completions 0.617.
At every eval step a linear probe on the average-pooled outputs of ``probe_layers`` (or of the one block
``probe_layer``, default ``depth // 2``, when ``probe_layers=None``) is scored on the labels
(``eval/linear_top1``; the probed blocks are logged). Completions of held-out digits' top halves:
``python experiments/igpt_completion.py --workdir ...``.
"""
import ml_collections

from vitjax.data.pixel_tokens import DIGITS_PALETTE

PALETTE = [list(c) for c in DIGITS_PALETTE]      # the digits' 17 grey levels


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(name="lm", vocab_size=len(PALETTE) + 1, head_vocab_size=len(PALETTE), max_len=64,
                   width=128, depth=4, num_heads=4, mlp_dim=512,
                   # ImageGPT's layout (vitjax.models.lm.IGPT)
                   norm="rmsnorm", norm_eps=1e-5, positions="learned", mlp="quick_gelu", use_bias=True,
                   tie_embeddings=False, head_bias=False,
                   dropout=0.1, dtype="float32", param_dtype="float32", remat="none")
    c.objective = dict(name="next_token", seq_len=65, vocab_size=len(PALETTE) + 1, unit="pixel",
                       # iGPT's best linear probes concatenate several blocks' features (sec. 4.3);
                       # layers and probe optimiser chosen by 5-fold cross-validation on the training
                       # split (module docstring).
                       probe=["linear"], probe_layer=None, probe_layers=[1, 2, 3, 4], probe_block="block_{}",
                       linear_epochs=100, linear_batch_size=256, linear_optimizer="adamw", linear_lr=0.01,
                       num_classes=10)
    # What vitjax.generate needs to turn prompts and samples into images.
    c.data = dict(tokens="pixels", palette=PALETTE, image_shape=(8, 8, 1))

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="digits", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="test", data_dir=None)
    c.input.batch_size = 32
    c.input.eval_batch_size = 120
    # Random horizontal translations by up to one pixel (background-filled), as iGPT trains on random
    # crops: the 1,437 training digits alone overfit a width-128 model. Rows stay in place, so a
    # digit's top half (the completion prompt) stays the top half. Eval and probe use eval_ops.
    c.input.train_ops = [dict(op="random_translate", max_dy=0, max_dx=1), dict(op="pixel_tokens", palette=PALETTE)]
    c.input.eval_ops = [dict(op="pixel_tokens", palette=PALETTE)]
    c.input.num_threads = 0
    c.input.num_workers = 0

    c.optim = dict(name="adamw", lr=3e-3, b1=0.9, b2=0.98, weight_decay=0.1, clip_norm=1.0,
                   warmup_steps=100, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=80, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=50,
                   eval_every_steps=880, checkpoint_every_steps=880, keep_checkpoints=2, tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
