"""Test-session setup: 8 simulated CPU devices and offline hubs.

Must run before jax initialises its backend, so it lives in conftest (imported first by pytest).
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # never wait on DNS for a hub download
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No persistent compilation cache in the home of whoever runs the tests (tests/test_compile_cache.py
# turns it on in a tmp dir); subprocesses inherit this.
os.environ["VITJAX_COMPILE_CACHE"] = ""

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")


import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def shrink_config(config_file: str, base: dict, overrides: dict):
    """``configs/<config_file>`` with the ``base`` then the ``overrides`` settings applied (as
    ``--config.KEY=VALUE`` strings would be): a shipped config shrunk to a seconds-long test run."""
    from vitjax.config import load_config_file, set_key
    from vitjax.models.registry import model_options

    c = load_config_file(str(REPO / "configs" / config_file))
    for k, v in {**base, **overrides}.items():
        set_key(c, k, str(v), model_options)
    return c


def make_tiny_config(**overrides):
    """configs/vit_digits.py shrunk to a few-second run: width 32, 2 blocks, batch 16, 12 steps."""
    return shrink_config("vit_digits.py", {
        "model.width": "32", "model.depth": "2", "model.num_heads": "4", "model.mlp_dim": "64",
        "input.batch_size": "16", "input.eval_batch_size": "40", "input.num_threads": "0",
        "train.total_steps": "12", "train.log_every_steps": "1", "train.eval_every_steps": "6",
        "train.checkpoint_every_steps": "6", "train.tensorboard": "True", "optim.warmup_steps": "2",
    }, overrides)


def make_tiny_dino_config(n_local: int = 2, **overrides):
    """configs/dino_digits.py shrunk: width 32, 1 block, K = 64, ``n_local`` local crops (objective and
    data op together), batch 16, 4 steps with kNN and NCM probes on 200 training images."""
    return shrink_config("dino_digits.py", {
        "model.width": 32, "model.depth": 1, "model.num_heads": 2, "model.mlp_dim": 64, "model.out_dim": 64,
        "model.head_hidden_dim": 32, "model.head_bottleneck_dim": 16, "model.drop_path": 0.0,
        "objective.num_local_crops": n_local, "input.train_ops.0.num_local": n_local,
        "input.batch_size": 16, "input.eval_batch_size": 40, "input.num_workers": 0,
        "objective.probe": '["knn", "ncm"]',
        "objective.probe_train_examples": 200, "train.total_steps": 4, "train.eval_every_steps": 4,
        "train.checkpoint_every_steps": 2, "train.log_every_steps": 1, "optim.warmup_steps": 0,
        "train.tensorboard": False,
    }, overrides)


@pytest.fixture(scope="module")
def fast_compiles():
    """Skips most of XLA's CPU optimisation passes for one test module (they dominate the compile
    time of tiny programs compiled once each), then restores the setting for the rest of the session.
    Use with ``pytestmark = pytest.mark.usefixtures("fast_compiles")``."""
    old = bool(jax.config.values.get("jax_disable_most_optimizations", False))
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture
def tiny_config():
    return make_tiny_config


def pytest_configure(config):
    # A restore of a damaged checkpoint (tests/test_run_safety.py) leaves orbax's other array reads
    # unawaited; they are collected later, in whichever test runs next on that worker. Only those.
    config.addinivalue_line(
        "filterwarnings", "ignore:Exception ignored in. <coroutine object _read_array_index_and_device_put"
                          ":pytest.PytestUnraisableExceptionWarning")
