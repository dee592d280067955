"""Runs the device check's steps one by one, each in its own process with its own time limit, and
writes one JSON and one markdown table (``experiments/device_check.sh`` calls it).

    python experiments/device_check/run.py --out DIR            # the real run: <= 8 min on one GPU
    python experiments/device_check/run.py --out DIR --cpu-smoke   # every step at toy sizes, on CPU

A step that fails or runs out of time is recorded (status, the tail of its log) and the next one
starts: one broken benchmark loses none of the other figures. Each step's full log is
``DIR/<step>.log``; the results are ``DIR/device_check.json`` and ``DIR/device_check.md``.

Steps (figures of issue 20, item 7):

* ``smoke``: import, two train steps, each Pallas kernel vs its reference in fp32 and bf16
  (``experiments/device_check/smoke.py``);
* ``window_attention``, ``latent_cross_attention``: kernel vs XLA reference vs
  ``jax.nn.dot_product_attention`` (cuDNN where XLA picks it) at the benchmark shapes;
* ``vit_b16_vs_timm``: ViT-B/16 training img/s and MFU in bf16, vitjax vs timm + torch.compile on the
  same GPU (``experiments/benchmark.py``);
* ``mae_l16``: MAE ViT-L/16 step time, encoder on visible patches vs on all (``experiments/bench_mae.py``);
* ``swin_t_step``: Swin-T training step with the window kernel vs the XLA reference
  (``experiments/device_check/swin_step.py``);
* ``decoder_generate``: decoder tokens/s, KV-cached generation vs HF generate (``experiments/bench_generate.py``);
* ``attention_impls`` (issue 21's GPU figures, last so the steps above come first): ViT-B/16 bf16
  training step with ``model.attention`` = xla / cudnn / pallas, and the dense kernels vs XLA at 4k and
  16k tokens (``experiments/device_check/attention_impls.py``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXP = os.path.join(REPO, "experiments")


def steps(cpu_smoke: bool, out: str) -> list[tuple[str, list[str], int]]:
    """(name, argv, time limit in s). The limits of the real run add up to 7.5 minutes for issue 20's
    steps, 9.5 with issue 21's ``attention_impls``."""
    py = sys.executable
    if cpu_smoke:    # the same code paths at toy sizes: checks the script, not the speed
        return [
            ("smoke", [py, f"{EXP}/device_check/smoke.py", "--out", f"{out}/smoke.json"], 600),
            ("window_attention", [py, f"{EXP}/bench_window_attention.py", "--small", "--iters", "2"], 300),
            ("latent_cross_attention", [py, f"{EXP}/bench_latent_xattn.py", "--small", "--iters", "2"], 300),
            ("vit_b16_vs_timm", [py, f"{EXP}/benchmark.py", "--models", "vit_b16", "--batch", "2", "--steps", "2",
                                 "--warmup", "1", "--dtype", "float32", "--override", "depth=1",
                                 "--no-torch_compile", "--out", f"{out}/vit_b16_vs_timm.json"], 600),
            ("mae_l16", [py, f"{EXP}/bench_mae.py", "--variant", "Ti/16", "--batch", "2", "--image_size", "64", "--steps", "1",
                         "--dtype", "float32", "--run"], 600),
            ("swin_t_step", [py, f"{EXP}/device_check/swin_step.py", "--small"], 600),
            ("decoder_generate", [py, f"{EXP}/bench_generate.py", "--gpu", "--smoke"], 300),
            ("attention_impls", [py, f"{EXP}/device_check/attention_impls.py", "--small"], 300),
        ]
    return [
        ("smoke", [py, f"{EXP}/device_check/smoke.py", "--out", f"{out}/smoke.json"], 75),
        ("window_attention", [py, f"{EXP}/bench_window_attention.py"], 45),
        ("latent_cross_attention", [py, f"{EXP}/bench_latent_xattn.py"], 45),
        ("vit_b16_vs_timm", [py, f"{EXP}/benchmark.py", "--models", "vit_b16", "--batch", "256", "--steps", "20",
                             "--warmup", "5", "--dtype", "bfloat16", "--out", f"{out}/vit_b16_vs_timm.json"], 150),
        ("mae_l16", [py, f"{EXP}/bench_mae.py", "--variant", "L/16", "--batch", "64", "--steps", "10"], 50),
        ("swin_t_step", [py, f"{EXP}/device_check/swin_step.py"], 50),
        ("decoder_generate", [py, f"{EXP}/bench_generate.py", "--gpu"], 35),
        ("attention_impls", [py, f"{EXP}/device_check/attention_impls.py"], 120),
    ]


