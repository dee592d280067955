"""Multi-host through jax.distributed: two processes on 127.0.0.1 with 4 CPU devices each train the
digits config and produce the losses of one process with 8 devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from conftest import REPO

ARGS = ["--config", str(REPO / "configs" / "vit_digits.py"),
        "--config.model.width=32", "--config.model.depth=2", "--config.model.mlp_dim=64",
        "--config.train.total_steps=6", "--config.optim.warmup_steps=2", "--config.train.log_every_steps=1",
        "--config.train.eval_every_steps=6", "--config.train.checkpoint_every_steps=3",
        "--config.train.tensorboard=False", "--config.input.batch_size=32", "--config.input.eval_batch_size=40",
        "--config.mesh.data=2", "--config.mesh.fsdp=4"]


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r["train/loss"] for r in rows if "train/loss" in r], [r["eval/top1"] for r in rows if "eval/top1" in r]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "vitjax.train", *ARGS, "--workdir", str(one), "--simulate_devices", "8"],
                   check=True, cwd=REPO, env=env, capture_output=True)
    two = tmp_path / "two"
    port = _free_port()
    env4 = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-m", "vitjax.train", *ARGS, "--workdir", str(two),
                               f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                               f"--process_id={i}", "--distributed_timeout=120"],
                              cwd=REPO, env=env4, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    l1, e1 = _losses(one)
    l2, e2 = _losses(two)
    assert len(l1) == 6 and len(l2) == 6
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    np.testing.assert_allclose(e2, e1, atol=1e-9)
    assert sorted(os.listdir(two / "checkpoints")) == ["3", "6"]
    # Only process 0 writes logs and the progress bar.
    assert "step" in outs[0][1] or "vitjax:" in outs[0][1]
    assert "vitjax: " not in outs[1][1].replace("vitjax: joining", "")


def test_unreachable_coordinator_is_a_clear_error(tmp_path):
    port = _free_port()
    r = subprocess.run([sys.executable, "-m", "vitjax.train", *ARGS, "--workdir", str(tmp_path),
                        f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
                        "--distributed_timeout=2"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    assert f"the coordinator 127.0.0.1:{port} did not answer within 2s" in r.stderr
