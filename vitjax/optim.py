"""Optimizers and learning-rate schedules from the ``config.optim`` section (all optax)."""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import optax

from vitjax.config import ConfigError

# Parameter names that get no weight decay: norms, biases, position embeddings and prefix tokens
# (the usual ViT/DeiT recipe; decaying a LayerNorm scale towards 0 fights the normalisation).
NO_DECAY_NAMES = ("bias", "scale", "pos_embedding", "cls", "dist", "mask_token")


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: every leaf except norms, biases and embeddings above."""
    def keep(path, _):
        names = {getattr(p, "key", getattr(p, "name", None)) for p in path}
        return not (names & set(NO_DECAY_NAMES))
    return jax.tree_util.tree_map_with_path(keep, params)


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to ``lr`` then cosine (or linear / constant) decay to ``lr * end_lr_ratio``."""
    warmup = int(cfg.get("warmup_steps", 0))
    if warmup >= total_steps:
        raise ConfigError(f"optim.warmup_steps={warmup} must be smaller than the {total_steps} training steps")
    peak, end = cfg.lr, cfg.lr * cfg.get("end_lr_ratio", 0.0)
    kind = cfg.get("schedule", "cosine")
    decay_steps = total_steps - warmup
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif kind == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ConfigError(f"optim.schedule={kind!r}; choose cosine, linear or constant")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    lr = schedule(cfg, total_steps)
    name = cfg.get("name", "adamw")
    wd = cfg.get("weight_decay", 0.0)
    mu_dtype = cfg.get("mu_dtype", None)
    if name == "adamw":
        tx = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8),
                         weight_decay=wd, mask=decay_mask, mu_dtype=mu_dtype)
    elif name == "lamb":
        tx = optax.lamb(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-6),
                        weight_decay=wd, mask=decay_mask)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                         optax.sgd(lr, momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False)))
    else:
        raise ConfigError(f"optim.name={name!r}; choose adamw, lamb or sgd")
    clip = cfg.get("clip_norm", 0.0)
    if clip and clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, lr
