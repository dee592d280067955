"""Perceiver IO on ImageNet-1k from raw pixels (Jaegle et al. 2022, "Perceiver IO: A General
Architecture for Structured Inputs & Outputs", ICLR; the ImageNet table reports 79.0% top-1 for
pixels + 2-D Fourier features without pretraining). Same architecture as HF's
``deepmind/vision-perceiver-fourier`` (``PerceiverForImageClassificationFourier``), so
``vitjax.interop.perceiver`` converts its weights both ways.

    python -m vitjax.train --config configs/perceiver_io_imagenet.py --workdir workdirs/perceiver_io_i1k \
        --config.input.data.data_dir=~/tensorflow_datasets

Architecture: 224 x 224 pixels + 2-D Fourier features (K=64, mu=224: 261 input channels); ONE
cross-attend (1 head) into a 512 x 1024 latent array; 8 blocks of the same 6 weight-shared
self-attention layers (8 heads, MLP widening 1); decoder: a single learned query cross-attends to
the latents (1 head) -> linear classifier.

Optimiser: LAMB at lr 2e-3, batch 1024, 110 epochs with weight decay 0.1 and a cosine schedule,
with mixup/cutmix and RandAugment, as we read the paper's ImageNet training details; verify the
exact values against its appendix before calling a run a reproduction.
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(
        name="perceiver_io", num_classes=1000, image_size=224, in_channels=3,
        num_latents=512, latent_dim=1024,
        num_blocks=8, num_cross_attends=1, num_self_attends_per_block=6, share_weights=True,
        num_cross_heads=1, num_self_heads=8, decoder_heads=1,
        cross_widening_factor=1, self_widening_factor=1,
        num_bands=64, max_resolution=224,
        dropout=0.0, head_zero_init=True,
        attention=None, block_q=None, block_kv=None,
        dtype="bfloat16", param_dtype="float32", remat="full")
    c.objective = dict(name="classification", label_smoothing=0.1)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="imagenet2012", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="validation", data_dir=None)
    c.input.batch_size = 1024
    c.input.eval_batch_size = 1024
    c.input.train_ops = [dict(op="decode_random_resized_crop", size=224), dict(op="flip_lr"),
                         dict(op="randaugment", num_ops=2, magnitude=9),
                         dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.eval_ops = [dict(op="decode_center_crop", size=224, crop_fraction=0.875),
                        dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.batch_ops = [dict(op="mixup_cutmix", num_classes=1000, mixup_alpha=0.2, cutmix_alpha=1.0)]
    c.input.max_bad_fraction = 0.01
    c.input.num_threads = 16
    c.input.num_workers = 8

    steps_per_epoch = 1251
    c.optim = dict(name="lamb", lr=2e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.1, clip_norm=10.0,
                   warmup_steps=5 * steps_per_epoch, schedule="cosine", end_lr_ratio=0.001, mu_dtype=None)
    c.train = dict(num_epochs=110, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=steps_per_epoch * 10, checkpoint_every_steps=1000, keep_checkpoints=3,
                   tensorboard=True)
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False)
    return c
