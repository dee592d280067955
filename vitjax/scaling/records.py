"""A sweep folder's per-run records on disk: ``runs/<name>/record.json``, written atomically.

:mod:`vitjax.scaling.sweep` writes them (it needs JAX and the Trainer); :mod:`vitjax.scaling.analysis`
reads them. This module is plain json/os, so the analysis stays free of JAX.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["RECORD_FILE", "read_records", "read_json", "write_json"]

RECORD_FILE = "record.json"


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON (no NaN/Inf) via a temporary file and a rename: the file is either
    absent or complete."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)


def read_records(sweep_dir: str, names: Sequence[str] | None = None) -> list[dict]:
    """The records of finished (or diverged) runs: of the runs ``names`` in that order (those without
    a record are left out), else every ``runs/*/record.json`` in name order."""
    runs = os.path.join(sweep_dir, "runs")
    if names is None:
        names = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    out = []
    for n in names:
        p = os.path.join(runs, n, RECORD_FILE)
        if os.path.isfile(p):
            out.append(read_json(p))
    return out
