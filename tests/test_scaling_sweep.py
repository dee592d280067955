"""Scaling sweeps: planning (grid/star), a micro sweep through the real Trainer (records, parameter
counts against a hand count, D, C, resumption, a diverged run), and the analysis on fabricated records."""
import json
import math
import os
import warnings

import jax
import ml_collections
import numpy as np
import pytest

from vitjax.config import ConfigError
from vitjax.scaling import analysis as an
from vitjax.scaling import sweep as sw

from conftest import REPO

ONE = jax.devices()[:1]


def micro_sweep_config(**changes):
    """Three tiny runs on digits: widths 8 and 16 for 4 steps, and width 8 at an absurd learning rate
    (1e30: the first update blows the weights to ~1e30, the next loss is NaN)."""
    c = dict(
        base_config=str(REPO / "configs" / "vit_digits.py"),
        overrides=["input.batch_size=16", "input.eval_batch_size=120", "input.num_threads=0",
                   "train.tensorboard=False", "model.drop_path=0.0"],
        mode="grid",
        grid=[dict(width=[8, 16], depth=[1], steps=[4]), dict(width=[8], depth=[1], steps=[4], lr=[1e30])],
        head_dim=32, mlp_ratio=2.0, evals_per_run=2, checkpoints_per_run=2, logs_per_run=4,
        max_warmup_fraction=0.25)
    c.update(changes)
    return ml_collections.ConfigDict(c)


def vit_param_count(w: int, depth: int, mlp: int, patch=4, channels=1, tokens=16, classes=10):
    """Hand count for the digits ViT (GAP pooling, learned position embeddings, qkv bias)."""
    embed = (patch * patch * channels * w + w) + tokens * w + (w * classes + classes)   # patch, pos, head
    block = 2 * w + (3 * w * w + 3 * w) + (w * w + w) + 2 * w + (w * mlp + mlp) + (mlp * w + w)
    return embed + depth * block + 2 * w, depth * block + 2 * w                        # + final norm


# --------------------------------------------------------------------------------------- planning

def test_grid_and_star_plans():
    base = sw.load_base_config(micro_sweep_config())
    specs = sw.plan(micro_sweep_config(), base)
    assert [s.name for s in specs] == ["w8_d1_st4", "w16_d1_st4", "w8_d1_st4_lr1e+30"]
    ov = specs[1].overrides
    assert ov["model.width"] == 16 and ov["model.mlp_dim"] == 32 and ov["model.num_heads"] == 1
    assert ov["train.total_steps"] == 4 and ov["train.eval_every_steps"] == 2
    assert ov["optim.warmup_steps"] == 1          # 50 in the base config, capped at 25% of 4 steps

    star = micro_sweep_config(mode="star", star=dict(center=dict(width=32, depth=2, epochs=2.0),
                                                     axes=dict(width=[16, 32, 64], depth=[1, 4], epochs=[1.0])))
    names = [s.name for s in sw.plan(star, base)]
    assert names == ["w32_d2_ep2", "w16_d2_ep2", "w64_d2_ep2", "w32_d1_ep2", "w32_d4_ep2", "w32_d2_ep1"]
    # epochs follow the Trainer's rule: ceil(epochs * (1437 // 16))
    assert sw.plan(star, base)[-1].overrides["train.total_steps"] == 89


@pytest.mark.parametrize("changes, message", [
    (dict(grid=dict(widht=[8])), r"unknown sweep axis \['widht'\].*axes are"),
    (dict(grid=dict(width=[8], steps=[4], epochs=[1.0])), r"only one of \['images', 'epochs', 'steps'\]"),
    (dict(grid=dict(width=[48], num_heads=[5], steps=[4])), r"width 48 is not divisible by 5 heads"),
    (dict(grid=dict(width=[])), r"grid.width is an empty list"),
    (dict(mode="spiral"), r"sweep mode 'spiral'"),
    (dict(star=dict(center=dict(width=8), axes=dict(depth=[1])), mode="star"), r"star.axes \['depth'\] have no value"),
])
def test_bad_sweep_configs_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        sw.plan(micro_sweep_config(**changes))


