"""YOLOS on generated shapes scenes: a plain ViT with 10 detection tokens and DETR's set loss.

    python -m vitjax.train --config configs/yolos_shapes.py --workdir workdirs/yolos_shapes

Data, loss and evaluation as configs/detr_shapes.py (``shapes_scenes``, 500 held-out test scenes,
COCO ``eval/map``, ``eval/ap50``, ``eval/ap75`` through pycocotools). Model: ViT patch 8 (64 patch
tokens + class token + 10 detection tokens), width 96, 4 blocks, learned positions, trained from
scratch (the paper fine-tunes an ImageNet-pretrained DeiT; Fang et al. 2021, sec. 2.2).
Not measured as a demo (configs/detr_shapes.py is the measured one); see README "Detection (DETR, YOLOS)".
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.model = dict(
        name="yolos", variant=None, num_classes=3, num_detection_tokens=10, image_size=64, patch_size=8,
        in_channels=3, width=96, depth=4, num_heads=3, mlp_dim=192, posemb="learned", dropout=0.0,
        drop_path=0.0, dtype="float32", param_dtype="float32", remat="none")
    c.objective = dict(name="detection", max_boxes=8, eos_coef=0.1, aux_loss=False)
    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="shapes_scenes", split="train", data_dir=None)
    c.input.eval_data = dict(name="shapes_scenes", split="test[:500]", data_dir=None)
    c.input.batch_size = 16
    c.input.eval_batch_size = 100
    c.input.train_ops = [dict(op="det_flip_lr"), dict(op="normalize", mean=0.5, std=0.5),
                         dict(op="det_pad_boxes", max_boxes=8)]
    c.input.eval_ops = [dict(op="normalize", mean=0.5, std=0.5), dict(op="det_pad_boxes", max_boxes=8)]
    c.input.num_threads = 0
    c.input.num_workers = 0
    c.optim = dict(name="adamw", lr=5e-4, b1=0.9, b2=0.999, weight_decay=1e-4, clip_norm=0.1,
                   warmup_steps=100, schedule="cosine", end_lr_ratio=0.01, mu_dtype=None)
    c.train = dict(num_epochs=-1, total_steps=3000, seed=0, prng_impl="rbg", log_every_steps=100,
                   eval_every_steps=750, checkpoint_every_steps=1500, keep_checkpoints=2, tensorboard=True)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.sharding_rules = None
    c.init = dict(path=None, drop_head=False, encoder_only=False)
    return c
