"""DINO self-distillation of ViT-S/16 on ImageNet-1k with the paper's recipe (Caron et al. 2021, Sec. 3 and
App.; facebookresearch/dino main_dino.py).

    tfds build imagenet2012 --data_dir ~/tensorflow_datasets --file_format=array_record
    python -m vitjax.train --config configs/dino_vit_s16.py --workdir workdirs/dino_s16 \
        --config.input.data.data_dir=~/tensorflow_datasets

Recipe: 2 global crops of 224 (area 0.4-1) seen by teacher and student, 10 local crops of 96 (area
0.05-0.4) seen by the student only, with DINO's flip / colour jitter / grayscale / blur /
solarization (vitjax.data.augment.dino_multi_crop); head 2048 hidden, 256 bottleneck, K = 65,536,
weight-normalised last layer, frozen for the first epoch; student temperature 0.1, teacher 0.04 ->
0.07 over 30 epochs, centre momentum 0.9, teacher momentum 0.996 -> 1 (cosine); AdamW, lr 5e-4 x
batch / 256 (batch 1024 -> 2e-3) after 10 warmup epochs, cosine to 1e-6; weight decay 0.04 -> 0.4
(cosine); per-tensor gradient clipping at 3.0; drop-path 0.1; 300 epochs (``:800`` for the paper's
longest run). Paper, ViT-S/16: 77.0% linear / 74.5% k-NN top-1 on ImageNet.

At eval steps (every 20 epochs) the teacher's class token is scored by k-NN (k=20, T=0.07), nearest
class mean and a linear probe on 100k training images; ``python -m vitjax.probe --workdir ...
--methods knn,ncm,linear`` runs them on everything afterwards. Export the teacher backbone with
``python -m vitjax.export --workdir ... --format timm`` (timm's ``vit_small_patch16_224.dino`` layout).
"""
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dino_imagenet(variant: str = "S/16", epochs: int = 300, batch_size: int = 1024, base_lr: float = 5e-4,
                  min_lr: float = 1e-6, num_local: int = 10, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4),
                  clip: float = 3.0, freeze_last_layer: int = 1, warmup_teacher_temp_epochs: int = 30,
                  norm_last_layer: bool = True):
    steps_per_epoch = 1281167 // batch_size
    lr = base_lr * batch_size / 256
    c = ml_collections.ConfigDict()
    c.model = dict(name="dino", variant=variant, image_size=224, in_channels=3, drop_path=0.1,
                   out_dim=65536, head_hidden_dim=2048, head_bottleneck_dim=256, head_layers=3,
                   norm_last_layer=norm_last_layer, dtype="bfloat16", param_dtype="float32", remat="none")
    c.objective = dict(
        name="dino", num_local_crops=num_local, local_crop_size=96, student_temp=0.1, teacher_temp=0.07,
        warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=warmup_teacher_temp_epochs, center_momentum=0.9,
        momentum_teacher=0.996, centering="ema", sinkhorn_iterations=3,     # "sinkhorn_knopp": DINOv2's
        freeze_last_layer_epochs=float(freeze_last_layer), eval_teacher=True,
        probe=["knn", "ncm", "linear"], probe_train_examples=100_000, knn_k=20, knn_temperature=0.07,
        linear_epochs=100, linear_batch_size=1024, linear_lr=0.1, linear_optimizer="sgd", num_classes=1000)

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="imagenet2012", split="train", data_dir=None)
    c.input.eval_data = dict(name=None, split="validation", data_dir=None)
    c.input.batch_size = batch_size
    c.input.eval_batch_size = 1024
    crop = dict(op="multi_crop", global_size=224, local_size=96, num_global=2, num_local=num_local,
                global_scale=tuple(global_scale), local_scale=tuple(local_scale), method="bicubic")
    from vitjax.data.augment import dino_multi_crop
    views = dino_multi_crop(num_local, IMAGENET_MEAN, IMAGENET_STD)
    crop.update(global_ops=views["global_ops"], local_ops=views["local_ops"])
    c.input.train_ops = [crop]
    c.input.eval_ops = [dict(op="decode_center_crop", size=224, crop_fraction=0.875),
                        dict(op="normalize", mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    c.input.max_bad_fraction = 0.01
    c.input.num_threads = 16
    c.input.num_workers = 8

    c.optim = dict(name="adamw", lr=lr, b1=0.9, b2=0.999, weight_decay=0.04, weight_decay_end=0.4,
                   clip_norm=clip, clip_mode="per_param", warmup_steps=10 * steps_per_epoch,
                   schedule="cosine", end_lr_ratio=min_lr / lr, mu_dtype=None)
    c.train = dict(num_epochs=epochs, total_steps=-1, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=20 * steps_per_epoch, checkpoint_every_steps=1000, keep_checkpoints=3,
                   tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c


def get_config(epochs: str = "300"):
    return dino_imagenet("S/16", epochs=int(epochs))