def test_count_params_matches_hand_count():
    import jax.numpy as jnp
    from vitjax.models import create_model
    from flax import linen as nn
    model = create_model("vit", variant=None, num_classes=10, image_size=16, patch_size=4, in_channels=1,
                         width=24, depth=3, num_heads=2, mlp_dim=40, pool="gap", posemb="learned")
    params = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 1))))["params"])
    assert sw.count_params(params) == vit_param_count(24, 3, 40)


# ------------------------------------------------------------------------------------ micro sweep

@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep"))
    log: list[str] = []
    records = sw.run_sweep(micro_sweep_config(), out, devices=ONE, log=log.append)
    return out, records, log


def test_records_hold_counts_data_compute_and_curves(micro):
    out, records, log = micro
    assert [r["name"] for r in records] == ["w8_d1_st4", "w16_d1_st4", "w8_d1_st4_lr1e+30"]
    for r, w in zip(records[:2], (8, 16)):
        assert r["status"] == "finished"
        assert (r["N"], r["N_nonembed"]) == vit_param_count(w, 1, 2 * w)
        assert r["D"] == 4 * 16 and r["steps"] == 4 and r["tokens"] == 4 * 16 * 16
        assert r["C"] > 0 and r["C"] == pytest.approx(r["C_per_step"] * 4)
        assert r["C_6ND"] == 6 * r["N_nonembed"] * r["tokens"]
        # XLA's count covers attention, embeddings and the optimizer too: same order as 6ND, not less.
        assert 0.5 < r["C"] / r["C_6ND"] < 20
        assert [p["step"] for p in r["curve"]] == [2, 4] and [p["images"] for p in r["curve"]] == [32, 64]
        assert r["loss"] == r["curve"][-1]["loss"] > 0 and 0 <= r["top1"] <= 1
        assert r["best_loss"] == min(p["loss"] for p in r["curve"])
        assert [p["step"] for p in r["train_curve"]] == [1, 2, 3, 4]
        assert r["wall_s"] > r["compile_s"] > 0 and r["resumed_from_step"] is None
        # the standard error of the eval loss, from an extra pass that keeps per-example losses
        assert r["eval_examples"] == 360 and r["loss_se_pass_mean"] == pytest.approx(r["loss"], rel=1e-5)
        assert r["loss_se"] == pytest.approx(r["loss_std"] / math.sqrt(360)) and 0 < r["loss_se"] < 0.1 * r["loss"]
    assert records[1]["C"] > records[0]["C"]
    bad = records[2]
    assert bad["status"] == "diverged" and bad["loss"] is None and "NaN/Inf at step" in bad["error"]
    assert bad["loss_se"] is None
    assert any("DIVERGED" in line and bad["name"] in line for line in log)
    lines = open(os.path.join(out, "runs.jsonl")).read().splitlines()
    assert [json.loads(x) for x in lines] == records
    assert json.load(open(os.path.join(out, "sweep.json")))["runs"][0]["name"] == "w8_d1_st4"


def test_rerun_trains_nothing_and_rebuilds_a_lost_record(micro):
    out, records, _ = micro
    metrics = os.path.join(out, "runs", "w8_d1_st4", "metrics.jsonl")
    before = open(metrics).read()
    log: list[str] = []
    again = sw.run_sweep(micro_sweep_config(), out, devices=ONE, log=log.append)
    assert again == records
    assert sum("skipped" in line for line in log) == 3 and not any("training" in line for line in log)
    invocations = json.load(open(os.path.join(out, "sweep.json")))["invocations"]
    assert [i["trained"] for i in invocations] == [3]          # a rerun that trains nothing adds no entry
    # A run whose record was lost (e.g. killed right after its last checkpoint) is complete in its
    # workdir: the Trainer resumes at the last step, trains nothing, and the record comes back the same.
    os.remove(os.path.join(out, "runs", "w8_d1_st4", sw.RECORD_FILE))
    again = sw.run_sweep(micro_sweep_config(), out, devices=ONE, log=log.append)
    assert open(metrics).read() == before
    skip = ("wall_s", "compile_s", "se_pass_s", "resumed_from_step", "loadavg_1m", "finished_at")
    assert {k: v for k, v in again[0].items() if k not in skip} == {k: v for k, v in records[0].items() if k not in skip}
    assert again[0]["resumed_from_step"] == 4


