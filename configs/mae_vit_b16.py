"""MAE pretraining of ViT-B/16 on ImageNet-1k with the paper's recipe (He et al. 2021, App. A.1, Table 8).

    tfds build imagenet2012 --data_dir ~/tensorflow_datasets --file_format=array_record
    python -m vitjax.train --config configs/mae_vit_b16.py --workdir workdirs/mae_b16 \
        --config.input.data.data_dir=~/tensorflow_datasets

Recipe: mask ratio 0.75, normalised-pixel target, decoder 8 blocks x 512 wide (16 heads); AdamW
(0.9, 0.95), weight decay 0.05, base lr 1.5e-4 x batch / 256 (batch 4096 -> 2.4e-3), 40 warmup
epochs, cosine, 800 epochs (1600 in the paper's best runs: ``--config.train.num_epochs=1600``);
augmentation: random resized crop (scale 0.2-1) + flip only. The paper reports 83.6% top-1 after
fine-tuning ViT-B (68.0% linear probe). The encoder sees 49 of 196 patches, so a step costs about a
third of a full ViT-B step (experiments/bench_mae.py).
At eval steps (every 20 epochs) the kNN / linear probe of the encoder's features use 100k training
images; ``python -m vitjax.probe --workdir ...`` runs them on everything afterwards.
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STEPS_PER_EPOCH = 1281167 // 4096     # 312


def get_config(variant: str = "B/16", epochs: int = 800):
    c = ml_collections.ConfigDict()
    c.model = dict(name="mae", variant=variant, image_size=224, in_channels=3,
                   decoder_width=512, decoder_depth=8, decoder_heads=16, decoder_mlp_dim=2048,
                   mask_ratio=0.75, norm_pix_loss=True, drop_path=0.0,
                   dtype="bfloat16", param_dtype="float32", remat="none")
    c.objective = dict(name="mae", probe=["knn", "linear"], probe_pool="cls", probe_train_examples=100_000,
                       knn_k=20, knn_temperature=0.07, linear_epochs=90, linear_batch_size=16384,
                       linear_lr=0.1, linear_optimizer="lars", num_classes=1000)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="imagenet2012", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="validation", data_dir=None)
    c.input.batch_size = 4096
    c.input.eval_batch_size = 1024
    c.input.train_ops = [dict(op="decode_random_resized_crop", size=224, scale=(0.2, 1.0)), dict(op="flip_lr"),
                         dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.eval_ops = [dict(op="decode_center_crop", size=224, crop_fraction=0.875),
                        dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.max_bad_fraction = 0.01
    c.input.num_threads = 16
    c.input.num_workers = 8

    c.optim = dict(name="adamw", lr=1.5e-4 * 4096 / 256, b1=0.9, b2=0.95, weight_decay=0.05, clip_norm=0.0,
                   warmup_steps=40 * STEPS_PER_EPOCH, schedule="cosine", end_lr_ratio=0.0, mu_dtype=None)
    c.train = dict(num_epochs=epochs, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=20 * STEPS_PER_EPOCH, checkpoint_every_steps=1000, keep_checkpoints=3,
                   tensorboard=True)
    # FSDP from the start: ViT-L/H plus AdamW state do not need replicating on every device.
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
