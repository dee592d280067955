"""The benchmark harness and the analytic FLOP count it reports MFU with."""
import importlib.util
import json

import jax
import jax.numpy as jnp
import pytest

import vitjax
from vitjax.training.flops import compiled_flops, device_peak_flops, vit_forward_matmul_flops

from conftest import REPO


def test_analytic_flops_match_xla_cost_analysis():
    m = vitjax.create_model("vit", variant=None, num_classes=10, image_size=32, patch_size=4, width=256,
                            depth=2, num_heads=4, mlp_dim=1024)
    x = jnp.zeros((4, 32, 32, 3))
    params = jax.eval_shape(m.init, jax.random.key(0), x)
    compiled = jax.jit(m.apply).lower(params, x).compile()
    xla = compiled_flops(compiled)
    analytic = 4 * vit_forward_matmul_flops(m)
    # XLA also counts softmax, norms, GELU and adds: a few percent above the matmuls.
    assert 1.0 <= xla / analytic < 1.1, (xla, analytic)


def test_vit_b16_forward_flops_match_published():
    # timm/fvcore: ViT-B/16 at 224 is 17.6 GMACs = 35.1 GFLOPs forward.
    assert abs(vit_forward_matmul_flops(vitjax.create_model("vit_b16")) / 1e9 - 35.1) < 0.3


def test_peak_table():
    assert device_peak_flops(jax.devices()[0]) is None       # CPU: unknown, so no MFU

    class Fake:
        device_kind = "NVIDIA H100 80GB HBM3"
    assert device_peak_flops(Fake()) == 989.4e12


def test_harness_runs_on_cpu_and_writes_json(tmp_path):
    pytest.importorskip("timm")
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "experiments" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--models", "vit_ti16", "--batch", "8", "--dtype", "float32", "--steps", "2",
                       "--warmup", "1", "--override", "depth=2", "--override", "image_size=64",
                       "--out", str(out)]) == 0
    jx, tm = json.loads(out.read_text())
    assert jx["framework"] == "vitjax" and tm["framework"] == "timm"
    assert jx["img_per_s"] > 0 and tm["img_per_s"] > 0 and tm["vitjax_speedup"] > 0
    assert 0.95 < jx["xla_over_analytic"] < 1.3
    assert jx["mfu"] is None and jx["devices"] == 8
