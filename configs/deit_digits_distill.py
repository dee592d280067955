"""DeiT distillation on the digits: a small DeiT student learns from the configs/vit_digits.py ViT.

    python -m vitjax.train --config configs/vit_digits.py --workdir workdirs/vit_digits          # the teacher
    python -m vitjax.train --config configs/deit_digits_distill.py --workdir workdirs/deit_distill
    python -m vitjax.train --config configs/deit_digits_distill.py:none --workdir workdirs/deit_nodistill

The argument after ':' is the teacher (a vitjax workdir or a timm/HF ViT file; default
workdirs/vit_digits); ``none`` trains the same student, same steps, on the labels alone (the
baseline). Student: a 2-block, 48-wide DeiT (class + distillation tokens, 4x4 patches of the 16x16
digits; 0.04M parameters against the teacher's 0.53M), 40 epochs. Soft distillation (Touvron et al.
2021, Eq. 2: tau^2 KL at tau = 3) weighted 0.9 against the class head's CE; at inference the two heads
are averaged. The paper's hard distillation (``--config.objective.kind=hard --config.objective.alpha=0.5``)
is what configs for ImageNet use.

Measured (eval/top1 on the 360 held-out digits, 440 steps each, teacher 0.978):

| student | top-1 | eval loss |
|---|---|---|
| labels only (``:none``) | 0.906 | 0.389 |
| hard distillation, alpha 0.5 | 0.900 | 0.350 |
| soft, alpha 0.5 | 0.914 | 0.341 |
| **soft, alpha 0.9 (this config)** | **0.942** | **0.257** |

The four settings were compared on the same held-out split and this one kept, so its margin over the
baseline (+3.6 points, 13 digits; one standard error of a top-1 near 0.92 on 360 images is 1.4 points)
is optimistic; at 20 epochs the ranking was the same for soft (0.783) against labels only (0.769), with
hard at 0.742.
"""
import os
import runpy

_BASE = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vit_digits.py"))


def get_config(arg: str | None = None):
    c = _BASE["get_config"]()
    c.model.update(name="deit", width=48, depth=2, num_heads=2, mlp_dim=96, pool="token", drop_path=0.0)
    teacher = arg or "workdirs/vit_digits"
    if teacher == "none":
        c.objective = dict(name="classification", label_smoothing=0.1)
    else:
        c.objective = dict(name="distillation", teacher=teacher, kind="soft", tau=3.0, alpha=0.9,
                           label_smoothing=0.1, teacher_model=None)
    c.train.num_epochs = 40
    c.train.eval_every_steps = 110
    c.train.checkpoint_every_steps = 110
    return c
