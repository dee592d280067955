"""DeiT-S/16 with hard distillation on ImageNet-1k (Touvron et al. 2021, Table 9 recipe; 81.2% top-1
with a RegNetY-16GF teacher, 79.8% without distillation).

    python -m vitjax.train --config configs/deit_s16_imagenet.py:TEACHER --workdir workdirs/deit_s16 \
        --config.input.data.data_dir=~/tensorflow_datasets

TEACHER is a vitjax workdir (e.g. a ViT-B/16 trained with configs/vit_b16_imagenet.py) or a timm/HF
ViT weights file, then also ``--config.objective.teacher_model="{'name': 'vit', 'variant': 'B/16',
'num_classes': 1000, 'image_size': 224}"``. vitjax imports ViT teachers only: the paper's convnet
teacher (RegNetY-16GF) has no importer here, and a ViT teacher gave less in the paper (Table 2).
Recipe: the DeiT recipe of configs/vit_b16_imagenet.py (300 epochs, batch 1024, AdamW 5e-4 x
batch/512, wd 0.05, RandAugment, mixup/cutmix, label smoothing 0.1, drop path 0.1) on the S/16 student
with the distillation token; loss = mean of the class head's CE and the distillation head's CE on the
teacher's argmax.
"""
import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vit_b16_imagenet.py"))


def get_config(arg: str | None = None):
    c = _BASE["get_config"]()
    c.model.update(name="deit", variant="S/16")
    c.objective = dict(name="distillation", teacher=arg or "workdirs/vit_b16_i1k", kind="hard", tau=3.0,
                       alpha=0.5, label_smoothing=0.1, teacher_model=None)
    return c
