"""Swin-T on ImageNet-1k from scratch with the paper's recipe (Liu et al. 2021, Appendix A2.1 and
Table 1: 224px, 28M params, 4.5G FLOPs (multiply-adds), 81.3% top-1).

    tfds build imagenet2012 --data_dir ~/tensorflow_datasets --file_format=array_record
    python -m vitjax.train --config configs/swin_t_imagenet.py --workdir workdirs/swin_t_i1k \
        --config.input.data.data_dir=~/tensorflow_datasets

Recipe: 300 epochs at batch 1024, AdamW (lr 1e-3, wd 0.05, betas 0.9/0.999), 20 linear-warmup
epochs, cosine decay, gradient clipping at norm 5, label smoothing 0.1, stochastic depth 0.2,
Inception crop + flip + RandAugment(2, 9) + mixup 0.8 / cutmix 1.0 (the DeiT augmentations the
paper keeps; random erasing 0.25 is not reproduced; no repeated augmentation, no EMA, as the paper).
Window attention runs through the Pallas kernel on TPU/GPU (``model.attention_impl=None``).
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STEPS_PER_EPOCH = 1251     # 1,281,167 / 1024


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(name="swin", variant="T", num_classes=1000, image_size=224, in_channels=3,
                   window_size=7, drop_path=0.2, dropout=0.0, head_zero_init=False,
                   attention_impl=None, dtype="bfloat16", param_dtype="float32", remat="none")
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
    c.input.batch_ops = [dict(op="mixup_cutmix", num_classes=1000, mixup_alpha=0.8, cutmix_alpha=1.0)]
    c.input.max_bad_fraction = 0.01
    c.input.num_threads = 16
    c.input.num_workers = 8

    c.optim = dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.05, clip_norm=5.0,
                   warmup_steps=20 * STEPS_PER_EPOCH, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=300, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=STEPS_PER_EPOCH * 10, checkpoint_every_steps=1000, keep_checkpoints=3,
                   tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False)
    return c
