"""ViT-Ti/16 at 112 px on your own photos: an image classifier that trains on a workstation CPU.

    python -m vitjax.data convert --image-folder ~/photos --out ~/data --name photos --max-short-side 160
    python -m vitjax.train --config configs/vit_ti16_photos.py --workdir workdirs/photos \
        --config.input.data.name=photos --config.input.data.data_dir=~/data --config.model.num_classes=5
    python -m vitjax.predict --workdir workdirs/photos ~/more_photos

``~/photos/<class>/<image>`` (any JPEG/PNG/WebP...); ``convert`` holds out 10% per class as the
validation split and skips corrupt files. ``--max-short-side 160`` stores phone photos small, so
training decodes 160 px JPEGs, not 12-megapixel ones. ``model.num_classes`` must be the number of
class folders; the mixup/cutmix targets follow it (``vitjax.data.batch_ops.batch_ops_for_model``).

The model: ViT-Ti/16 (5.5M params), 7x7 = 49 patches of 16 px, class-token pooling: the layout of
timm's and HF's ViT-Ti/16, so ``--config.init.path=<a timm or HF ViT-Ti/16 .safetensors>
--config.init.drop_head=True`` fine-tunes a pretrained one (its position embeddings are resized to
the 7x7 grid); for a few hundred photos that does far better than training from scratch.
DeiT's augmentation, lighter: Inception crop (scale 0.25-1), flip, RandAugment(2, 9), mixup 0.8 /
cutmix 1.0, label smoothing 0.1; AdamW lr 1e-3, 20 warmup steps, cosine, 30 epochs.

Memory and time at batch 64 (float32), measured on a 2-core CPU that other jobs were sharing:
peak resident memory 2.3 GiB for the whole process (``--dry_run``: 21 MiB params, 42 MiB optimizer
state, 0.9 GiB of XLA temporaries); one step is 0.116 TFLOP and took 8 CPU-seconds, i.e. about
16 images/s with both cores free, so 1,000 photos x 30 epochs take about 30 minutes there and
proportionally less with more cores. ``--config.input.batch_size=32`` halves the XLA temporaries (0.45 GiB).
A larger ``model.image_size`` (a multiple of 16; change the ops' ``size`` with it) costs time
quadratically in the patches.
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE = 112


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(name="vit", variant="Ti/16", num_classes=5, image_size=SIZE, in_channels=3,
                   pool="token", posemb="learned", dropout=0.0, drop_path=0.1, head_zero_init=True,
                   dtype="float32", param_dtype="float32", remat="none")
    c.objective = dict(name="classification", label_smoothing=0.1)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="photos", split="train", data_dir="~/data")
    c.input.eval_data = dict(name=None, split=None, data_dir=None)   # None: as input.data, split validation
    c.input.batch_size = 64
    c.input.eval_batch_size = 64
    c.input.train_ops = [dict(op="decode_random_resized_crop", size=SIZE, scale=(0.25, 1.0)), dict(op="flip_lr"),
                         dict(op="randaugment", num_ops=2, magnitude=9),
                         dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.eval_ops = [dict(op="decode_center_crop", size=SIZE, crop_fraction=0.875),
                        dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    # No num_classes here: it follows config.model.num_classes.
    c.input.batch_ops = [dict(op="mixup_cutmix", mixup_alpha=0.8, cutmix_alpha=1.0)]
    c.input.max_bad_fraction = 0.01
    c.input.num_threads = 2
    c.input.num_workers = 0

    c.optim = dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.05, clip_norm=1.0,
                   warmup_steps=20, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=30, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=10,
                   eval_every_steps=100, checkpoint_every_steps=100, keep_checkpoints=2, tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