def json_lines(text: str) -> list:
    """The JSON objects/lists printed on their own lines (the benchmarks' machine-readable output)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line[:1] in "{[":
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows


def run_step(name: str, argv: list[str], limit: int, out: str) -> dict:
    log_path = os.path.join(out, f"{name}.log")
    t0 = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    with open(log_path, "w") as log:
        try:
            p = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                               timeout=limit)
            stdout, status = p.stdout, ("ok" if p.returncode == 0 else f"failed (exit {p.returncode})")
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            status = f"timed out after {limit}s"
        log.write("\n--- stdout ---\n" + stdout)
    rec = {"status": status, "seconds": round(time.time() - t0, 1), "command": " ".join(argv[1:]),
           "stdout_tail": stdout[-1500:], "results": json_lines(stdout)}
    for extra in (f"{name}.json",):          # steps that write their own JSON file
        path = os.path.join(out, extra)
        if os.path.isfile(path):
            with open(path) as fh:
                rec["results"] = [json.load(fh)]
    if status != "ok":
        with open(log_path) as fh:
            rec["log_tail"] = fh.read()[-3000:]
    if name == "smoke" and rec["results"]:
        broken = [k for k, v in rec["results"][0]["checks"].items() if not v["ok"]]
        if broken:
            rec["status"] = f"BROKEN: {', '.join(broken)}"
    return rec


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _rows(results: list) -> list[dict]:
    """Flattens the results of a step into a list of dicts (benchmark.py writes a list)."""
    out = []
    for r in results:
        out.extend(r if isinstance(r, list) else [r])
    return [r for r in out if isinstance(r, dict)]


def figures(name: str, rec: dict) -> str:
    """The headline numbers of one step, for the markdown table."""
    rows = _rows(rec["results"])
    try:
        if name == "smoke" and rows:
            checks = rows[0]["checks"]
            parts = [f"{k}: {'OK' if v['ok'] else 'BROKEN ' + v['error']}" for k, v in checks.items() if k != "versions"]
            for k in ("window_attention", "latent_cross_attention"):
                v = checks.get(k, {})
                if v.get("ok"):
                    parts.append(f"{k} err fp32 {v['float32_max_rel_err']:.1e} / bf16 {v['bfloat16_max_rel_err']:.1e}")
            return "; ".join(parts)
        if name == "vit_b16_vs_timm":
            vj = [r for r in rows if r.get("framework", "vitjax") == "vitjax" and "vitjax_speedup" not in r]
            tm = [r for r in rows if "vitjax_speedup" in r]
            s = ""
            if vj:
                s += f"vitjax {vj[0]['img_per_s']:.0f} img/s, MFU {_pct(vj[0].get('mfu'))}"
            if tm:
                s += (f"; timm{' + torch.compile' if tm[0].get('torch_compile') else ''} {tm[0]['img_per_s']:.0f} "
                      f"img/s, MFU {_pct(tm[0].get('mfu'))}; vitjax/timm {tm[0]['vitjax_speedup']:.2f}x")
            return s
        if name in ("window_attention", "latent_cross_attention"):
            parts = []
            for r in rows:
                sp = {k: v for k, v in r.items() if k.startswith("speedup")}
                ms = {k: round(v, 3) for k, v in r.items() if k.endswith("_ms")}
                parts.append(f"{r.get('shape', r.get('backend', ''))}: {sp or ms or 'compiled (CPU: no timing)'}")
            return "; ".join(parts)
        if name == "mae_l16" and rows:
            r = rows[-1]
            return (f"FLOP ratio {r.get('flops_ratio') or float('nan'):.2f}x, step-time ratio "
                    f"{r.get('speedup') or float('nan'):.2f}x, MFU {_pct(r.get('mae_mfu'))}")
        if name == "swin_t_step" and rows:
            r = rows[-1]
            return (f"kernel {1e3 * r['pallas_step_s']:.1f} ms vs reference {1e3 * r['reference_step_s']:.1f} ms "
                    f"per step: {r['speedup']:.2f}x")
        if name == "attention_impls" and rows:
            r = {k: v for k, v in rows[-1].items() if k not in ("part", "backend")}
            return ", ".join(f"{k} {v}" for k, v in r.items())
        if name == "decoder_generate" and rows:
            r = rows[-1]
            keys = [k for k in r if "tok" in k or "speedup" in k or "ratio" in k]
            return ", ".join(f"{k} {r[k]:.3g}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in keys)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        return f"(could not summarise: {type(e).__name__}: {e}; see the JSON)"
    return rec["stdout_tail"].strip().splitlines()[-1][:200] if rec["stdout_tail"].strip() else ""


def markdown(doc: dict) -> str:
    lines = [f"# Device check, {doc['date']}", "",
             f"Device: {doc['device']}; jax {doc['versions'].get('jax', '?')}, "
             f"flax {doc['versions'].get('flax', '?')}, torch {doc['versions'].get('torch', '?')}; "
             f"{doc['mode']}; total {doc['seconds']:.0f} s.", "",
             "| step | status | seconds | figures |", "| --- | --- | ---: | --- |"]
    for name, rec in doc["steps"].items():
        fig = figures(name, rec).replace("|", "/")
        lines.append(f"| {name} | {rec['status']} | {rec['seconds']:.0f} | {fig} |")
    goals = doc.get("goals")
    if goals:
        lines += ["", "Goals (issue 20): " + "; ".join(f"{k}: {v}" for k, v in goals.items())]
    return "\n".join(lines) + "\n"


def goals(steps_doc: dict) -> dict:
    """Whether ViT-B/16 reached >= 55% MFU and >= 1.3x timm, said plainly (None: not measured)."""
    rows = _rows(steps_doc.get("vit_b16_vs_timm", {}).get("results", []))
    vj = [r for r in rows if "vitjax_speedup" not in r]
    tm = [r for r in rows if "vitjax_speedup" in r]
    mfu = vj[0].get("mfu") if vj else None
    ratio = tm[0]["vitjax_speedup"] if tm else None
    return {"ViT-B/16 MFU >= 55%": "not measured" if mfu is None else f"{'met' if mfu >= 0.55 else 'missed'} "
                                                                   f"({_pct(mfu)})",
            "ViT-B/16 >= 1.3x timm": "not measured" if ratio is None else
            f"{'met' if ratio >= 1.3 else 'missed'} ({ratio:.2f}x)"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-smoke", dest="cpu_smoke", action="store_true",
                    help="every step at toy sizes (checks the script on a machine without a GPU)")
    ap.add_argument("--only", default=None, help="comma list of steps to run")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "mode": "CPU smoke (toy sizes, not a measurement)" if args.cpu_smoke else "full",
           "host": platform.node(), "steps": {}}
    for name, argv, limit in steps(args.cpu_smoke, args.out):
        if args.only and name not in args.only.split(","):
            continue
        print(f"== {name} (limit {limit}s)", flush=True)
        rec = run_step(name, argv, limit, args.out)
        doc["steps"][name] = rec
        print(f"   {rec['status']} in {rec['seconds']}s: {figures(name, rec)[:400]}", flush=True)
    smoke = _rows(doc["steps"].get("smoke", {}).get("results", []))
    ver = smoke[0]["checks"].get("versions", {}) if smoke else {}
    doc["versions"] = ver
    doc["device"] = ", ".join(sorted(set(ver.get("devices", [])))) or "unknown (the smoke step did not report)"
    doc["seconds"] = time.time() - t0
    doc["goals"] = goals(doc["steps"]) if not args.cpu_smoke else {}
    with open(os.path.join(args.out, "device_check.json"), "w") as fh:
        json.dump(doc, fh, indent=1, default=str)
    md = markdown(doc)
    with open(os.path.join(args.out, "device_check.md"), "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