def test_a_changed_config_is_not_silently_reused(micro):
    out, _, _ = micro
    changed = micro_sweep_config(overrides=micro_sweep_config().overrides + ["optim.weight_decay=0.1"])
    with pytest.raises(ConfigError, match=r"w8_d1_st4.*trained with a different config"):
        sw.run_sweep(changed, out, devices=ONE, log=lambda s: None)


def test_too_few_runs_is_a_clear_error_listing_the_diverged_run(micro):
    out, records, _ = micro
    with pytest.raises(ValueError, match=r"no scaling law could be fitted: 2 of 3 runs are valid .*"
                                         r"w8_d1_st4_lr1e\+30: diverged.*fit_chinchilla: 2 valid points remain"):
        an.analyze_records(records, out, n_boot=0, plots=False, log=lambda s: None)


# ------------------------------------------------------------------------ analysis on fabricated runs

TRUE = dict(E=0.12, A=30.0, B=400.0, alpha=0.45, beta=0.55)


def fabricated_records(noise=0.003, seed=0):
    """A 5 x 5 (N, D) grid drawn from a known L(N, D), C = 100 N D, plus runs the analysis must drop."""
    rng = np.random.default_rng(seed)
    recs = []
    for N in np.geomspace(4e3, 3e5, 5):
        for D in np.geomspace(3e3, 3e4, 5):
            L = (TRUE["E"] + TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"]) * math.exp(rng.normal(0, noise))
            recs.append({"name": f"N{N:.0f}_D{D:.0f}", "status": "finished", "N_nonembed": N, "N": N * 1.2, "D": D,
                         "C": 100 * N * D, "loss": L, "top1": 0.9, "C_6ND": 96 * N * D, "epochs": D / 1437,
                         "curve": [{"images": D / 2, "loss": 1.5 * L}, {"images": D, "loss": L}]})
    # The same (N, D) at a worse learning rate: the fit must keep the better run.
    recs.append({**recs[0], "name": "lr_worse", "loss": recs[0]["loss"] * 1.5})
    recs.append({"name": "boom", "status": "diverged", "error": "loss or gradient norm is NaN/Inf at step 7. Stopped",
                 "N_nonembed": 1e4, "D": 1e4, "C": 1e10, "loss": None})
    recs.append({**recs[3], "name": "nan_loss", "loss": float("nan")})
    recs.append({**recs[4], "name": "zero_compute", "C": 0.0})
    return recs


# Fewer L-BFGS-B starts than the defaults (243/108/80), to keep the test fast; the full grids are
# exercised by tests/test_scaling_fit.py.
SMALL_GRIDS = {"chinchilla": {"a": (0.0, 5.0), "b": (0.0, 5.0, 10.0), "e": (-2.0, 0.0), "alpha": (0.5,), "beta": (0.5,)},
               "compute_saturating": {"la": (-2.0, 0.0), "b": (0.5,), "lc": (-2.0, 0.0), "ld": (-8.0, -2.0)},
               "compute_power_law": {"a": (-2.0, 0.0), "e": (-2.0, 0.0), "alpha": (0.25, 0.5)}}


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("analysis"))
    log: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # every exclusion is reported by the analysis, not as a warning
        doc = an.analyze_records(fabricated_records(), out, n_boot=30, holdout=3, log=log.append,
                                 init_grids=SMALL_GRIDS)
    return out, doc, log


def test_analysis_excludes_bad_runs_with_a_message(fabricated):
    _, doc, log = fabricated
    excluded = {e["name"]: e["reason"] for e in doc["excluded_runs"]}
    assert set(excluded) == {"boom", "nan_loss", "zero_compute"}
    assert excluded["boom"].startswith("diverged (loss or gradient norm is NaN/Inf at step 7")
    assert "loss is missing/NaN" in excluded["nan_loss"] and "C is 0.0" in excluded["zero_compute"]
    assert "excluded 3 of 29 runs" in log[0] and "boom: diverged" in log[0]
    assert doc["fits"]["chinchilla"]["n_points"] == 25     # 25 distinct (N, D): the lr duplicate is folded


