"""A sweep folder's per-run records on disk: ``runs/<name>/record.json``, written atomically.

:mod:`vitjax.scaling.sweep` writes them (it needs JAX and the Trainer); :mod:`vitjax.scaling.analysis`
reads them. This module is plain json/os, so the analysis stays free of JAX.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["RECORD_FILE", "RUN_FILE", "read_records", "read_json", "write_json", "write_runs_jsonl", "progress", "describe_missing"]

RECORD_FILE = "record.json"
RUN_FILE = "sweep_run.json"   # written when a run starts: guards a half-finished workdir against reuse


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON (no NaN/Inf) via a temporary file and a rename: the file is either
    absent or complete."""
    tmp = f"{path}.{os.getpid()}.tmp"     # several processes of a parallel sweep may write the same file
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


def write_runs_jsonl(sweep_dir: str, names: Sequence[str]) -> None:
    """``runs.jsonl``: every record of the runs ``names``, one per line, in that order."""
    path = os.path.join(sweep_dir, "runs.jsonl")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        for r in read_records(sweep_dir, names):
            fh.write(json.dumps(r, allow_nan=False) + "\n")
    os.replace(tmp, path)


def progress(sweep_dir: str) -> dict[str, Any]:
    """Which planned runs (``sweep.json``'s plan) have a record and which not, for a sweep whose runs
    may be trained by many processes at once: ``{"planned": int, "recorded": [names],
    "missing": [{"index", "name", "state"}]}``, state "started" (a run folder without a record:
    training, preempted or failed) or "not started"."""
    meta_path = os.path.join(sweep_dir, "sweep.json")
    planned = [r["name"] for r in read_json(meta_path).get("runs", [])] if os.path.isfile(meta_path) else []
    runs = os.path.join(sweep_dir, "runs")
    recorded, missing = [], []
    for i, name in enumerate(planned):
        if os.path.isfile(os.path.join(runs, name, RECORD_FILE)):
            recorded.append(name)
        else:
            started = os.path.isfile(os.path.join(runs, name, RUN_FILE))
            missing.append({"index": i, "name": name, "state": "started" if started else "not started"})
    return {"planned": len(planned), "recorded": recorded, "missing": missing}


def describe_missing(prog: dict[str, Any]) -> str:
    """One line: how many planned runs have no record yet, and which (``--run_index`` values)."""
    miss = prog["missing"]
    if not miss:
        return f"all {prog['planned']} planned runs recorded"
    names = ", ".join(f"{m['index']}:{m['name']} ({m['state']})" for m in miss)
    return f"{len(miss)} of {prog['planned']} planned runs have no record yet: {names}"
