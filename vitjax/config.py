"""Config files (``get_config()`` -> ml_collections.ConfigDict), command-line overrides, validation.

A config file is a Python file with ``get_config(arg=None)``; ``--config path.py:arg`` passes ``arg``.
Loading merges the table of optional keys (``vitjax.config_defaults.OPTIONAL``) under the config, so
every documented key can be overridden on every config. Overrides are ``--config.a.b=value`` (or
``--config.a.b value``); an unknown key is an error that lists the nearest valid keys, and a value is
converted to the type the key already has.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import logging
import math
import os
import shutil
from typing import Any, Callable, Sequence

import ml_collections

from vitjax import config_defaults

log = logging.getLogger("vitjax")


class ConfigError(ValueError):
    """A user-fixable problem with a config file or an override."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads ``path.py`` or ``path.py:arg`` and calls its ``get_config``."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        here = os.path.dirname(path) or "."
        hint = ""
        if os.path.isdir(here):
            near = difflib.get_close_matches(os.path.basename(path), os.listdir(here), n=3)
            hint = f"; similar files in {here}/: {near}" if near else ""
        raise ConfigError(f"config file {path!r} does not exist{hint}. Configs that ship with vitjax "
                          f"live in configs/, e.g. --config configs/vit_digits.py")
    spec_obj = importlib.util.spec_from_file_location(f"vitjax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec_obj)
    spec_obj.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config() function")
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    return merge_defaults(config)


def merge_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds the optional keys of ``config_defaults.OPTIONAL`` that ``config`` lacks (in place; the
    config's own values win). Only training configs (with a ``model`` section) get them: a sweep
    config is left alone. A section set to None stays None."""
    if "model" not in config:
        return config
    with config.unlocked():
        for section, table in config_defaults.OPTIONAL.items():
            if section not in config:
                config[section] = ml_collections.ConfigDict()
            node = config[section]
            if not isinstance(node, ml_collections.ConfigDict):
                continue
            with node.unlocked():
                for key, (value, _) in table.items():
                    if key not in node:
                        node[key] = value
    return config


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, ml_collections.ConfigDict):
            keys.extend(flat_keys(v, full + "."))
    return keys


def _parse_value(text: str, current: Any, key: str) -> Any:
    if isinstance(current, str):   # strings verbatim, but None unsets (--config.model.variant=None)
        return None if text == "None" else text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(current, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(current, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    elif isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
        return ml_collections.ConfigDict(value)
    elif isinstance(value, type(current)):
        return value
    kind = {"int": "an integer", "float": "a number", "bool": "True or False", "str": "a string",
            "list": "a list", "tuple": "a list", "ConfigDict": "a dict"}.get(type(current).__name__,
                                                                            f"a {type(current).__name__}")
    raise ConfigError(f"--config.{key}={text!r}: expected {kind} (the current value is {current!r})")


def set_key(config: ml_collections.ConfigDict, key: str, text: str,
            model_options: Callable[[str], Sequence[str]] | None = None) -> None:
    """Sets ``a.b.c`` from its string form; unknown keys raise with the nearest valid ones.
    ``model_options(model name)``: the model's options, which ``model.KEY`` may add when the config
    does not set them (``--config.model.depth=2`` on a config that only names a variant)."""
    parts = key.split(".")
    node = config
    m = config.get("model")
    if (model_options is not None and len(parts) == 2 and parts[0] == "model"
            and isinstance(m, ml_collections.ConfigDict) and parts[1] not in m
            and parts[1] in model_options(m.get("name", "vit"))):
        with m.unlocked():
            m[parts[1]] = _parse_value(text, None, key)
        return
    for i, part in enumerate(parts):
        # List items (e.g. one data op) by index: input.train_ops.0.num_local
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            part = parts[i] = int(part)
        elif not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            valid = flat_keys(config)
            if model_options is not None and parts[0] == "model" and isinstance(m, ml_collections.ConfigDict):
                valid += [f"model.{k}" for k in model_options(m.get("name", "vit")) if k not in m]
            near = difflib.get_close_matches(key, valid, n=5, cutoff=0.5)
            raise ConfigError(f"unknown config key {key!r}. Nearest valid keys: "
                              f"{', '.join(near) if near else '(none close)'}")
        if i < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if isinstance(node, ml_collections.ConfigDict):
        with node.unlocked():
            node[parts[-1]] = _parse_value(text, current, key)
    else:
        if isinstance(node, tuple):
            raise ConfigError(f"config key {key!r} is inside a tuple, which cannot be changed; make it a list")
        node[parts[-1]] = _parse_value(text, current, key)


def apply_overrides(config: ml_collections.ConfigDict, args: Sequence[str],
                    model_options: Callable[[str], Sequence[str]] | None = None) -> ml_collections.ConfigDict:
    """Applies ``--config.a.b=v`` / ``--config.a.b v`` arguments in order, then checks that a model
    variant is not shadowed by shape keys set next to it (``check_variant``: the command line and
    config files; code that builds a config may still shrink a variant on purpose, e.g. depth=2).
    ``model_options`` (``vitjax.models.registry.model_options``) lets ``model.KEY`` add any option
    of the config's model that the file leaves at its default."""
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"unrecognised argument {arg!r}; overrides look like --config.train.seed=1")
        body = arg[len("--config."):]
        if "=" in body:
            key, text = body.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg} needs a value: {arg}=VALUE")
            key, text = body, args[i + 1]
            i += 2
        set_key(config, key, text, model_options)
    check_variant(config)
    return config


