"""The optional config keys of each section: their defaults and what they mean, in one table.

``vitjax.config.load_config_file`` merges this table under every training config it loads (a value
the config file sets wins), so each key below can be overridden on the command line on every config
(``--config.train.micro_batch_size=32``, ``--config.optim.layer_decay=0.75``) even when the file does
not mention it. The code that reads a key takes its default from here too (``default("optim",
"clip_mode")``), so a config built in Python without the key behaves the same.

Keys every config must set (``model.name`` and the model's shape keys, ``objective.*``, ``input.data``, ``input.batch_size``,
``input.train_ops``/``eval_ops``, ``optim.lr``, ``train.num_epochs`` or ``train.total_steps``) are not
here; model and objective options are documented by each model/objective class.
"""
from __future__ import annotations

from typing import Any, Mapping

# section -> key -> (default, one-line meaning)
OPTIONAL: dict[str, dict[str, tuple[Any, str]]] = {
    "optim": {
        "name": ("adamw", "optimizer: adamw, lamb or sgd"),
        "b1": (0.9, "Adam/LAMB first-moment decay, in [0, 1)"),
        "b2": (0.999, "Adam/LAMB second-moment decay, in [0, 1)"),
        "eps": (None, "Adam/LAMB epsilon; None: 1e-8 for adamw, 1e-6 for lamb"),
        "momentum": (0.9, "SGD momentum, in [0, 1)"),
        "nesterov": (False, "SGD Nesterov momentum"),
        "weight_decay": (0.0, "decoupled weight decay (not on norms, biases, embeddings), >= 0"),
        "weight_decay_end": (None, "None: constant weight decay; else cosine from weight_decay to this (DINO)"),
        "mu_dtype": (None, "dtype of Adam's first moment, e.g. bfloat16; None: the params' dtype"),
        "schedule": ("cosine", "decay after warmup: cosine, linear or constant"),
        "end_lr_ratio": (0.0, "final learning rate as a fraction of lr"),
        "warmup_steps": (0, "linear warmup length in steps (0: none)"),
        "warmup_epochs": (None, "warmup length in epochs (instead of warmup_steps)"),
        "warmup_fraction": (None, "warmup length as a fraction of the run, in [0, 1) (instead of warmup_steps)"),
        "layer_decay": (None, "layer-wise lr decay in (0, 1] (MAE fine-tuning: 0.65-0.75); None or 1: off"),
        "clip_norm": (0.0, "gradient clipping norm (0: off)"),
        "clip_mode": ("global", "global: one norm over all gradients; per_param: each tensor on its own (DINO)"),
    },
    "train": {
        "total_steps": (-1, "run length in steps; -1: train.num_epochs decides"),
        "seed": (0, "seed of the init, dropout and data order"),
        "prng_impl": ("rbg", "jax PRNG for dropout/drop-path masks: rbg (fast) or threefry2x32"),
        "micro_batch_size": (0, "gradient accumulation: split each batch into micro-batches this big (0: off)"),
        "log_every_steps": (50, "train-metric logging interval"),
        "eval_every_steps": (0, "evaluation interval (0: at the end only)"),
        "checkpoint_every_steps": (0, "checkpoint interval (0: at the end only)"),
        "keep_checkpoints": (3, "checkpoints kept in the workdir"),
        "tensorboard": (True, "also write TensorBoard event files"),
        "wandb": (False, "also log to Weights & Biases (pip install 'vitjax[wandb]'); the run id is kept in "
                         "the workdir, so a resume continues the same W&B run"),
        "wandb_project": ("vitjax", "the W&B project"),
        "wandb_mode": (None, "W&B mode: online, offline (sync later with `wandb sync`) or disabled; None: "
                             "wandb's own default ($WANDB_MODE)"),
        "compile_cache_dir": (None, "JAX's persistent compilation cache folder; None: $VITJAX_COMPILE_CACHE or "
                                    "~/.cache/vitjax/jax; '': off (vitjax.training.compile_cache)"),
    },
    "input": {
        "num_threads": (2, "decoding/augmentation threads (0: in the main thread)"),
        "num_workers": (0, "decoding/augmentation worker processes (0: none)"),
        "in_memory": (True, "records held as arrays (the digits): deterministic ops once per record, "
                            "the rest per batch (vitjax.data.pipeline.in_memory_plan)"),
        "batch_ops": (None, "batch-level ops, e.g. [dict(op='mixup_cutmix', num_classes=1000)]"),
        "max_bad_fraction": (0.01, "largest tolerated fraction of undecodable examples before the run stops"),
    },
    "mesh": {
        "data": (-1, "data-parallel axis size (-1: the remaining devices)"),
        "fsdp": (1, "FSDP axis size: params and optimizer state split too"),
        "tensor": (1, "tensor-parallel (Megatron) axis size"),
        "dcn_data": (1, "multi-slice TPU: data-parallel groups across slices (DCN); data/fsdp/tensor then "
                        "shape one slice (vitjax.sharding)"),
    },
    "export": {
        "formats": ([], "PyTorch formats written to <workdir>/export/<format> when training ends (e.g. "
                        "['hf', 'timm']); checked at start-up, so a model a format cannot express fails "
                        "before training, with every reason at once"),
        "encoder_only": (False, "export only the encoder (MAE), as python -m vitjax.export --encoder_only"),
    },
    "model": {
        # vitjax.models.attention; families with their own attention (Swin, PVT) take only the defaults.
        "attention": ("auto", "self-attention implementation: auto, xla, cudnn, pallas, band, dilated, "
                              "block_local, bigbird, linear or performer (README: Attention implementations)"),
        "attention_options": (dict(window=64, global_tokens=0, random_blocks=3, block_size=64, dilation=2,
                                   features=256, seed=0),
                              "options of the sparse/linear attentions (vitjax.models.attention_core.AttentionOptions)"),
    },
    "init": {
        "path": (None, "pretrained weights: a timm/HF file or a vitjax workdir"),
        "drop_head": (False, "keep a fresh classifier head (new classes)"),
        "encoder_only": (False, "take just the encoder of an MAE workdir"),
        "target": (None, "load the weights into this sub-tree (e.g. img: CLIP's image tower, LiT)"),
    },
}

# Per-optimizer epsilon when ``optim.eps`` is None (optax's and the papers' defaults).
ADAM_EPS = {"adamw": 1e-8, "lamb": 1e-6}


def default(section: str, key: str) -> Any:
    """The table's default of ``section.key``."""
    return OPTIONAL[section][key][0]


def get(cfg: Mapping[str, Any] | None, section: str, key: str) -> Any:
    """``cfg[key]`` of the section ``cfg`` (e.g. ``config.optim``), or the table's default when unset."""
    if cfg is None or key not in cfg:
        return default(section, key)
    return cfg[key]
