"""Fine-tune an MAE-pretrained encoder (configs/mae_digits.py) as a digit classifier.

    python -m vitjax.train --config configs/mae_digits.py --workdir workdirs/mae_digits
    python -m vitjax.train --config configs/mae_finetune_digits.py:workdirs/mae_digits --workdir workdirs/mae_ft_digits

The argument after ':' is the pretraining workdir (default workdirs/mae_digits). The encoder moves
over with ``init.encoder_only`` (the decoder is left behind); the classifier pools the patch tokens
(MAE fine-tunes with global pooling, App. A.1) and adds a fresh head. The paper's fine-tuning
recipe, shortened: AdamW (0.9, 0.999), weight decay 0.05, layer-wise lr decay 0.75, drop path 0.1,
mixup 0.8 / cutmix 1.0, label smoothing 0.1, cosine schedule with warmup.
"""
import ml_collections


def get_config(arg: str | None = None):
    c = ml_collections.ConfigDict()
    c.model = dict(
        name="vit", variant=None, num_classes=10, image_size=16, patch_size=4, in_channels=1,
        width=128, depth=4, num_heads=4, mlp_dim=256,
        pool="gap", posemb="sincos2d",     # the MAE encoder's fixed table; its class token is left out
        dropout=0.0, drop_path=0.1, head_zero_init=True,
        dtype="float32", param_dtype="float32", remat="none")
    c.objective = dict(name="classification", label_smoothing=0.1)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="digits", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split=None, data_dir=None)
    c.input.batch_size = 128
    c.input.eval_batch_size = 120
    c.input.train_ops = [dict(op="resize", size=16), dict(op="random_pad_crop", pad=2),
                         dict(op="normalize", mean=0.5, std=0.5)]
    c.input.eval_ops = [dict(op="resize", size=16), dict(op="normalize", mean=0.5, std=0.5)]
    c.input.batch_ops = [dict(op="mixup_cutmix", num_classes=10, mixup_alpha=0.8, cutmix_alpha=1.0)]
    c.input.num_threads = 0
    c.input.num_workers = 0

    c.optim = dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.05, clip_norm=0.0,
                   warmup_steps=50, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None,
                   layer_decay=0.75)
    c.train = dict(num_epochs=30, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=50,
                   eval_every_steps=110, checkpoint_every_steps=110, keep_checkpoints=2, tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=arg or "workdirs/mae_digits", drop_head=True, encoder_only=True)
    return c
