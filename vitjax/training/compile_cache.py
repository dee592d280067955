"""JAX's persistent compilation cache, on by default, so the second start of a run skips XLA's compile.

``train.compile_cache_dir`` chooses the folder:

* ``None`` (the default): ``$VITJAX_COMPILE_CACHE`` when set, else ``~/.cache/vitjax/jax``;
* a path: that folder (several runs, hosts or a sweep's processes can share it: entries are written
  atomically and keyed by the program, the compile options and the jax/jaxlib/device versions);
* ``""``: off (as is ``VITJAX_COMPILE_CACHE=""``).

A compiled train step is looked up by its HLO, so a rerun of the same config on the same mesh, a
resume, or a sweep point with a shape seen before, loads the executable instead of compiling it
(``Trainer.compile_seconds`` then measures the load; ``trace_seconds``, jax's tracing and lowering
to HLO, is paid on every start). Programs that compile in under
``MIN_COMPILE_SECONDS`` are not written: reading them back would cost about what compiling does.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
from jax.experimental.compilation_cache import compilation_cache

from vitjax import config_defaults

log = logging.getLogger("vitjax")

ENV = "VITJAX_COMPILE_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "vitjax", "jax")
MIN_COMPILE_SECONDS = 0.5

_active: list[str | None] = [None]     # the folder this process's cache was last pointed at


def resolve_dir(value: str | None) -> str | None:
    """The cache folder ``train.compile_cache_dir=value`` asks for (absolute), or None for off."""
    if value is None:
        value = os.environ.get(ENV, DEFAULT_DIR)
    value = str(value).strip()
    if not value:
        return None
    return os.path.abspath(os.path.expanduser(value))


def configure(train_cfg: Mapping[str, Any] | None) -> str | None:
    """Points JAX's persistent cache at the folder ``train_cfg`` (``config.train``) asks for, or turns
    it off; returns the folder (None: off). Call before the first compile of the run; calling again
    with another folder moves the cache (jax reads the setting once, so the cache is reset)."""
    path = resolve_dir(config_defaults.get(train_cfg, "train", "compile_cache_dir"))
    if path == _active[0] and jax.config.values.get("jax_compilation_cache_dir") == path:
        return path
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        if _active[0] is not None:
            compilation_cache.reset_cache()
        _active[0] = None
        log.info("compile cache: off (train.compile_cache_dir='')")
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:     # a read-only home must not stop a run: it only compiles every time
        log.warning("compile cache: cannot create %s (%s); compiling without a cache. Set "
                    "--config.train.compile_cache_dir to a writable folder, or '' to silence this", path, e)
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    compilation_cache.reset_cache()      # jax opens the cache once per process: make it reread the folder
    _active[0] = path
    log.info("compile cache: %s (set train.compile_cache_dir or $%s to move it, '' to turn it off)", path, ENV)
    return path
