"""ViT on long pixel sequences: scikit-learn's digits as 1-pixel patches, for comparing attention
implementations (``model.attention``) where the sequence is long.

    python -m vitjax.train --config configs/vit_digits_long.py:1024 --workdir /tmp/digits_long \\
        --config.model.attention=band
    python experiments/long_attention_digits.py          # dense, band+global and linear side by side

``:64`` keeps the native 8x8 digits (64 tokens + a class token); ``:1024`` (the default) upsamples
them bilinearly to 32x32 (1,024 tokens + a class token). A small ViT (width 32, 2 blocks, 2 heads)
reading the class token; 2-D sin-cos positions, so position needs no learning. The class token is
the band's global token (``attention_options.global_tokens=1``): every pixel sees it, it sees every
pixel (Longformer). The band reaches one image row each side (``window=32``).
Measured (``python experiments/long_attention_digits.py``: 1,024 tokens, 15 epochs = 660 steps, seed 0,
2 CPU cores shared with another training run): eval/top1 dense 0.967 (1,165 s), band+global 0.972
(+0.6 points, 342 s), linear 0.956 (-1.1 points, 98 s). At 2 epochs (88 steps, far from converged):
dense 0.731, band+global 0.711, linear 0.678; 64 tokens, 3 epochs: dense 0.583, band+global 0.697,
linear 0.514.
"""
import ml_collections


def get_config(arg: str = "1024"):
    tokens = int(arg)
    side = {64: 8, 1024: 32}.get(tokens)
    if side is None:
        raise ValueError(f"configs/vit_digits_long.py:{arg}: choose :64 (8x8 pixels) or :1024 (32x32)")
    c = ml_collections.ConfigDict()
    c.model = dict(
        name="vit", variant=None, num_classes=10, image_size=side, patch_size=1, in_channels=1,
        width=32, depth=2, num_heads=2, mlp_dim=64, pool="token", posemb="sincos2d",
        dropout=0.0, drop_path=0.0, head_zero_init=True, dtype="float32", param_dtype="float32", remat="none",
        attention="auto",
        # band: one image row each side; the class token global. linear/performer ignore window.
        attention_options=dict(window=side, global_tokens=1, random_blocks=2, block_size=32,
                               dilation=2, features=64, seed=0))
    c.objective = dict(name="classification", label_smoothing=0.1)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="digits", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split=None, data_dir=None)
    c.input.batch_size = 32
    c.input.eval_batch_size = 120
    ops = [dict(op="resize", size=side)] if side != 8 else []
    c.input.train_ops = ops + [dict(op="normalize", mean=0.5, std=0.5)]
    c.input.eval_ops = ops + [dict(op="normalize", mean=0.5, std=0.5)]
    c.input.num_threads = 0
    c.input.num_workers = 0

    c.optim = dict(name="adamw", lr=3e-3, b1=0.9, b2=0.999, weight_decay=0.05, clip_norm=1.0,
                   warmup_steps=20, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=15, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=20,
                   eval_every_steps=0, checkpoint_every_steps=0, keep_checkpoints=1, tensorboard=False)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
