"""Optimizers and learning-rate schedules from the ``config.optim`` section (all optax)."""
from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax

from vitjax import config_defaults
from vitjax.config import ConfigError, warmup_setting

log = logging.getLogger("vitjax")

# A warmup as long as the run (or longer) becomes this fraction of the run, with a warning.
SHORTENED_WARMUP_FRACTION = 0.1

# Parameter names that get no weight decay: norms, biases, position embeddings and prefix tokens
# (the usual ViT/DeiT recipe; decaying a LayerNorm scale towards 0 fights the normalisation).
NO_DECAY_NAMES = ("bias", "scale", "pos_embedding", "cls", "dist", "mask_token",
                  # Swin's relative-position tables and v2's continuous-bias MLP (Liu et al. 2021; timm),
                  # and a learnable logit temperature (CLIP/Swin-v2).
                  "relative_position_bias_table", "logit_scale", "cpb_fc1", "cpb_fc2")


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: every leaf except norms, biases and embeddings above."""
    def keep(path, _):
        names = {getattr(p, "key", getattr(p, "name", None)) for p in path}
        return not (names & set(NO_DECAY_NAMES))
    return jax.tree_util.tree_map_with_path(keep, params)


def layer_id(path: tuple, num_layers: int) -> int | np.ndarray:
    """BEiT/MAE layer index of a parameter: embeddings (patch_embed, pos_embedding, cls/dist tokens)
    0, transformer block i -> i + 1, everything after the blocks (final norm, head) num_layers + 1.
    A scanned stack ``block{a}-{b}`` (``vitjax.models.scan``) gets the array a+1 .. b+1."""
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    for n in names:
        m = re.fullmatch(r"block(\d+)", n)
        if m:
            return int(m.group(1)) + 1
        m = re.fullmatch(r"block(\d+)-(\d+)", n)
        if m:
            return np.arange(int(m.group(1)), int(m.group(2)) + 1) + 1
    if names and names[-1] in ("cls", "dist", "pos_embedding") or "patch_embed" in names:
        return 0
    return num_layers + 1


def layer_decay_scales(params: Any, decay: float) -> Any:
    """Per-parameter learning-rate multipliers decay^(L + 1 - layer_id) (Clark et al. 2020; BEiT; MAE
    fine-tuning uses 0.75 for ViT-B, 0.65 for ViT-L/H): the head learns at the full rate, the patch
    embedding at decay^(L + 1)."""
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    blocks = {int(m.group(m.lastindex)) for p in paths for k in p
              for m in [re.fullmatch(r"block(\d+)(?:-(\d+))?", str(getattr(k, "key", getattr(k, "name", k))))] if m}
    num_layers = max(blocks) + 1 if blocks else 0

    def scale(path, leaf):
        ids = layer_id(path, num_layers)
        if isinstance(ids, int):
            return float(decay) ** (num_layers + 1 - ids)
        # a scanned stack: one factor per layer along its leading axis
        return jnp.asarray(float(decay) ** (num_layers + 1 - ids), jnp.float32).reshape((-1,) + (1,) * (leaf.ndim - 1))
    return jax.tree_util.tree_map_with_path(scale, params)


def scale_per_param(factors) -> optax.GradientTransformation:
    """Multiplies each parameter's update by a fixed factor: ``factors`` is a tree shaped like the
    params, or a function of the updates' tree returning one. Applied after the optimizer it scales
    that parameter's learning rate, weight decay included (MAE/BEiT's per-layer param groups; a
    factor 0 freezes the parameter, as LiT's locked tower)."""
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        f = factors(updates) if callable(factors) else factors
        return jax.tree.map(lambda u, s: u if isinstance(s, float) and s == 1.0 else (u * s).astype(u.dtype),
                            updates, f), state

    return optax.GradientTransformation(init, update)


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
    """Layer-wise learning-rate decay: each update times its ``layer_decay_scales`` factor."""
    return scale_per_param(lambda updates: layer_decay_scales(updates, decay))


def _opt(cfg: ml_collections.ConfigDict, key: str) -> Any:
    return config_defaults.get(cfg, "optim", key)


def warmup_steps(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int | None = None,
                 shorten: bool = True) -> int:
    """The warmup length in steps from the one of ``optim.warmup_steps``, ``warmup_epochs`` (needs
    ``steps_per_epoch``) or ``warmup_fraction`` (of ``total_steps``) that is set; two set is a
    ConfigError. A warmup not shorter than the run is cut to ``SHORTENED_WARMUP_FRACTION`` of the run
    with a logged warning (``shorten=False``: a ConfigError)."""
    key, value = warmup_setting(cfg)
    if key is None:
        return 0
    if key == "warmup_steps":
        steps, shown = int(value), f"optim.warmup_steps={value}"
    elif key == "warmup_epochs":
        if steps_per_epoch is None:
            raise ConfigError(f"optim.warmup_epochs={value} needs the epoch length; use optim.warmup_steps "
                              f"or optim.warmup_fraction here")
        steps = int(round(float(value) * steps_per_epoch))
        shown = f"optim.warmup_epochs={value} ({steps} steps)"
    else:
        steps = int(round(float(value) * total_steps))
        shown = f"optim.warmup_fraction={value} ({steps} steps)"
    if steps < total_steps:
        return steps
    if not shorten:
        raise ConfigError(f"{shown} must be smaller than the {total_steps} training steps")
    short = int(SHORTENED_WARMUP_FRACTION * total_steps)
    log.warning("%s is not shorter than the %d training steps; warming up for %d steps (%g%% of the run) "
                "instead. Set a shorter warmup (e.g. --config.optim.%s=0 --config.optim.warmup_fraction=0.1) "
                "to choose it", shown, total_steps, short, 100 * SHORTENED_WARMUP_FRACTION, key)
    return short