# The shape keys a ViT-family variant "SIZE/PATCH" fixes (vitjax.models.vit.decode_variant; Swin's
# variant fixes num_heads too). patch_size only when the variant names a patch.
VARIANT_KEYS = ("width", "depth", "num_heads", "mlp_dim")


def check_variant(config: ml_collections.ConfigDict) -> None:
    """A ConfigError when ``model.variant`` is set together with keys it defines (the explicit keys
    would silently win, e.g. ``--config.model.variant=S/16`` on a config with width/depth). Those keys
    set to None next to a variant are removed, so that the variant decides them."""
    m = config.get("model")
    variant = m.get("variant") if m is not None else None
    if not variant:
        return
    keys = VARIANT_KEYS + (("patch_size",) if "/" in str(variant) else ())
    with m.unlocked():
        for k in keys:
            if k in m and m[k] is None:
                del m[k]
    clash = [k for k in keys if m.get(k) is not None]
    if clash:
        names = ", ".join(f"model.{k}={m[k]!r}" for k in clash)
        drop = " ".join(f"--config.model.{k}=None" for k in clash)
        raise ConfigError(f"model.variant={variant!r} defines {', '.join(clash)}, but the config also sets "
                          f"{names}, which would silently override it; unset them ({drop}) to use the "
                          f"variant, or set --config.model.variant=None to keep them")


