"""Exports a run writes itself: ``config.export.formats`` (e.g. ``['hf', 'timm']``).

At start-up ``check_export_targets`` asks each format's converter what in the model it cannot
express, and refuses the run with every reason at once (a CLIP with GAP pooling and 1-channel input
learns both before training, not one per retrain). When training ends ``write_export_targets``
writes ``<workdir>/export/<format>/`` exactly as ``python -m vitjax.export`` would (class names and
eval preprocessing included).
"""
from __future__ import annotations

import logging
import os

import jax
import numpy as np

from vitjax import config_defaults
from vitjax.config import ConfigError
from vitjax.interop.registry import export_blockers, export_folder
from vitjax.interop.state_dict import load_snippet
from vitjax.training.workdir import class_names

log = logging.getLogger("vitjax")


def _targets(config) -> tuple[list[str], bool]:
    section = config.get("export")
    formats = config_defaults.get(section, "export", "formats") or []
    if isinstance(formats, str):
        formats = [formats]
    return [str(f) for f in formats], bool(config_defaults.get(section, "export", "encoder_only"))


def check_export_targets(config, model) -> None:
    """ConfigError listing, per format of ``config.export.formats``, every reason the model cannot be
    exported that way (each naming the config change that removes it); nothing when all can."""
    formats, encoder_only = _targets(config)
    problems = {fmt: export_blockers(model, fmt, encoder_only) for fmt in formats}
    problems = {fmt: why for fmt, why in problems.items() if why}
    if problems:
        listed = " | ".join(f"--format {fmt}: " + "; ".join(why) for fmt, why in problems.items())
        raise ConfigError(f"config.export.formats={formats} cannot be written for this "
                          f"{type(model).__name__}: {listed}. Change those settings, or drop the format "
                          f"from config.export.formats")


def write_export_targets(workdir: str, config, model, params) -> dict[str, str]:
    """Writes each format of ``config.export.formats`` to ``<workdir>/export/<format>`` from the final
    ``params``; returns {format: folder}. A failure is logged and the other formats still written
    (the checkpoint is already safe: ``python -m vitjax.export`` can redo it)."""
    formats, encoder_only = _targets(config)
    if not formats:
        return {}
    if jax.process_count() > 1:     # params are spread over the hosts: the export CLI reads the checkpoint
        log.warning("warning: config.export.formats is written by single-process runs only; run python -m "
                    "vitjax.export --workdir %s --format FORMAT after this multi-host run", workdir)
        return {}
    params = jax.tree.map(np.asarray, jax.device_get(params))
    n = int(getattr(model, "num_classes", 0) or 0)
    names = class_names(workdir, config, n) if n > 0 else None
    out = {}
    for fmt in formats:
        folder = os.path.join(workdir, "export", fmt)
        try:
            export, _, cfg, _ = export_folder(folder, model, params, fmt, encoder_only=encoder_only,
                                              config=config, label_names=names)
        except (ValueError, OSError) as e:
            log.warning("warning: export to %s failed (%s); the checkpoint is intact: run python -m "
                        "vitjax.export --workdir %s --format %s", folder, e, workdir, fmt)
            continue
        log.info("exported %s: load with %s", folder, load_snippet(export.kind, folder, cfg))
        out[fmt] = folder
    return out
