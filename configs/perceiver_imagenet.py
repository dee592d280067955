"""Perceiver on ImageNet-1k from raw pixels (Jaegle et al. 2021, "Perceiver: General Perception with
Iterative Attention", ICML; Table 1: 78.0% top-1 for the Perceiver on pixels with Fourier features).

    python -m vitjax.train --config configs/perceiver_imagenet.py --workdir workdirs/perceiver_i1k \
        --config.input.data.data_dir=~/tensorflow_datasets

Architecture as the paper's ImageNet model (sec. 4.1 and its appendix on architecture details): the
224 x 224 = 50,176 pixels, each RGB plus 2-D Fourier features with K=64 bands up to mu/2 for mu = 224
(3 + 2 * (2 * 64 + 1) = 261 input channels); a 512 x 1024 latent array; 8 cross-attends (1 head) each
followed by a 6-layer latent transformer (8 heads); weights shared by all latent transformers and by
every cross-attend but the first; average-pooled latents -> linear classifier. The cross-attends run
through the Pallas latent cross-attention kernel on TPU/GPU (``attention=None``: auto).

Optimiser: LAMB (You et al. 2020) at lr 4e-3, batch 1024, 120 epochs, as the paper's training
details give them to the best of our reading; the paper decays the rate in steps (10x at three late
epochs) where this config uses cosine, and its augmentation (crop, plus mixup/cutmix/RandAugment-style
regularisation) is approximated by the DeiT-style pipeline below. Check those three points against
the paper's appendix before calling a run a reproduction.

Cost, by our count: about 0.7 TFLOP per image forward -- ~43 GFLOP per cross-attend (K/V projections
of 50,176 x 261 inputs, 512 x 50,176 scores over 261 channels) x 8, plus ~7.5 GFLOP per latent layer
(512 x 1024, widening 1) x 48.
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(
        name="perceiver", num_classes=1000, image_size=224, in_channels=3,
        num_latents=512, latent_dim=1024,                  # latent array 512 x 1024
        num_blocks=8, num_cross_attends=8,                 # 8 cross-attends, one per block
        num_self_attends_per_block=6,                      # 6-layer latent transformer per block
        share_weights=True,                                # shared after the first cross-attend
        num_cross_heads=1, num_self_heads=8,
        cross_widening_factor=1, self_widening_factor=1,
        num_bands=64, max_resolution=224,                  # K = 64 bands up to 224 / 2 = 112
        dropout=0.0, head_zero_init=True,
        attention=None, block_q=None, block_kv=None,       # auto: Pallas kernel on TPU/GPU
        dtype="bfloat16", param_dtype="float32",
        remat="full")                                      # 48 layers x 512 tokens: recompute in backward
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

    steps_per_epoch = 1251                                 # 1,281,167 / 1024
    c.optim = dict(name="lamb", lr=4e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.1, clip_norm=10.0,
                   warmup_steps=5 * steps_per_epoch, schedule="cosine", end_lr_ratio=0.001, mu_dtype=None)
    c.train = dict(num_epochs=120, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=steps_per_epoch * 10, checkpoint_every_steps=1000, keep_checkpoints=3,
                   tensorboard=True)
    # FSDP by default: 8 x 6 shared layers are only ~45M parameters, but the activations of 50,176
    # input elements per image dominate, so split the batch as widely as possible.
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False)
    return c
