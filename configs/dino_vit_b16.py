"""DINO self-distillation of ViT-B/16 on ImageNet-1k with the arguments of the released ViT-B/16
(facebookresearch/dino README, "ViT-B/16 ... args": 400 epochs, batch 1024 over 32 GPUs).

    python -m vitjax.train --config configs/dino_vit_b16.py --workdir workdirs/dino_b16 \
        --config.input.data.data_dir=~/tensorflow_datasets

Differences from configs/dino_vit_s16.py (the same recipe otherwise): lr 7.5e-4 x batch / 256, min
lr 2e-6, gradient clipping 0.3, last layer frozen for 3 epochs, teacher temperature warm-up 50
epochs, crops: global area 0.25-1, local 0.05-0.25, 10 local crops. Paper, ViT-B/16: 78.2% linear /
76.1% k-NN top-1 on ImageNet. Use ``--config.mesh.fsdp=-1 --config.mesh.data=1`` on devices with
less than ~40 GB (student, teacher and AdamW state: ~1.4 GB of fp32 parameters and moments).
"""
import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dino_vit_s16.py"))


def get_config(epochs: str = "400"):
    return _BASE["dino_imagenet"](
        "B/16", epochs=int(epochs), base_lr=7.5e-4, min_lr=2e-6, clip=0.3, freeze_last_layer=3,
        warmup_teacher_temp_epochs=50, global_scale=(0.25, 1.0), local_scale=(0.05, 0.25), num_local=10)
