"""The dry run: compile the train step for the configured model, batch and mesh without reading
data or allocating parameters, and report per-device memory, FLOPs and collectives per step."""
from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def count_collectives(hlo_text: str) -> dict[str, int]:
    """How many of each collective the compiled (per-device) program runs per step; async pairs
    (``*-start``/``*-done``) count once."""
    counts = {}
    for name in COLLECTIVES:
        counts[name] = len(re.findall(rf"\b{name}(?:-start)?\(", hlo_text))
    return counts


def format_dry_run(r: dict[str, Any]) -> str:
    def gib(b):
        if b is None:
            return "     n/a"
        return f"{b / 2**30:8.3f} GiB" if b >= 2**30 else f"{b / 2**20:8.2f} MiB"
    lines = [f"dry run: {r['params'] / 1e6:.1f}M params on {r['devices']} devices, mesh {r['mesh']} "
             f"(traced in {r['trace_seconds']:.1f}s, compiled in {r['compile_seconds']:.1f}s)",
             "per-device memory:",
             f"  params        {gib(r['bytes_params'])}",
             f"  optimizer     {gib(r['bytes_optimizer'])}",
             f"  batch         {gib(r['bytes_batch'])}",
             f"  activations + temporaries (XLA) {gib(r['bytes_temporaries'])}",
             f"  total         {gib(r['bytes_total'])}"]
    if r.get("platform") == "cpu":
        lines.append("  (compiled for CPU: params/optimizer/batch are exact for the target mesh; the CPU "
                     "compiler's temporaries do not reflect remat or bf16 storage, so treat them as an "
                     "upper bound and rerun the dry run on the target accelerator for exact figures)")
    if r.get("flops_per_device"):
        lines.append(f"FLOPs per device per step (XLA): {r['flops_per_device'] / 1e12:.3f} TFLOP")
    lines.append("collectives per step: " + ", ".join(f"{k} {v}" for k, v in r["collectives"].items()))
    return "\n".join(lines)


def dry_run_report(trainer) -> dict[str, Any]:
    """The dry-run figures of a ``Trainer`` whose state is set up (``format_dry_run`` prints them)."""
    example = trainer.objective.example_batch(trainer.model, trainer.batch_size)
    batch = trainer.batches.abstract_batch(example)
    compiled = trainer.compiled_train_step(batch)
    mem = compiled.memory_analysis()
    abstract = trainer.abstract_state

    def per_device(tree):
        return sum(int(np.prod(a.sharding.shard_shape(a.shape))) * np.dtype(a.dtype).itemsize
                   for a in jax.tree.leaves(tree))

    report = {
        "devices": int(trainer.mesh.size), "mesh": dict(trainer.mesh.shape),
        "platform": trainer.mesh.devices.flat[0].platform,
        "params": sum(int(np.prod(a.shape)) for a in jax.tree.leaves(abstract.params)),
        "bytes_params": per_device(abstract.params),
        "bytes_optimizer": per_device(abstract.opt_state),
        "bytes_batch": per_device(batch),
        "bytes_temporaries": int(getattr(mem, "temp_size_in_bytes", 0)) if mem else None,
        "bytes_generated_code": int(getattr(mem, "generated_code_size_in_bytes", 0)) if mem else None,
        "flops_per_device": trainer.flops_per_device,
        "collectives": count_collectives(compiled.as_text()),
        "compile_seconds": trainer.compile_seconds, "trace_seconds": trainer.trace_seconds,
    }
    known = [report[k] for k in ("bytes_params", "bytes_optimizer", "bytes_batch", "bytes_temporaries")]
    report["bytes_total"] = sum(x for x in known if x)
    return report
