"""MAE pretraining of ViT-H/14 on ImageNet-1k (He et al. 2021: 86.9% fine-tuned top-1 at 224 after
1600 epochs): the recipe of configs/mae_vit_b16.py with the H/14 encoder (256 patches, 64 visible),
FSDP over all devices and per-block rematerialisation.

    python -m vitjax.train --config configs/mae_vit_h14.py --workdir workdirs/mae_h14 \
        --config.input.data.data_dir=~/tensorflow_datasets
"""
import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mae_vit_b16.py"))


def get_config():
    c = _BASE["get_config"](variant="H/14", epochs=1600)
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.model.remat = "dots_saveable"
    return c
