"""CLIP ViT-B/16 with the OpenAI recipe (Radford et al. 2021, Tables 18 and 20).

    python -m vitjax.data convert --pairs 'shards/{00000..41407}.tar' --out ~/data --name laion400m \
        --holdout 0.001
    python -m vitjax.train --config configs/clip_b16.py --workdir workdirs/clip_b16 \
        --config.input.data.name=laion400m --config.input.data.data_dir=~/data \
        --config.input.eval_data.name=imagenet2012 --config.input.eval_data.data_dir=~/tensorflow_datasets

Recipe (paper): batch 32,768; 32 epochs of the 400M-pair WIT set = 12.8B samples seen
(390,625 steps); AdamW, lr 5e-4 (B/32, B/16; L/14: 4e-4), b1 0.9, b2 0.98, eps 1e-6, decoupled
weight decay 0.2, 2,000 warm-up steps, cosine decay to 0; learned temperature initialised to
0.07 and clipped so the logit scale stays <= 100; the only augmentation a random square crop of the
resized image; CLIP BPE with 76 + 1 tokens; mixed precision. OpenAI's pre-training data (WIT) is
not public: LAION-400M/2B (open_clip's replication) or DataComp are the usual substitutes; open_clip
reports 67.1% (B/32), 67.1%/70.2% (B/16, LAION-400M/2B) ImageNet zero-shot with this recipe, OpenAI
68.3% for B/16 on WIT.

Evaluation: zero-shot ImageNet top-1 with OpenAI's 80 prompt templates (class names and templates
read from open_clip's zero_shot_metadata.py) on the eval split, and retrieval Recall@1/5/10 on a
held-out slice of the training pairs (``--holdout`` above). The image-text eval split's examples
need a ``text``; ImageNet's do not, so retrieval and zero-shot read different splits here.

LiT (Zhai et al. 2022) instead: ``--config.objective.lock_image=True`` with a pretrained image tower
(``config.init``); the locked tower must also be kept out of the optimizer (see the CLIP objective's
``frozen_params``).
"""
import ml_collections

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)   # OpenAI CLIP's pixel statistics
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TOKENIZER = dict(tokenizer="clip", context_length=77)


def zeroshot_imagenet():
    try:
        from vitjax.evals.zeroshot import imagenet_prompts
        names, templates = imagenet_prompts("openai")
    except FileNotFoundError:     # open_clip not installed: the eval needs them listed by hand
        names, templates = ["(set objective.zeroshot.class_names)"], ["a photo of a {}."]
    return dict(class_names=names, templates=templates, data=None, ops=None, max_examples=None)


def get_config(variant: str = "B/16"):
    c = ml_collections.ConfigDict()
    c.model = dict(name="clip", variant=variant, image_size=224, in_channels=3,
                   vision_pool="token", vision_pre_norm=True, text_pool="argmax",
                   text_vocab_size=49408, text_context_length=TOKENIZER["context_length"],
                   activation="gelu",      # open_clip's default; "quick_gelu" to match OpenAI's weights
                   layernorm_eps=1e-5, dropout=0.0, drop_path=0.0,
                   dtype="bfloat16", param_dtype="float32", remat="none")
    c.objective = dict(
        name="clip", loss="softmax", lock_image=False, tokenizer=TOKENIZER["tokenizer"],
        tokenizer_path=None, context_length=TOKENIZER["context_length"],
        zeroshot=zeroshot_imagenet(),
        # retrieval on held-out pairs of the training set (a 'validation' split made by --holdout)
        retrieval=dict(data=dict(name="laion400m", split="validation", data_dir=None), ops=None,
                       max_examples=5000))

    c.input = ml_collections.ConfigDict()
    c.input.data = dict(name="laion400m", split="train", data_dir=None)
    c.input.eval_data = dict(name="imagenet2012", split="validation", data_dir=None)
    c.input.batch_size = 32768
    c.input.eval_batch_size = 1024
    tok = dict(op="tokenize", **TOKENIZER)
    # "a random square crop from resized images" (paper, sec. 2.5); open_clip: scale (0.9, 1).
    c.input.train_ops = [dict(op="decode_random_resized_crop", size=224, scale=(0.9, 1.0), ratio=(1.0, 1.0)),
                         dict(op="normalize", mean=OPENAI_MEAN, std=OPENAI_STD), tok]
    # ImageNet has no captions: the eval split's ops do not tokenize (zero-shot reads images only).
    c.input.eval_ops = [dict(op="decode_center_crop", size=224, crop_fraction=1.0),
                        dict(op="normalize", mean=OPENAI_MEAN, std=OPENAI_STD)]
    c.objective.retrieval["ops"] = c.input.eval_ops + [tok]
    c.input.max_bad_fraction = 0.05       # web data: dead links and empty captions are routine
    c.input.num_threads = 16
    c.input.num_workers = 8

    c.optim = dict(name="adamw", lr=5e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.2, clip_norm=0.0,
                   warmup_steps=2000, schedule="cosine", end_lr_ratio=0.0, mu_dtype=None)
    c.train = dict(num_epochs=-1, total_steps=12_800_000_000 // 32768, seed=0, prng_impl="rbg",
                   log_every_steps=100, eval_every_steps=10_000, checkpoint_every_steps=2000,
                   keep_checkpoints=3, tensorboard=True)
    # Batch 32k over many hosts: FSDP keeps the optimizer state sharded; the contrastive loss is
    # sharded over both data and fsdp (each device scores its images against all texts).
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    c.sharding_rules = None
    # LiT: init.path = a pretrained ViT (timm/HF weights or a vitjax ViT/MAE workdir), init.target="img",
    # objective.lock_image=True, model.vision_pre_norm=False.
    c.init = dict(path=None, drop_head=False, target=None)
    return c
