"""Bootstrap intervals for scaling-law fits: :func:`bootstrap` resamples the runs with replacement,
refits and reports percentile intervals; :func:`with_bootstrap` fits on all runs and attaches them.
Pure numpy.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vitjax.scaling.laws import BootstrapCI, ExcludedPointsWarning

__all__ = ["bootstrap", "with_bootstrap"]


def bootstrap(fit_fn: Callable[..., Any], *arrays, n_boot: int = 200, seed: int = 0, ci: float = 0.95,
              statistic: Callable[[Any], Mapping[str, float]] | None = None) -> BootstrapCI:
    """Non-parametric bootstrap percentile intervals (Efron & Tibshirani 1993, Ch. 13).

    Resamples the points (rows across ``arrays``) with replacement ``n_boot`` times, refits
    ``fit_fn(*resampled_arrays)`` and returns the ``(1-ci)/2`` and ``(1+ci)/2`` percentiles of each
    parameter (``{**fit.params, **fit.derived}`` unless ``statistic`` is given).

    For speed, pass a fit function that warm-starts from the full-data fit, e.g.
    ``functools.partial(fit_chinchilla, init_grid=full_fit)``; :func:`with_bootstrap` does this.
    Resamples whose refit raises ``ValueError`` (e.g. too few distinct valid points) are skipped and
    counted in ``.n_failed``; exclusion warnings from refits are collapsed into one.
    """
    arrays = [np.asarray(a) for a in arrays]
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError(f"bootstrap: arrays have different lengths {[a.shape[0] for a in arrays]}")
    if not 0 < ci < 1:
        raise ValueError(f"bootstrap: ci must be in (0, 1), got {ci}")
    statistic = statistic or (lambda f: {**f.params, **f.derived})
    rng = np.random.default_rng(seed)
    rows: list[Mapping[str, float]] = []
    n_failed, n_warned = 0, 0
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExcludedPointsWarning)
            try:
                rows.append(statistic(fit_fn(*(a[idx] for a in arrays))))
            except ValueError:
                n_failed += 1
        n_warned += sum(issubclass(w.category, ExcludedPointsWarning) for w in caught)
    if n_warned:
        warnings.warn(f"bootstrap: {n_warned} of {n_boot} refits excluded invalid points (see the "
                      f"full-data fit's .excluded)", ExcludedPointsWarning, stacklevel=2)
    if not rows:
        raise ValueError(f"bootstrap: all {n_boot} refits failed")
    out = BootstrapCI()
    out.samples = {k: np.array([r[k] for r in rows], float) for k in rows[0]}
    lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    for k, v in out.samples.items():
        out[k] = (_percentile(v, lo_q), _percentile(v, hi_q))
    out.n_failed, out.level = n_failed, ci
    return out


def _percentile(v: np.ndarray, q: float) -> float:
    """``nanpercentile``; where it would interpolate between a finite and an infinite sample (a refit
    whose coefficient overflowed), which gives NaN and a RuntimeWarning, the nearest sample instead
    (so an unbounded side of the interval reads as inf)."""
    with np.errstate(invalid="ignore"):
        p = float(np.nanpercentile(v, q))
    if np.isnan(p) and np.isinf(v).any():
        p = float(np.nanpercentile(v, q, method="nearest"))
    return p


def with_bootstrap(fit_fn: Callable[..., Any], *arrays, n_boot: int = 200, seed: int = 0,
                   ci: float = 0.95, warm_start: bool = True, **fit_kwargs):
    """Fit on all points, then attach bootstrap intervals: returns ``fit.with_ci(bootstrap(...))``.

    With ``warm_start`` (default) each refit starts only from the full-data optimum
    (``init_grid=full_fit``) instead of the whole grid: resamples perturb the optimum slightly, so
    this finds the same basin at a fraction of the cost. ``fit_kwargs`` go to every fit.
    """
    full = fit_fn(*arrays, **fit_kwargs)
    boot_kwargs = {k: v for k, v in fit_kwargs.items() if k != "names"}   # names don't follow resampling
    if warm_start:
        boot_kwargs["init_grid"] = full

    def refit(*a):
        return fit_fn(*a, **boot_kwargs)

    return full.with_ci(bootstrap(refit, *arrays, n_boot=n_boot, seed=seed, ci=ci))
