"""ViT-B/16 on ImageNet-1k from scratch with the DeiT recipe (Touvron et al. 2021, Table 9: 81.8% top-1).

    tfds build imagenet2012 --data_dir ~/tensorflow_datasets --file_format=array_record
    python -m vitjax.train --config configs/vit_b16_imagenet.py --workdir workdirs/vit_b16_i1k \
        --config.input.data.data_dir=~/tensorflow_datasets

Recipe: 300 epochs at batch 1024, AdamW (lr 5e-4 x batch/512, wd 0.05), 5 warmup epochs, cosine,
label smoothing 0.1, stochastic depth 0.1, Inception crop + flip + RandAugment(2, 9), mixup 0.8 /
cutmix 1.0. (DeiT's repeated augmentation and random erasing are not reproduced.) About 1.9e20 training FLOPs
(3 x 17.6 GFLOP/img forward x 1.28M x 300). On a v4-32 slice (16 chips) roughly a day; use
``--config.mesh.fsdp=-1 --config.mesh.data=1`` when the optimizer state should be sharded.
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(name="vit", variant="B/16", num_classes=1000, image_size=224, in_channels=3,
                   pool="token", posemb="learned", dropout=0.0, drop_path=0.1, head_zero_init=True,
                   dtype="bfloat16", param_dtype="float32", remat="none",
                   scan_layers=False)    # True: one nn.scan over the blocks (ViT-g/14: 11.7x shorter compile)
    c.objective = dict(name="classification", label_smoothing=0.1)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="imagenet2012", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="validation", data_dir=None)   # None: as input.data
    c.input.batch_size = 1024
    c.input.eval_batch_size = 1024
    # Decoding is fused with the crop (reduced-size JPEG decode): the hot path of the input pipeline.
    c.input.train_ops = [dict(op="decode_random_resized_crop", size=224), dict(op="flip_lr"),
                         dict(op="randaugment", num_ops=2, magnitude=9),
                         dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.eval_ops = [dict(op="decode_center_crop", size=224, crop_fraction=0.875),
                        dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.batch_ops = [dict(op="mixup_cutmix", num_classes=1000, mixup_alpha=0.8, cutmix_alpha=1.0)]
    c.input.max_bad_fraction = 0.01
    c.input.num_threads = 16
    c.input.num_workers = 8          # grain worker processes decoding JPEGs per host

    c.optim = dict(name="adamw", lr=5e-4 * 1024 / 512, b1=0.9, b2=0.999, weight_decay=0.05, clip_norm=0.0,
                   warmup_steps=5 * 1251, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=300, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=1251 * 10, checkpoint_every_steps=1000, keep_checkpoints=3,
                   tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
