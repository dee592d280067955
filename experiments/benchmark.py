"""Training-throughput benchmark: vitjax vs timm (PyTorch) on the same model, batch and device.

    python experiments/benchmark.py --models vit_b16,vit_l16 --batch 256 --dtype bfloat16 --out bench.json

For each model: steady-state step time (median over --steps after --warmup), images/s, model
TFLOP/s and MFU. Model FLOPs = 3 x forward matmul FLOPs, counted analytically
(``vitjax.training.flops.vit_train_flops``) and cross-checked against XLA's cost analysis of the compiled step;
the peak comes from ``vitjax.training.flops.PEAK_FLOPS`` by device kind (MFU is omitted where unknown, e.g.
CPU). Data is synthetic and already on device, so this measures the model and optimizer, not input.
The PyTorch side runs timm's VisionTransformer built to the same shape, with bf16 autocast, fused
AdamW where available and torch.compile (on by default on GPU, --torch_compile to force), in the same
process, and the JSON gets the vitjax/timm speed ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def bench_vitjax(name: str, batch: int, dtype: str, steps: int, warmup: int, remat: str, mesh: dict,
                 overrides: dict | None = None) -> dict:
    import jax
    from vitjax.config import load_config_file
    from vitjax.training.flops import device_peak_flops, vit_train_flops
    from vitjax.training.trainer import Trainer

    cfg = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "vit_b16_imagenet.py"))
    with cfg.unlocked():
        cfg.model.name = name.split("_")[0] if "_" in name else name
        variant = {"vit_b16": "B/16", "vit_l16": "L/16", "vit_s16": "S/16", "vit_ti16": "Ti/16",
                   "vit_h14": "H/14", "vit_g14": "g/14"}.get(name)
        cfg.model.variant = variant
        cfg.model.update(dict(dtype=dtype, remat=remat, **(overrides or {})))
        cfg.input.batch_size = batch
        cfg.mesh.update(mesh)
        cfg.train.total_steps = 10_000
    trainer = Trainer(cfg, "/tmp/vitjax_bench", load_data=False)
    abstract = trainer.setup_state()
    state = trainer.init_state()
    example = trainer.objective.example_batch(trainer.model, batch)
    shardings = trainer.batches.batch_sharding(example)
    rng = np.random.default_rng(0)
    batch_arrays = {
        "image": jax.device_put(rng.normal(size=example["image"].shape).astype(np.float32), shardings["image"]),
        "label": jax.device_put(rng.integers(0, trainer.model.num_classes, size=example["label"].shape)
                                .astype(np.int32), shardings["label"]),
    }
    step = trainer.compiled_train_step(batch_arrays)
    for _ in range(warmup):
        state, metrics = step(state, batch_arrays)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch_arrays)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    n_dev = trainer.mesh.size
    analytic = vit_train_flops(trainer.model, batch)
    xla = trainer.flops_per_device * n_dev if trainer.flops_per_device else None
    peak = device_peak_flops()
    out = dict(framework="vitjax", model=name, batch=batch, dtype=dtype, remat=remat, devices=n_dev,
               device_kind=jax.devices()[0].device_kind, step_time_s=dt,
               step_time_min_s=min(times), img_per_s=batch / dt,
               model_flops_per_step=analytic, xla_flops_per_step=xla,
               xla_over_analytic=(xla / analytic) if xla else None,
               tflops_per_device=analytic / dt / n_dev / 1e12,
               mfu=(analytic / dt / n_dev / peak) if peak else None,
               compile_s=trainer.compile_seconds, params=int(sum(np.prod(a.shape) for a in jax.tree.leaves(abstract.params))))
    del state
    return out


def bench_timm(name: str, batch: int, dtype: str, steps: int, warmup: int, compile_model: bool | None,
               overrides: dict | None = None) -> dict:
    import torch
    import vitjax
    from vitjax.interop.vit import timm_config
    from vitjax.training.flops import vit_train_flops

    import timm

    model_j = vitjax.create_model(name, num_classes=1000, **(overrides or {}))
    args = timm_config(model_j)["model_args"]
    args = {k: v for k, v in args.items() if k not in ("act_layer",)}
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    net = timm.create_model("vit_base_patch16_224", pretrained=False, **args).to(device).train()
    compile_model = cuda if compile_model is None else compile_model
    if compile_model:
        net = torch.compile(net)
    try:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
        fused = True
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        fused = False
    s = model_j.image_size
    x = torch.randn(batch, model_j.in_channels, s, s, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    amp = torch.bfloat16 if dtype == "bfloat16" else None

    def one_step():
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t_compile = time.perf_counter()
    for _ in range(warmup):
        one_step()
    if cuda:
        torch.cuda.synchronize()
    t_compile = time.perf_counter() - t_compile
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one_step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    flops = vit_train_flops(model_j, batch)
    from vitjax.training.flops import PEAK_FLOPS
    kind = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK_FLOPS.items() if kind.startswith(k)), None)
    return dict(framework="timm", model=name, batch=batch, dtype=dtype, torch_compile=bool(compile_model),
                fused_adamw=fused, device_kind=kind, step_time_s=dt, step_time_min_s=min(times),
                img_per_s=batch / dt, model_flops_per_step=flops, tflops_per_device=flops / dt / 1e12,
                mfu=(flops / dt / peak) if peak else None, warmup_s=t_compile, torch_version=torch.__version__)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit_b16,vit_l16")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--remat", default="none")
    p.add_argument("--fsdp", type=int, default=1, help="fsdp axis size (data axis takes the rest)")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="also run timm in PyTorch (default on)")
    p.add_argument("--torch_compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--override", action="append", default=[],
                   help="model override KEY=VALUE for both frameworks, e.g. depth=2 (for quick checks)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    overrides = {}
    for kv in args.override:
        k, v = kv.split("=", 1)
        overrides[k] = int(v) if v.lstrip("-").isdigit() else v
    results = []
    for name in args.models.split(","):
        r = bench_vitjax(name, args.batch, args.dtype, args.steps, args.warmup, args.remat,
                         {"data": -1, "fsdp": args.fsdp}, overrides)
        results.append(r)
        print(f"vitjax {name}: {r['step_time_s'] * 1e3:.1f} ms/step, {r['img_per_s']:.1f} img/s, "
              f"{r['tflops_per_device']:.2f} TFLOP/s/device, MFU {_pct(r['mfu'])}, "
              f"XLA/analytic FLOPs {r['xla_over_analytic'] or float('nan'):.3f}", flush=True)
        if args.torch:
            t = bench_timm(name, args.batch, args.dtype, args.steps, args.warmup, args.torch_compile, overrides)
            t["vitjax_speedup"] = t["step_time_s"] / r["step_time_s"]
            results.append(t)
            print(f"timm   {name}: {t['step_time_s'] * 1e3:.1f} ms/step, {t['img_per_s']:.1f} img/s, "
                  f"MFU {_pct(t['mfu'])} (compile={t['torch_compile']}, fused AdamW={t['fused_adamw']}); "
                  f"vitjax/timm speed = {t['vitjax_speedup']:.2f}x", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


def _pct(x):
    return "n/a (unknown peak)" if x is None else f"{100 * x:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
