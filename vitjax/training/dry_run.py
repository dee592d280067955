"""The dry run: compile the train step for the configured model, batch and mesh without reading
data or allocating parameters, and report per-device memory, FLOPs and collectives per step."""
from __future__ import annotations

import re
from typing import Any

import jax
import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def count_collectives(hlo_text: str) -> dict[str, int]:
    """How many collective instructions the compiled (per-device) program holds; async pairs
    (``*-start``/``*-done``) count once. A loop's body is counted once here (``executed_collectives``
    counts what a step runs)."""
    counts = {}
    for name in COLLECTIVES:
        counts[name] = len(re.findall(rf"\b{name}(?:-start)?\(", hlo_text))
    return counts


_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{$")
_CALLEE = re.compile(r"\b(body|calls|to_apply|condition|true_computation|false_computation)=%?([\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def executed_collectives(hlo_text: str) -> dict[str, int]:
    """How many of each collective one step runs: instructions inside a ``while`` body (scanned
    layers, micro-batches) count once per iteration, from XLA's ``known_trip_count`` (once when XLA
    does not know it)."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        m = _HEADER.match(line)
        if m and not line.startswith(" "):
            current = m.group(2)
            comps[current] = []
            entry = current if m.group(1) else entry
        elif line.strip() == "}":
            current = None
        elif current is not None:
            comps[current].append(line)
    if entry is None:
        return count_collectives(hlo_text)
    memo: dict[str, dict[str, int]] = {}

    def run(name: str, depth: int = 0) -> dict[str, int]:
        if name in memo or depth > 64:
            return memo.get(name, dict.fromkeys(COLLECTIVES, 0))
        counts = count_collectives("\n".join(comps.get(name, [])))
        for line in comps.get(name, []):
            trip = _TRIP.search(line)
            for kind, callee in _CALLEE.findall(line):
                times = int(trip.group(1)) if (kind == "body" and trip) else 1
                for k, v in run(callee, depth + 1).items():
                    counts[k] += times * v
        memo[name] = counts
        return counts

    return run(entry)


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
    if r.get("collective_instructions") and r["collective_instructions"] != r["collectives"]:
        lines.append("  (in the program: " + ", ".join(f"{k} {v}" for k, v in r["collective_instructions"].items())
                     + "; loop bodies run once per layer / micro-batch)")
    return "\n".join(lines)


def dry_run_report(trainer) -> dict[str, Any]:
    """The dry-run figures of a ``Trainer`` whose state is set up (``format_dry_run`` prints them)."""
    example = trainer.objective.example_batch(trainer.model, trainer.batch_size)
    batch = trainer.batches.abstract_batch(example)
    compiled = trainer.compiled_train_step(batch)
    mem = compiled.memory_analysis()
    hlo = compiled.as_text()
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
        "collectives": executed_collectives(hlo),
        "collective_instructions": count_collectives(hlo),
        "compile_seconds": trainer.compile_seconds, "trace_seconds": trainer.trace_seconds,
    }
    known = [report[k] for k in ("bytes_params", "bytes_optimizer", "bytes_batch", "bytes_temporaries")]
    report["bytes_total"] = sum(x for x in known if x)
    return report
