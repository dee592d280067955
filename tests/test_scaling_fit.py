"""Tests for vitjax.scaling: recovery of known laws from synthetic data, bootstrap coverage,
compute-optimal allocation, input validation, plots and report.

Everything is numpy/scipy on tiny arrays with fixed seeds; the whole file takes ~15 s on one core
(the Chinchilla fit + 100 warm-started bootstrap refits dominate and are shared via a fixture).
"""
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

# The repo has no packaging file yet, and plain `pytest` puts only tests/ on sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from vitjax.scaling import (  # noqa: E402
    CHINCHILLA_DEFAULT_GRID,
    CHINCHILLA_PAPER_GRID,
    ChinchillaFit,
    ExcludedPointsWarning,
    bootstrap,
    compute_optimal,
    fit_chinchilla,
    fit_power_law,
    fit_saturating,
    plot_isoloss,
    plot_learning_curves,
    plot_loss_vs_compute,
    plot_residuals,
    with_bootstrap,
    write_report,
)

# Hoffmann et al. 2022's own Approach-3 fit (Sec. 3.3, App. D.2).
TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
NOISE = 0.005   # multiplicative, ~0.5%


def chinchilla_law(N, D, p=TRUE):
    return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


@pytest.fixture(scope="module")
def chinchilla_data():
    rng = np.random.default_rng(0)
    N, D = np.meshgrid(np.logspace(6, 9, 6), np.logspace(8, 11, 6), indexing="ij")
    N, D = N.ravel(), D.ravel()
    loss = chinchilla_law(N, D) * np.exp(rng.normal(0.0, NOISE, N.size))
    return N, D, loss


@pytest.fixture(scope="module")
def chinchilla_boot(chinchilla_data):
    # Full fit from the default (coarse) grid, then 100 bootstrap refits, each warm-started from the
    # full-data optimum (with_bootstrap's default): ~5 s instead of ~100 x 4 s.
    return with_bootstrap(fit_chinchilla, *chinchilla_data, n_boot=100, seed=0)


# -------------------------------------------------------------------------------------------- (a)

def test_chinchilla_recovers_exponents(chinchilla_boot):
    fit = chinchilla_boot
    assert fit.n_points == 36 and fit.excluded == ()
    assert fit.n_starts == np.prod([len(v) for v in CHINCHILLA_DEFAULT_GRID.values()])
    for k in ("alpha", "beta"):
        assert abs(fit.params[k] / TRUE[k] - 1) < 0.05, (k, fit.params[k])


def test_chinchilla_bootstrap_intervals_cover_truth(chinchilla_boot):
    ci = chinchilla_boot.ci
    assert ci.level == 0.95 and ci.n_failed == 0
    assert set(ci) >= set(TRUE) | {"a_opt", "b_opt"}
    for k, v in TRUE.items():
        lo, hi = ci[k]
        assert lo < chinchilla_boot.params[k] < hi, (k, lo, chinchilla_boot.params[k], hi)
        assert lo <= v <= hi, f"true {k}={v} outside 95% bootstrap CI [{lo:.4g}, {hi:.4g}]"
    # Derived compute-optimal exponent: true a = beta/(alpha+beta) = 0.4516.
    lo, hi = ci["a_opt"]
    assert lo <= TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]) <= hi


def test_chinchilla_residuals_at_noise_level(chinchilla_data, chinchilla_boot):
    N, D, L = chinchilla_data
    r = chinchilla_boot.log_residuals(N, D, loss=L)    # what the Huber objective saw
    assert np.sqrt(np.mean(r ** 2)) < 2 * NOISE


def test_warm_start_reaches_same_optimum(chinchilla_data, chinchilla_boot):
    refit = fit_chinchilla(*chinchilla_data, init_grid=chinchilla_boot)
    assert refit.n_starts == 1
    assert refit.objective <= chinchilla_boot.objective * (1 + 1e-6)
    np.testing.assert_allclose(refit.alpha, chinchilla_boot.alpha, rtol=1e-4)


