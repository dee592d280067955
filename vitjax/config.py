"""Config files (``get_config()`` -> ml_collections.ConfigDict), command-line overrides, validation.

A config file is a Python file with ``get_config(arg=None)``; ``--config path.py:arg`` passes ``arg``.
Overrides are ``--config.a.b=value`` (or ``--config.a.b value``); an unknown key is an error that lists
the nearest valid keys, and a value is converted to the type the key already has.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections


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
    if isinstance(current, str):
        return text
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
    raise ConfigError(f"--config.{key}={text!r}: expected a {type(current).__name__} "
                      f"(the current value is {current!r})")


def set_key(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets ``a.b.c`` from its string form; unknown keys raise with the nearest valid ones."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        # List items (e.g. one data op) by index: input.train_ops.0.num_local
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            part = parts[i] = int(part)
        elif not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
            valid = flat_keys(config)
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


def apply_overrides(config: ml_collections.ConfigDict, args: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``--config.a.b=v`` / ``--config.a.b v`` arguments in order."""
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
        set_key(config, key, text)
    return config


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


def to_json(config: ml_collections.ConfigDict) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads(text))