def schedule(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int | None = None,
             warmup: int | None = None) -> optax.Schedule:
    """Linear warmup to ``lr`` then cosine (or linear / constant) decay to ``lr * end_lr_ratio``.
    ``warmup`` (steps) defaults to the config's, which must then be shorter than the run
    (``make_optimizer``, which the trainer uses, shortens it instead)."""
    if warmup is None:
        warmup = warmup_steps(cfg, total_steps, steps_per_epoch, shorten=False)
    peak = cfg.lr
    end = cfg.lr * _opt(cfg, "end_lr_ratio")
    kind = _opt(cfg, "schedule")
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


def clip_by_param_norm(max_norm: float) -> optax.GradientTransformation:
    """Clips each parameter's gradient to L2 norm ``max_norm`` on its own (DINO's ``clip_gradients``:
    per tensor, coefficient max_norm / (norm + 1e-6) when below 1), unlike the global-norm clip."""
    def update(updates, state, params=None):
        del params

        def one(g):
            norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
            return (g * jnp.minimum(1.0, max_norm / (norm + 1e-6))).astype(g.dtype)
        return jax.tree.map(one, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class FreezeState(NamedTuple):
    count: jax.Array
    inner: Any


def freeze_until(inner: optax.GradientTransformation, until: Any) -> optax.GradientTransformation:
    """``inner`` with some parameters held fixed for their first steps: ``until`` is a tree shaped
    like the params of ints (0 = never frozen); while the step count is below a parameter's value
    its gradient enters ``inner`` as zero and its update (weight decay included) is zero, as DINO's
    ``cancel_gradients_last_layer`` (the last layer learns nothing in the first epoch)."""
    def init(params):
        return FreezeState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        def zero(u, n):
            return u if n == 0 else jnp.where(state.count < n, jnp.zeros_like(u), u)
        updates = jax.tree.map(zero, updates, until)
        updates, new_inner = inner.update(updates, state.inner, params)
        updates = jax.tree.map(zero, updates, until)
        return updates, FreezeState(state.count + 1, new_inner)

    return optax.GradientTransformation(init, update)


def weight_decay_schedule(cfg: ml_collections.ConfigDict, total_steps: int):
    """``optim.weight_decay``, or with ``optim.weight_decay_end`` set a cosine from the first to the
    second over the whole run (DINO: 0.04 -> 0.4)."""
    wd = _opt(cfg, "weight_decay")
    end = _opt(cfg, "weight_decay_end")
    if end is None or end == wd:
        return wd
    start = float(wd)
    end = float(end)
    return lambda step: end + 0.5 * (start - end) * (1 + jnp.cos(jnp.pi * jnp.minimum(step, total_steps) / total_steps))


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int | None = None,
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer and learning-rate schedule of ``config.optim`` (keys and defaults:
    ``vitjax.config_defaults.OPTIONAL["optim"]``); a warmup as long as the run is shortened."""
    lr = schedule(cfg, total_steps, warmup=warmup_steps(cfg, total_steps, steps_per_epoch))
    name = _opt(cfg, "name")
    wd = weight_decay_schedule(cfg, total_steps)
    mu_dtype = _opt(cfg, "mu_dtype")
    eps = _opt(cfg, "eps")
    if eps is None:
        eps = config_defaults.ADAM_EPS.get(name)
    if name == "adamw":
        tx = optax.adamw(lr, b1=_opt(cfg, "b1"), b2=_opt(cfg, "b2"), eps=eps,
                         weight_decay=wd, mask=decay_mask, mu_dtype=mu_dtype)
    elif name == "lamb":
        tx = optax.lamb(lr, b1=_opt(cfg, "b1"), b2=_opt(cfg, "b2"), eps=eps,
                        weight_decay=wd, mask=decay_mask)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                         optax.sgd(lr, momentum=_opt(cfg, "momentum"), nesterov=_opt(cfg, "nesterov")))
    else:
        raise ConfigError(f"optim.name={name!r}; choose adamw, lamb or sgd")
    decay = _opt(cfg, "layer_decay")
    if decay is not None and decay != 1.0:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay <= 1.0:
            raise ConfigError(f"optim.layer_decay={decay} must be in (0, 1] (MAE fine-tuning: 0.65-0.75)")
        tx = optax.chain(tx, scale_by_layer_decay(decay))
    clip = _opt(cfg, "clip_norm")
    mode = _opt(cfg, "clip_mode")
    if mode not in ("global", "per_param"):
        raise ConfigError(f"optim.clip_mode={mode!r}; choose 'global' (one norm over all gradients) or "
                          f"'per_param' (each tensor on its own, as DINO)")
    if clip and clip > 0:
        clipper = optax.clip_by_global_norm(clip) if mode == "global" else clip_by_param_norm(clip)
        tx = optax.chain(clipper, tx)
    return tx, lr


def with_objective_freezing(tx: optax.GradientTransformation, objective, abstract_params,
                            run) -> optax.GradientTransformation:
    """``tx`` with the parameters the objective holds fixed: ``objective.frozen`` (never updated, weight
    decay included: LiT's locked image tower) and ``objective.frozen_until`` (fixed for their first
    steps: DINO's last layer in the first epoch)."""
    frozen = objective.frozen(abstract_params)
    if frozen is not None:
        # Their final updates are zeroed. (Their optimizer moments still exist and stay zero;
        # optax.multi_transform would drop them but its masked state has no per-parameter
        # sharding tree for tree_map_params to follow.)
        tx = optax.chain(tx, scale_per_param(jax.tree.map(lambda f: 0.0 if f else 1.0, frozen)))
    until = objective.frozen_until(abstract_params, run)
    return tx if until is None else freeze_until(tx, until)