def test_paper_grid_is_the_papers():
    # Hoffmann et al. 2022, App. D.2: 6 x 6 x 5 x 5 x 5 initialisations.
    assert CHINCHILLA_PAPER_GRID["alpha"] == (0.0, 0.5, 1.0, 1.5, 2.0)
    assert CHINCHILLA_PAPER_GRID["e"] == (-1.0, -0.5, 0.0, 0.5, 1.0)
    assert CHINCHILLA_PAPER_GRID["a"] == (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    assert np.prod([len(v) for v in CHINCHILLA_PAPER_GRID.values()]) == 4500
    for k, v in CHINCHILLA_DEFAULT_GRID.items():
        assert set(v) <= set(CHINCHILLA_PAPER_GRID[k])


# -------------------------------------------------------------------------------------------- (b)

def test_power_law_recovery():
    rng = np.random.default_rng(1)
    E, A, alpha = 0.8, 50.0, 0.3
    x = np.logspace(6, 10, 15)
    y = (E + A * x ** -alpha) * np.exp(rng.normal(0.0, NOISE, x.size))
    fit = with_bootstrap(fit_power_law, x, y, n_boot=100, seed=0)
    assert abs(fit.alpha / alpha - 1) < 0.05
    assert abs(fit.E / E - 1) < 0.05
    for k, v in {"E": E, "A": A, "alpha": alpha}.items():
        lo, hi = fit.ci[k]
        assert lo <= v <= hi, (k, v, lo, hi)
    np.testing.assert_allclose(fit.predict(x), E + A * x ** -alpha, rtol=0.01)


# -------------------------------------------------------------------------------------------- (c)

@pytest.mark.parametrize("c_scale", [1.0, 1e17])   # core-days or FLOPs: the fit is unit-free
def test_saturating_recovery(c_scale):
    rng = np.random.default_rng(2)
    a, b, c, d = 0.35, 0.4, 0.08, 2.0
    C = np.logspace(0, 4, 20)
    err = (a * (C + d) ** -b + c) * np.exp(rng.normal(0.0, NOISE, C.size))
    fit = fit_saturating(C * c_scale, err)
    assert fit.a > 0 and fit.b > 0 and fit.c > 0 and fit.d > 0
    assert abs(fit.b / b - 1) < 0.05
    assert abs(fit.c / c - 1) < 0.05
    assert abs(fit.d / (d * c_scale) - 1) < 0.25        # d is the least constrained parameter
    np.testing.assert_allclose(fit.predict(C * c_scale), a * (C + d) ** -b + c, rtol=0.01)


# -------------------------------------------------------------------------------------------- (d)

def test_compute_optimal_matches_brute_force():
    fit = ChinchillaFit(**TRUE, objective=0.0, n_points=0)
    Cs = np.array([1e18, 1e21, 1e24])
    N_opt, D_opt, a_, b_ = compute_optimal(fit, Cs)
    s = TRUE["alpha"] + TRUE["beta"]
    assert a_ == pytest.approx(TRUE["beta"] / s) and b_ == pytest.approx(TRUE["alpha"] / s)
    np.testing.assert_allclose(6.0 * N_opt * D_opt, Cs, rtol=1e-10)   # on the budget
    for C, n_star, d_star in zip(Cs, N_opt, D_opt):
        res = optimize.minimize_scalar(lambda lnN: fit.predict(np.exp(lnN), C / (6.0 * np.exp(lnN))),
                                       bounds=(np.log(1e3), np.log(C / 6.0 / 1e3)), method="bounded",
                                       options={"xatol": 1e-10})
        n_bf = np.exp(res.x)
        assert n_star == pytest.approx(n_bf, rel=0.01)
        assert d_star == pytest.approx(C / (6.0 * n_bf), rel=0.01)


# -------------------------------------------------------------------------------------------- (e)

def test_bad_points_excluded_with_warning_naming_them():
    rng = np.random.default_rng(3)
    x = np.logspace(6, 10, 12)
    y = (0.8 + 50 * x ** -0.3) * np.exp(rng.normal(0.0, NOISE, x.size))
    y[3], y[7], y[10] = np.nan, -1.0, np.inf
    x[5] = 0.0
    names = [f"run{i}" for i in range(x.size)]
    with pytest.warns(ExcludedPointsWarning) as rec:
        fit = fit_power_law(x, y, names=names)
    msg = str(rec[0].message)
    assert msg.startswith("fit_power_law: excluded 4 of 12 points")
    assert "point 3 ('run3'): loss is NaN (diverged run?)" in msg
    assert "point 7 ('run7'): loss = -1 is not > 0" in msg
    assert "point 10 ('run10'): loss is inf (diverged run?)" in msg
    assert "point 5 ('run5'): x = 0 is not > 0" in msg
    assert [p.index for p in fit.excluded] == [3, 5, 7, 10]
    assert [p.name for p in fit.excluded] == ["run3", "run5", "run7", "run10"]
    assert fit.n_points == 8
    assert abs(fit.alpha / 0.3 - 1) < 0.1     # the remaining points still fit


def test_bad_points_without_names_are_listed_by_index():
    N, D = np.logspace(6, 9, 8), np.logspace(8, 11, 8)
    L = chinchilla_law(N, D)
    L[2] = np.nan
    with pytest.warns(ExcludedPointsWarning, match=r"point 2: loss is NaN"):
        fit = fit_chinchilla(N, D, L, init_grid=[{"a": 6.0, "b": 6.0, "e": 0.5, "alpha": 0.3, "beta": 0.3}])
    assert fit.n_points == 7 and fit.excluded[0].index == 2 and fit.excluded[0].name is None


def test_too_few_points_raises_exact_error():
    N, D = np.logspace(6, 9, 6), np.logspace(8, 11, 6)
    L = chinchilla_law(N, D)
    L[[1, 4]] = [np.nan, 0.0]
    expected = ("fit_chinchilla: 4 valid points remain (of 6, 2 excluded), but at least 5 are needed "
                "to fit 5 parameters (E, A, B, alpha, beta)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedPointsWarning)
        with pytest.raises(ValueError, match="^" + re.escape(expected) + "$"):
            fit_chinchilla(N, D, L)
    with pytest.raises(ValueError, match=re.escape("fit_saturating: 3 valid points remain, but at least 4")):
        fit_saturating([1.0, 2.0, 3.0], [0.5, 0.4, 0.3])


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="different lengths"):
        fit_power_law([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="names has 2 entries but there are 3 points"):
        fit_power_law([1.0, 2.0, 3.0], [1.0, 0.9, 0.8], names=["a", "b"])


def test_bootstrap_generic_and_deterministic():
    rng = np.random.default_rng(4)
    x = np.logspace(6, 10, 10)
    y = (0.8 + 50 * x ** -0.3) * np.exp(rng.normal(0.0, NOISE, x.size))
    full = fit_power_law(x, y)

    def refit(xs, ys):
        return fit_power_law(xs, ys, init_grid=full)

    ci1 = bootstrap(refit, x, y, n_boot=20, seed=7)
    ci2 = bootstrap(refit, x, y, n_boot=20, seed=7)
    assert ci1 == ci2 and set(ci1) == {"E", "A", "alpha"}
    assert all(lo <= hi for lo, hi in ci1.values()) and ci1.samples["alpha"].shape == (20,)


# -------------------------------------------------------------------------------------------- (f)

def _runs(N, D, L):
    return [{"name": f"r{i}", "N": n, "D": d, "loss": l} for i, (n, d, l) in enumerate(zip(N, D, L))]


def test_report_written(tmp_path, chinchilla_data, chinchilla_boot):
    # write_report needs no matplotlib, so this runs everywhere.
    N, D, L = chinchilla_data
    hold_N, hold_D = np.array([3e9, 1e10]), np.array([3e11, 1e12])      # extrapolation beyond the sweep
    holdout = {"chinchilla": ((hold_N, hold_D), chinchilla_law(hold_N, hold_D))}
    doc = write_report(tmp_path / "r.md", tmp_path / "r.json", {"chinchilla": chinchilla_boot},
                       _runs(N, D, L), holdout=holdout)
    md, js = (tmp_path / "r.md").read_text(), json.loads((tmp_path / "r.json").read_text())
    assert js == json.loads(json.dumps(doc))
    assert "| alpha |" in md and "95% CI" in md and "Hold-out" in md
    f = js["fits"]["chinchilla"]
    assert f["ci"]["beta"][0] <= f["params"]["beta"] <= f["ci"]["beta"][1]
    assert set(f["derived"]) == {"a_opt", "b_opt"}
    assert js["runs"]["n"] == 36 and js["runs"]["table"][0]["name"] == "r0"
    assert js["holdout"]["chinchilla"]["max_abs_rel_error"] < 0.02


def test_plots_written(tmp_path, chinchilla_data, chinchilla_boot):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed; plots are untested here")
    N, D, L = chinchilla_data
    fit, runs = chinchilla_boot, _runs(N, D, L)
    paths = [
        plot_loss_vs_compute(runs, fit, tmp_path / "loss_vs_compute.png"),
        plot_isoloss(fit, (1e6, 1e10), (1e8, 1e12), tmp_path / "isoloss.png", runs=runs),
        plot_residuals(fit, (N, D), L, tmp_path / "residuals.png"),
        plot_learning_curves({f"N={n:.0e}": (np.arange(1, 50), 2 + n ** -0.1 * np.arange(1, 50) ** -0.3)
                              for n in np.unique(N)}, np.unique(N), tmp_path / "curves.png"),
    ]
    pl = fit_power_law(6 * N * D, L)
    paths.append(plot_loss_vs_compute({"C": 6 * N * D, "loss": L}, pl, tmp_path / "pl.png"))
    for p in paths:
        assert (tmp_path / p).stat().st_size > 1000, p


def test_bootstrap_interval_with_overflowed_refits_is_unbounded_not_nan():
    # A refit whose coefficient overflows to inf must give an open-ended interval, not NaN + a warning.
    from types import SimpleNamespace
    x = np.arange(10.0)

    def fit(a):
        return SimpleNamespace(v=np.inf if a.max() == 9 else a.mean())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap(fit, x, n_boot=50, statistic=lambda f: {"v": f.v})
    assert np.isfinite(ci["v"][0]) and ci["v"][1] == np.inf


def test_chinchilla_e_min_bounds_the_irreducible_loss():
    """e_min is a hard lower bound on E, in the fit and in every bootstrap refit; it can only raise the
    objective; a non-positive e_min is an error."""
    rng = np.random.default_rng(1)
    true = {"E": 0.3, "A": 40.0, "B": 3000.0, "alpha": 0.5, "beta": 0.8}
    N, D = np.meshgrid(np.geomspace(5e3, 7e4, 4), np.geomspace(1.6e4, 1.3e5, 4), indexing="ij")
    N, D = N.ravel(), D.ravel()
    loss = chinchilla_law(N, D, true) * np.exp(rng.normal(0.0, 0.03, N.size))
    grid = {"a": (0.0, 10.0), "b": (0.0, 10.0), "e": (-2.0, 0.0), "alpha": (0.5,), "beta": (0.5, 1.0)}
    free = fit_chinchilla(N, D, loss, init_grid=grid)
    e_min = free.params["E"] + 0.1            # binding whatever the free fit found
    bounded = with_bootstrap(fit_chinchilla, N, D, loss, n_boot=10, seed=0, e_min=e_min, init_grid=grid)
    assert bounded.params["E"] >= e_min * (1 - 1e-9)
    assert bounded.ci["E"][0] >= e_min * (1 - 1e-9)
    assert bounded.objective >= free.objective - 1e-12
    with pytest.raises(ValueError, match="e_min must be a positive number"):
        fit_chinchilla(N, D, loss, e_min=0.0)