def test_analysis_recovers_the_law_and_predicts_held_out_runs(fabricated):
    _, doc, _ = fabricated
    chin = doc["fits"]["chinchilla"]
    for k in ("alpha", "beta"):
        assert chin["params"][k] == pytest.approx(TRUE[k], rel=0.1)
        lo, hi = chin["ci"][k]
        assert lo <= chin["params"][k] <= hi
    co = doc["compute_optimal"]
    assert co["k_flops_per_param_image"] == pytest.approx(100.0)
    assert co["a"] == pytest.approx(chin["params"]["beta"] / (chin["params"]["alpha"] + chin["params"]["beta"]))
    ho = doc["holdout_check"]
    assert len(ho["held_out"]) == 3 and "N300000_D30000" in ho["held_out"]
    assert ho["fits"]["chinchilla"]["max_abs_rel_error"] < 0.02
    assert doc["flops"]["C_xla_over_6ND"]["median"] == pytest.approx(100 / 96)
    # the frontier is monotone: more compute, lower loss
    rows = {r["name"]: r for r in doc["runs"]["table"]}
    front = [rows[n] for n in doc["compute_frontier"]]
    assert all(a["C"] < b["C"] and a["loss"] > b["loss"] for a, b in zip(front, front[1:]))
    assert {"compute_saturating", "compute_power_law"} <= set(doc["fits"])


def test_analysis_writes_report_and_plots(fabricated):
    out, doc, _ = fabricated
    md = open(os.path.join(out, "report.md")).read()
    for needle in ("## chinchilla", "## Hold-out check", "## Compute-optimal frontier", "boom: diverged",
                   "![learning_curves](plots/learning_curves.png)"):
        assert needle in md
    assert json.load(open(os.path.join(out, "report.json")))["holdout_check"]["held_out"] == doc["holdout_check"]["held_out"]
    for name in ("loss_vs_compute", "isoloss", "residuals_chinchilla", "learning_curves",
                 "loss_vs_compute_saturating", "residuals_saturating"):
        path = os.path.join(out, doc["plots"][name])
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000


def test_compute_frontier_and_holdout_split():
    C = np.array([1, 2, 2, 3, 4, 5.0])
    L = np.array([5, 4, 3, 3.5, 2, 2.5])
    assert an.compute_frontier(C, L).tolist() == [True, False, True, False, True, False]
    assert an.holdout_split(C, 2).tolist() == [False, False, False, False, True, True]


def test_unknown_law_in_init_grids_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"init_grids: unknown laws \['chinchila'\]"):
        an.analyze_records(fabricated_records(), str(tmp_path), init_grids={"chinchila": "paper"}, plots=False)


def test_demo_config_plans_its_documented_runs():
    """configs/scaling_digits.py stays loadable and plans what docs/scaling.md describes."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(REPO / "experiments" / "scaling" / "sweep.py"), "--config",
                          str(REPO / "configs" / "scaling_digits.py"), "--out", "/nonexistent", "--dry_run"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "16 runs, 7500 steps in all"
    line = next(x for x in out.splitlines() if " w64_d2_img128000_lr0.0085 " in x)
    assert "train.total_steps=1000 " in line and "model.num_heads=4 " in line


def test_analysis_with_a_known_floor_reports_both_holdout_fits(tmp_path):
    doc = an.analyze_records(fabricated_records(), str(tmp_path), n_boot=0, plots=False, e_min=0.13,
                             init_grids=SMALL_GRIDS, log=lambda s: None)
    assert doc["fits"]["chinchilla"]["params"]["E"] >= 0.13 * (1 - 1e-9)      # true E is 0.12: binding
    ho = doc["holdout_check"]["fits"]
    assert ho["chinchilla"]["params"]["E"] >= 0.13 * (1 - 1e-9)
    assert ho["chinchilla_e_free"]["params"]["E"] < 0.13
    assert doc["settings"]["e_min"] == 0.13
    assert "E >= 0.13" in open(tmp_path / "report.md").read()