def validate(config: ml_collections.ConfigDict) -> None:
    """Config-time checks for mistakes that would otherwise surface deep inside a compiled step."""
    m = config.get("model")
    if m is None:
        raise ConfigError("the config has no 'model' section")
    size, patch = m.get("image_size"), m.get("patch_size")
    if patch is None and m.get("variant") and "/" in str(m.get("variant")):
        patch = int(str(m.variant).split("/")[1])
    if size is not None and patch and size % patch:
        raise ConfigError(f"model.image_size={size} is not divisible by the patch size {patch}; use a "
                          f"multiple of {patch} (e.g. {size - size % patch or patch})")
    t = config.get("train", {})
    if t.get("total_steps", -1) <= 0 and t.get("num_epochs", 0) <= 0:
        raise ConfigError("set train.total_steps or train.num_epochs to a positive number")
    b = config.input.get("batch_size", 0)
    if b <= 0:
        raise ConfigError(f"input.batch_size must be positive, got {b}")
    if config.get("optim") is not None:
        check_optim(config.optim)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_optim(o: ml_collections.ConfigDict) -> None:
    """Optimizer numbers that would train silently wrong (a negative lr ascends the loss)."""
    lr = o.get("lr")
    if not _number(lr) or lr < 0:
        raise ConfigError(f"optim.lr={lr!r} must be a positive number (it is the peak learning rate); "
                          f"set e.g. --config.optim.lr=1e-3")
    if lr == 0:
        log.warning("optim.lr=0: the parameters will not change; set a positive --config.optim.lr to train")
    def get(key):
        return config_defaults.get(o, "optim", key)

    for key, low, high, fix in (("b1", 0.0, 1.0, "0.9"), ("b2", 0.0, 1.0, "0.999"),
                                ("momentum", 0.0, 1.0, "0.9"), ("warmup_fraction", 0.0, 1.0, "0.1")):
        v = get(key)
        if v is not None and not (_number(v) and low <= v < high):
            raise ConfigError(f"optim.{key}={v!r} must be in [{low:g}, {high:g}); set e.g. "
                              f"--config.optim.{key}={fix}")
    for key in ("weight_decay", "weight_decay_end", "clip_norm", "end_lr_ratio", "warmup_steps",
                "warmup_epochs"):
        v = get(key)
        if v is not None and not (_number(v) and v >= 0):
            raise ConfigError(f"optim.{key}={v!r} must be a number >= 0; set e.g. --config.optim.{key}=0")
    eps = get("eps")
    if eps is not None and not (_number(eps) and eps > 0):
        raise ConfigError(f"optim.eps={eps!r} must be positive; set e.g. --config.optim.eps=1e-8 (or None for "
                          f"the optimizer's default)")
    warmup_setting(o)


WARMUP_KEYS = ("warmup_steps", "warmup_epochs", "warmup_fraction")


def warmup_setting(o) -> tuple[str | None, float]:
    """The one warmup key of ``optim`` that is set (not None and not 0) and its value, or (None, 0);
    a ConfigError naming both when two are set."""
    chosen = [(k, o[k]) for k in WARMUP_KEYS if k in o and o[k] is not None and o[k] != 0]
    if len(chosen) > 1:
        (k1, v1), (k2, v2) = chosen[:2]
        raise ConfigError(f"optim.{k1}={v1!r} and optim.{k2}={v2!r} both set the warmup; set only one "
                          f"(e.g. --config.optim.{k1}=0 to use optim.{k2})")
    return chosen[0] if chosen else (None, 0)


def to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(text))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> dict[str, tuple]:
    """``{key: (old value, new value)}`` for every leaf key that differs (``"(unset)"`` when absent);
    both sides get the optional-key defaults first, so a key that only gained its default is no change."""
    a, b = (_flatten(json.loads(to_json(merge_defaults(from_json(to_json(c)))))) for c in (old, new))
    unset = "(unset)"
    return {k: (a.get(k, unset), b.get(k, unset)) for k in sorted(set(a) | set(b))
            if a.get(k, unset) != b.get(k, unset)}


def write_run_config(workdir: str, config: ml_collections.ConfigDict, resumed_step: int | None = None) -> None:
    """Writes ``workdir/config.json``. On a resume (``resumed_step``) whose config differs from the one
    there, logs the changed keys (old -> new) and keeps the previous file as ``config.<step>.json``."""
    path = os.path.join(workdir, "config.json")
    if resumed_step is not None and os.path.isfile(path):
        with open(path) as fh:
            old = from_json(fh.read())
        changes = config_changes(old, config)
        if changes:
            kept = os.path.join(workdir, f"config.{resumed_step}.json")
            shutil.copyfile(path, kept)
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
            log.warning("resuming at step %d with a changed config (%s); the previous config is kept as %s "
                        "(rerun with the old values to continue the original run)", resumed_step, listed, kept)
    with open(path, "w") as fh:
        fh.write(to_json(config))
