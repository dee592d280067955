"""CLIP ViT-L/14 with the OpenAI recipe: configs/clip_b16.py with the L/14 towers (image 24 x 1024,
text 12 x 768, embedding 768) and lr 4e-4 (Radford et al. 2021, Table 20). OpenAI: 75.3% ImageNet
zero-shot (WIT, 224 px); open_clip L/14 on LAION-2B: 75.3%.

    python -m vitjax.train --config configs/clip_l14.py --workdir workdirs/clip_l14 \
        --config.input.data.name=laion2b --config.input.data.data_dir=~/data

Activation memory at batch 32k needs rematerialisation and micro-batches: ``remat="dots_saveable"``
here; add ``--config.train.micro_batch_size=...`` if a device still runs out (each micro-batch then
contrasts only against its own texts, which changes the loss; prefer more devices).
"""
import importlib.util
import os


def get_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "clip_b16.py")
    spec = importlib.util.spec_from_file_location("vitjax_config_clip_b16", path)
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    c = base.get_config("L/14")
    c.model.remat = "dots_saveable"
    c.optim.lr = 4e-4
    return c
