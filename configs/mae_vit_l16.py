"""MAE pretraining of ViT-L/16 on ImageNet-1k (He et al. 2021): the recipe of configs/mae_vit_b16.py
with the L/16 encoder; 800 epochs (the paper's ablation default; 1600 for its best 85.9% fine-tuned
top-1, ``--config.train.num_epochs=1600``). Use ``--config.mesh.fsdp=-1 --config.mesh.data=1`` on
devices with less than ~32 GB.

    python -m vitjax.train --config configs/mae_vit_l16.py --workdir workdirs/mae_l16 \
        --config.input.data.data_dir=~/tensorflow_datasets
"""
import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "mae_vit_b16.py"))


def get_config():
    return _BASE["get_config"](variant="L/16", epochs=800)
