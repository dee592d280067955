"""The training loop end to end: outputs, resume after SIGKILL, refusal of a foreign checkpoint,
NaN handling, evaluate/export/load round trips."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import vitjax
from vitjax.training.checkpoint import CheckpointMismatchError
from vitjax.config import set_key, to_json
from vitjax.data.ops import register_op
from vitjax.training.metrics import read_metrics
from vitjax.training.trainer import NonFiniteError, Trainer

from conftest import REPO

ONE = jax.devices()[:1]


def _train(cfg, workdir):
    t = Trainer(cfg, str(workdir), devices=ONE)
    return t, t.train()


def _losses_by_step(workdir):
    out = {}
    for r in read_metrics(str(workdir)):
        if "train/loss" in r:
            out[r["step"]] = r["train/loss"]   # a resumed run appends: last record per step wins
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_tiny_config
    wd = tmp_path_factory.mktemp("run")
    trainer, final = _train(make_tiny_config(), wd)
    return wd, trainer, final


def test_run_writes_metrics_tensorboard_checkpoints(trained):
    wd, trainer, final = trained
    records = read_metrics(str(wd))
    train = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    for key in ("train/loss", "train/lr", "train/grad_norm", "train/top1", "train/epoch"):
        assert key in train[-1]
    assert "train/img_per_sec" in train[-1] and train[-1]["train/img_per_sec"] > 0
    assert "train/tflops_per_device" in train[-1]
    evals = [r for r in records if "eval/top1" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert 0.0 <= evals[-1]["eval/top1"] <= 1.0 and final["eval/top1"] == evals[-1]["eval/top1"]
    assert sorted(os.listdir(wd / "checkpoints")) == ["12", "6"]
    events = os.listdir(wd / "tensorboard")
    assert any(e.startswith("events.out.tfevents") for e in events)
    assert json.loads((wd / "config.json").read_text())["model"]["width"] == 32
    assert trainer.flops_per_device > 0


def test_load_and_evaluate_reproduce_final_eval(trained):
    wd, trainer, final = trained
    config, model, params = vitjax.load(str(wd))
    assert config.model.width == 32
    np.testing.assert_allclose(jax.tree.leaves(params)[0], jax.device_get(jax.tree.leaves(trainer.state.params)[0]))
    from vitjax.evaluate import evaluate_workdir
    result = evaluate_workdir(str(wd))
    assert result["step"] == 12
    assert abs(result["eval/top1"] - final["eval/top1"]) < 1e-9
    # The documented Python API: float32 NHWC images normalised as the config says -> logits.
    from vitjax.data import eval_batches, get_source
    batch = next(eval_batches(get_source("digits", "test"), config.input.eval_ops, 40))
    logits = model.apply({"params": params}, batch["image"])
    assert logits.shape == (40, 10)


def test_export_cli_timm_matches_vitjax(trained, tmp_path):
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    wd, _, _ = trained
    out = tmp_path / "timm"
    r = subprocess.run([sys.executable, "-m", "vitjax.export", "--workdir", str(wd), "--format", "timm",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    config, model, params = vitjax.load(str(wd))
    tm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    with torch.no_grad():
        ref = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), ref, atol=1e-4)


def test_gap_model_hf_export_refused(trained, tmp_path):
    wd, _, _ = trained
    r = subprocess.run([sys.executable, "-m", "vitjax.export", "--workdir", str(wd), "--format", "hf",
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "--format timm" in r.stderr


def test_token_pool_hf_export_cli_parity(tmp_path, tiny_config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    wd = tmp_path / "run"
    _train(tiny_config(**{"model.pool": "token", "train.total_steps": 3, "train.eval_every_steps": 3,
                          "train.checkpoint_every_steps": 3}), wd)
    out = tmp_path / "hf"
    r = subprocess.run([sys.executable, "-m", "vitjax.export", "--workdir", str(wd), "--format", "hf",
                        "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    config, model, params = vitjax.load(str(wd))
    hf = transformers.ViTForImageClassification.from_pretrained(str(out)).eval()
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
    np.testing.assert_allclose(np.asarray(model.apply({"params": params}, x)), ref, atol=1e-4)


def test_init_from_pretrained_workdir_and_torch(trained, tmp_path, tiny_config):
    wd, trainer, _ = trained
    cfg = tiny_config(**{"train.total_steps": 1, "train.eval_every_steps": 1, "train.checkpoint_every_steps": 1,
                         "optim.warmup_steps": 0, "optim.lr": 0.0})
    set_key(cfg, "init.path", str(wd))
    t, _ = _train(cfg, tmp_path / "ft")
    np.testing.assert_allclose(jax.device_get(t.state.params["patch_embed"]["kernel"]),
                               jax.device_get(trainer.state.params["patch_embed"]["kernel"]))
    # Fine-tuning at a higher resolution (16 -> 32 px: 4x4 -> 8x8 patches) resizes the position table.
    cfg = tiny_config(**{"train.total_steps": 1, "train.eval_every_steps": 1, "train.checkpoint_every_steps": 1,
                         "optim.warmup_steps": 0, "optim.lr": 0.0, "model.image_size": 32})
    cfg.input.train_ops = [dict(op="resize", size=32), dict(op="normalize")]
    cfg.input.eval_ops = [dict(op="resize", size=32), dict(op="normalize")]
    set_key(cfg, "init.path", str(wd))
    t32, _ = _train(cfg, tmp_path / "ft32")
    assert t32.state.params["pos_embedding"].shape == (1, 64, 32)
    np.testing.assert_allclose(jax.device_get(t32.state.params["encoder"]["block0"]["mlp"]["fc1"]["kernel"]),
                               jax.device_get(trainer.state.params["encoder"]["block0"]["mlp"]["fc1"]["kernel"]))


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    """A 200-step CLI run (checkpoint every 8 steps) to compare interrupted runs against."""
    from conftest import make_tiny_config
    tmp = tmp_path_factory.mktemp("cli")
    cfg = make_tiny_config(**{"train.total_steps": 200, "train.eval_every_steps": 0,
                              "train.checkpoint_every_steps": 8, "train.tensorboard": False,
                              "train.keep_checkpoints": 50})
    cfg_file = tmp / "cfg.py"
    cfg_file.write_text("import ml_collections, json\n"
                        f"def get_config():\n    return ml_collections.ConfigDict(json.loads({to_json(cfg)!r}))\n")
    cmd = [sys.executable, "-m", "vitjax.train", "--config", str(cfg_file)]
    subprocess.run(cmd + ["--workdir", str(tmp / "ref")], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cmd, _losses_by_step(tmp / "ref"), 200


def _interrupt_and_resume(cmd, run_dir, sig, wait_for):
    proc = subprocess.Popen(cmd + ["--workdir", str(run_dir)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not wait_for():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    interrupted = {"returncode": proc.returncode, "stderr": err, "last_step": max(_losses_by_step(run_dir))}
    subprocess.run(cmd + ["--workdir", str(run_dir)], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return interrupted


def test_resume_after_sigkill_reproduces_losses(tmp_path, cli_reference):
    """Kill -9 a CLI run right after its step-8 checkpoint; the rerun continues with exactly the
    losses of an uninterrupted run."""
    cmd, ref, steps = cli_reference
    run_dir = tmp_path / "run"
    r = _interrupt_and_resume(cmd, run_dir, signal.SIGKILL, lambda: (run_dir / "checkpoints" / "8").is_dir())
    assert r["returncode"] == -signal.SIGKILL
    assert r["last_step"] < steps, "the run finished before it was killed"
    got = _losses_by_step(run_dir)
    assert sorted(got) == list(range(1, steps + 1))
    np.testing.assert_array_equal([got[s] for s in range(1, steps + 1)], [ref[s] for s in range(1, steps + 1)])


def test_sigterm_saves_at_step_boundary_and_exits_zero(tmp_path, cli_reference):
    """Preemption: SIGTERM -> checkpoint at the next step boundary, exit 0; the rerun continues
    with identical losses."""
    cmd, ref, steps = cli_reference
    run_dir = tmp_path / "run"

    def started():
        return (run_dir / "metrics.jsonl").is_file() and len((run_dir / "metrics.jsonl").read_text().splitlines()) >= 3

    r = _interrupt_and_resume(cmd, run_dir, signal.SIGTERM, started)
    assert r["returncode"] == 0, r["stderr"][-2000:]
    stopped = r["last_step"]
    assert stopped < steps
    assert f"SIGTERM received; saved the step-{stopped} checkpoint and stopped" in r["stderr"]
    assert str(stopped) in os.listdir(run_dir / "checkpoints")
    got = _losses_by_step(run_dir)
    np.testing.assert_array_equal([got[s] for s in range(1, steps + 1)], [ref[s] for s in range(1, steps + 1)])


def test_checkpoint_of_other_model_is_refused_untouched(trained, tiny_config, tmp_path):
    wd, _, _ = trained
    before = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(wd / "checkpoints") for p in fs}
    with pytest.raises(CheckpointMismatchError,
                       match=r"parameter 'encoder/block0/attn/key/bias' has shape \(4, 8\) in the checkpoint "
                             r"but \(4, 12\) in the model.*Nothing was overwritten"):
        _train(tiny_config(**{"model.width": 48}), wd)
    after = {p: os.path.getmtime(os.path.join(dp, p)) for dp, _, fs in os.walk(wd / "checkpoints") for p in fs}
    assert before == after


_POISON_AFTER = {"n": 0}


@register_op("test_poison_after")
def _poison_after(count: int):
    """Test-only op: NaN images from the ``count``-th example on (deterministic with 0 threads)."""
    def op(ex, rng):
        _POISON_AFTER["n"] += 1
        if _POISON_AFTER["n"] > count:
            ex = dict(ex, image=np.full_like(ex["image"], np.nan, dtype=np.float32))
        return ex
    return op


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, tiny_config):
    cfg = tiny_config(**{"train.checkpoint_every_steps": 3, "train.eval_every_steps": 0})
    cfg.input.train_ops = list(cfg.input.train_ops) + [dict(op="test_poison_after", count=16 * 7)]
    _POISON_AFTER["n"] = 0
    with pytest.raises(NonFiniteError, match=r"NaN/Inf at step (\d+).*last good checkpoint is step (\d+)") as e:
        _train(cfg, tmp_path)
    import re
    bad, good = map(int, re.search(r"at step (\d+).*step (\d+) in", str(e.value)).groups())
    assert bad > 6 and good == 6 and good < bad
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints")) == [3, 6]
