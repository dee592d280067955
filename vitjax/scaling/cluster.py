"""Running a sweep's planned runs in parallel on a cluster: a SLURM job array, one task per run.

Each array task runs ``experiments/scaling/sweep.py --run_index $SLURM_ARRAY_TASK_ID``, which trains
that one run into the shared sweep folder (finished runs are skipped, a preempted one resumes from
its checkpoint). With ``nodes > 1`` a run spans several hosts: ``srun`` starts one process per node
and ``--distributed`` joins them with ``jax.distributed.initialize()`` (which reads SLURM's
environment), the same path as ``python -m vitjax.train --distributed``. SLURM signals the tasks
120 s before the time limit; the Trainer checkpoints on SIGTERM and ``--requeue`` restarts the task,
which resumes. ``experiments/scaling/analyze.py`` reads whatever has finished and names the rest.
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

__all__ = ["slurm_array_script"]


def slurm_array_script(config: str, out: str, num_runs: int, *, overrides: Sequence[str] = (),
                       nodes: int = 1, gpus_per_node: int = 0, cpus_per_task: int | None = None,
                       time_limit: str = "04:00:00", partition: str | None = None,
                       max_parallel: int | None = None, python: str = "python",
                       repo: str | None = None) -> str:
    """The text of an ``sbatch`` script whose array task ``i`` trains planned run ``i``.

    Args:
      config, out: the sweep config file and the shared sweep folder (made absolute).
      num_runs: the plan's length (array indices ``0..num_runs - 1``).
      overrides: ``--config.KEY=VALUE`` arguments of the sweep command, passed on to every task.
      nodes: hosts per run (> 1: a multi-host run through ``--distributed``).
      gpus_per_node, cpus_per_task, time_limit, partition: the SLURM resources of one task.
      max_parallel: at most this many runs at once (``--array=0-N%M``); None: as SLURM allows.
      python, repo: the interpreter and the repository folder the tasks run in.
    """
    if num_runs < 1:
        raise ValueError("the sweep plans no runs: nothing to submit")
    if nodes < 1:
        raise ValueError(f"nodes={nodes}: a run needs at least one node")
    repo = os.path.abspath(repo or os.getcwd())
    config, out = os.path.abspath(config), os.path.abspath(out)
    array = f"0-{num_runs - 1}" + (f"%{max_parallel}" if max_parallel else "")
    lines = ["#!/bin/bash",
             f"# A vitjax scaling sweep as a SLURM job array: task i trains planned run i of {config}",
             f"# ({num_runs} runs) into {out}. Submit with: sbatch THIS_FILE",
             f"# Then, once some or all have finished: {python} experiments/scaling/analyze.py --out {out}",
             f"#SBATCH --job-name=vitjax-sweep-{os.path.basename(out.rstrip('/')) or 'sweep'}",
             f"#SBATCH --array={array}",
             f"#SBATCH --nodes={nodes}",
             "#SBATCH --ntasks-per-node=1",
             f"#SBATCH --time={time_limit}",
             "#SBATCH --signal=TERM@120",
             "#SBATCH --requeue",
             f"#SBATCH --output={out}/slurm/%A_%a.out"]
    if gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={gpus_per_node}")
    if cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={cpus_per_task}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    cmd = [python, "experiments/scaling/sweep.py", "--config", config, "--out", out,
           "--run_index", "$SLURM_ARRAY_TASK_ID", "--no_analyze"]
    if nodes > 1:
        cmd.append("--distributed")
    cmd += list(overrides)
    quoted = " ".join(a if a == "$SLURM_ARRAY_TASK_ID" else shlex.quote(a) for a in cmd)
    lines += ["set -euo pipefail", f"cd {shlex.quote(repo)}", f"mkdir -p {shlex.quote(out)}/slurm",
              f"srun {quoted}", ""]
    return "\n".join(lines)
