"""A scaling sweep run in parallel (experiments/scaling/sweep.py --run_index), the SLURM array script
it emits (vitjax/scaling/cluster.py), and the analysis of a sweep that is only partly done."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SWEEP = REPO / "experiments" / "scaling" / "sweep.py"

SWEEP_CONFIG = '''
import ml_collections

def get_config():
    return ml_collections.ConfigDict(dict(
        base_config="{base}",
        overrides=["input.batch_size=16", "input.eval_batch_size=120", "input.num_threads=0",
                   "train.tensorboard=False", "model.drop_path=0.0", "model.depth=1"],
        mode="grid", grid=dict(width=[8, 16, 24], steps=[2]), head_dim=8, mlp_ratio=2.0,
        evals_per_run=1, checkpoints_per_run=1, logs_per_run=2, max_warmup_fraction=0.5))
'''


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny_sweep.py"
    path.write_text(SWEEP_CONFIG.format(base=REPO / "configs" / "vit_digits.py"))
    return str(path)


def _cli(*args):
    sys.path.insert(0, str(SWEEP.parent))
    import sweep as cli   # experiments/scaling/sweep.py (not a package)
    return cli.main([str(a) for a in args])


def test_two_run_indices_in_parallel_then_the_analysis_names_the_missing_run(sweep_config, tmp_path):
    out = tmp_path / "sweep"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    procs = [subprocess.Popen([sys.executable, str(SWEEP), "--config", sweep_config, "--out", str(out),
                               "--run_index", str(i), "--no_analyze", "--compilation_cache", "none"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (0, 2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "[1/3] w8_st2: eval loss" in logs[0] and "[3/3] w24_st2: eval loss" in logs[1]
    records = {n: json.load(open(out / "runs" / n / "record.json")) for n in ("w8_st2", "w24_st2")}
    assert {r["N_nonembed"] for r in records.values()} and all(r["status"] == "finished" for r in records.values())
    assert not (out / "runs" / "w16_st2").exists()
    assert [r["name"] for r in json.load(open(out / "sweep.json"))["runs"]] == ["w8_st2", "w16_st2",
                                                                                  "w24_st2"]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

    from vitjax.scaling.analysis import analyze_sweep
    from vitjax.scaling.records import describe_missing, progress
    assert describe_missing(progress(str(out))) == \
        "1 of 3 planned runs have no record yet: 1:w16_st2 (not started)"
    # two runs are too few for a law: the error says so and which run is still to come
    with pytest.raises(ValueError, match=r"no scaling law could be fitted.*\(1 of 3 planned runs have no record "
                                         r"yet: 1:w16_st2 \(not started\)\)$"):
        analyze_sweep(str(out), n_boot=0, plots=False)


def test_emit_slurm_writes_a_job_array_of_the_plan(sweep_config, tmp_path, capsys):
    out, script = tmp_path / "sweep", tmp_path / "sweep.sbatch"
    assert _cli("--config", sweep_config, "--out", out, "--emit_slurm", script, "--slurm_nodes", 2,
                "--slurm_gpus_per_node", 8, "--slurm_max_parallel", 2, "--config.grid.steps=[3]") == 0
    text = script.read_text()
    assert "#SBATCH --array=0-2%2" in text and "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=8" in text
    assert f"#SBATCH --output={out}/slurm/%A_%a.out" in text and (out / "slurm").is_dir()
    srun = [line for line in text.splitlines() if line.startswith("srun ")]
    assert srun == [f"srun {sys.executable} experiments/scaling/sweep.py --config {sweep_config} --out {out} "
                    f"--run_index $SLURM_ARRAY_TASK_ID --no_analyze --distributed '--config.grid.steps=[3]'"]
    assert capsys.readouterr().out.startswith(f"wrote {script}: a job array of 3 runs")


def test_run_index_outside_the_plan_is_one_error_line(sweep_config, tmp_path, capsys):
    assert _cli("--config", sweep_config, "--out", tmp_path, "--run_index", 3, "--compilation_cache", "none") == 2
    assert capsys.readouterr().err.strip() == ("error: --run_index 3 is outside the plan's 3 runs (0..2); list "
                                               "them with --dry_run")
