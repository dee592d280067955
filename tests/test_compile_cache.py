"""The persistent compilation cache (vitjax.training.compile_cache): where it goes, that compiled
programs land in it and are read back, and that it can be turned off. The speed-up of a second start is
measured by experiments/bench_compile_cache.py, not here."""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitjax import config_defaults
from vitjax.training import compile_cache


@pytest.fixture
def cache_off_afterwards():
    yield
    compile_cache.configure({"compile_cache_dir": ""})


def test_folder_follows_config_then_env_then_default(monkeypatch, tmp_path):
    assert config_defaults.default("train", "compile_cache_dir") is None
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compile_cache.resolve_dir(None) == str(tmp_path / ".cache" / "vitjax" / "jax")
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "env"))
    assert compile_cache.resolve_dir(None) == str(tmp_path / "env")
    assert compile_cache.resolve_dir("~/c") == str(tmp_path / "c")
    assert compile_cache.resolve_dir("") is None
    monkeypatch.setenv(compile_cache.ENV, "")
    assert compile_cache.resolve_dir(None) is None


def test_the_test_session_never_writes_to_home():
    assert os.environ[compile_cache.ENV] == ""      # tests/conftest.py


def test_compiled_programs_are_written_and_read_back(monkeypatch, tmp_path, cache_off_afterwards, caplog):
    monkeypatch.setattr(compile_cache, "MIN_COMPILE_SECONDS", 0.0)    # tiny programs compile in ms
    caplog.set_level(logging.INFO, "vitjax")
    folder = tmp_path / "cache"
    assert compile_cache.configure({"compile_cache_dir": str(folder)}) == str(folder)
    assert f"compile cache: {folder}" in caplog.text
    f = lambda x: jnp.sin(x) @ x.T + 3.0  # noqa: E731
    x = jnp.asarray(np.arange(12.0).reshape(3, 4), jnp.float32)
    first = jax.jit(f).lower(x).compile()
    entries = sorted(os.listdir(folder))
    assert entries, "nothing written to the cache"
    # a new jit of the same program (as in a new process) is read from the cache: nothing new is written
    events = []
    jax.monitoring.register_event_listener(   # stays registered: keep only the events asked about
        lambda name, **kw: events.append(name) if name.startswith("/jax/compilation_cache/") else None)
    second = jax.jit(lambda x: jnp.sin(x) @ x.T + 3.0).lower(x).compile()
    assert "/jax/compilation_cache/cache_hits" in events
    assert sorted(os.listdir(folder)) == entries
    np.testing.assert_array_equal(first(x), second(x))

    assert compile_cache.configure({"compile_cache_dir": ""}) is None
    assert not jax.config.values["jax_enable_compilation_cache"]
    jax.jit(lambda x: jnp.cos(x) * 2.0).lower(x).compile()
    assert sorted(os.listdir(folder)) == entries


def test_unwritable_folder_warns_and_compiles_without(tmp_path, cache_off_afterwards, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, "vitjax"):
        assert compile_cache.configure({"compile_cache_dir": str(blocker / "sub")}) is None
    assert f"compile cache: cannot create {blocker / 'sub'}" in caplog.text
