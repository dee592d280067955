"""Fitting the scaling laws of :mod:`vitjax.scaling.laws`: :func:`fit_power_law`, :func:`fit_chinchilla`
and :func:`fit_saturating`.

Pure numpy/scipy (no JAX), so it can run on a laptop against a CSV of sweep results.

All three are fitted the way Hoffmann et al. 2022 (App. D.2) fit Approach 3: minimise the Huber loss
(``delta = 1e-3``) between the log of the predicted and the log of the observed loss, with L-BFGS-B,
starting from every point of a grid of initialisations and keeping the best optimum. Positive
coefficients are parameterised by their logs (``A = exp(a)`` ...) and the log prediction is computed
with a log-sum-exp, which keeps it finite and smooth for any parameter value.

Uncertainty comes from a non-parametric bootstrap (:mod:`vitjax.scaling.bootstrap`).
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits   # scipy and threadpoolctl come with scikit-learn (a dependency)

from vitjax.scaling.laws import ChinchillaFit, ExcludedPoint, ExcludedPointsWarning, PowerLawFit, SaturatingFit

__all__ = ["fit_power_law", "fit_chinchilla", "fit_saturating", "huber", "CHINCHILLA_PAPER_GRID",
           "CHINCHILLA_DEFAULT_GRID", "POWER_LAW_DEFAULT_GRID", "SATURATING_DEFAULT_GRID"]

# Hoffmann et al. 2022, App. D.2: "alpha in {0, 0.5, ..., 2}, beta in {0, 0.5, ..., 2},
# e in {-1, -0.5, ..., 1}, a in {0, 5, ..., 25}, b in {0, 5, ..., 25}" -- 6*6*5*5*5 = 4500 starts.
CHINCHILLA_PAPER_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
# Default: a coarser sub-grid of the paper's (every other value; 3*3*3*3*3 = 243 starts), ~20x
# cheaper. On well-conditioned sweeps it finds the same optimum; pass init_grid="paper" to use the
# paper's full grid when the fit is the final word.
CHINCHILLA_DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 10.0, 20.0),
    "b": (0.0, 10.0, 20.0),
    "e": (-1.0, 0.0, 1.0),
    "alpha": (0.0, 1.0, 2.0),
    "beta": (0.0, 1.0, 2.0),
}
# Power law, in the *normalised* parameterisation (x divided by its geometric mean, see
# _PowerLawModel): a is then the log of the reducible loss at the centre of the data, which is
# O(1) whatever the unit of x (FLOPs ~1e20 or parameters ~1e8), so one grid serves all uses.
POWER_LAW_DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "a": (-4.0, -2.0, 0.0, 2.0),
    "e": (-2.0, -1.0, 0.0, 1.0),
    "alpha": (0.0, 0.25, 0.5, 1.0, 2.0),
}
# Saturating law, also normalised (C and d divided by the geometric mean of C); ld = log(d/C_ref).
SATURATING_DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "la": (-4.0, -2.0, 0.0, 2.0),
    "b": (0.1, 0.5, 1.0),
    "lc": (-4.0, -2.0, 0.0),
    "ld": (-8.0, -2.0, 0.0),
}

# L-BFGS-B stops when the *absolute* objective change falls below ftol * max(|f|, 1). A sum of Huber
# losses with delta=1e-3 is ~1e-4, so scipy's default ftol (2.2e-9) would stop long before the
# optimum -- the premature termination Besiroglu et al. 2024 ("Chinchilla Scaling: A replication
# attempt") found in the original fit. We therefore optimise the objective divided by delta (O(n|r|))
# and use much tighter tolerances.
_LBFGS_OPTIONS = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-10, "maxcor": 20}


# ---------------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------------

def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: ``r**2/2`` for ``|r| <= delta``, ``delta*(|r| - delta/2)`` beyond (Huber 1964)."""
    ar = np.abs(np.asarray(r, float))
    c = np.minimum(ar, delta)           # one expression for both branches (this is the hot loop)
    return c * (ar - 0.5 * c)


def _log(v: float) -> float:
    # Warm starts take logs of fitted coefficients; one that underflowed to 0 maps to a finite
    # (very negative) log instead of -inf, which L-BFGS-B cannot start from.
    return float(np.log(max(float(v), 1e-300)))


class _Model:
    """A law as ``log L_hat(theta) = LSE_k(t_k(theta))``: subclasses give the terms and their Jacobian.

    theta is the internal, optimisation-friendly parameter vector; ``to_public`` maps it to the
    law's published parameters.
    """
    names: tuple[str, ...]
    bounds: list[tuple[float | None, float | None]]

    def terms(self, theta):
        """-> (t [n, k], J [n*k, p]) with J = d t.ravel() / d theta."""
        raise NotImplementedError

    def to_public(self, theta) -> dict[str, float]:
        raise NotImplementedError

    def from_public(self, params: Mapping[str, float]) -> np.ndarray:
        """Published parameters -> internal theta (for warm starts)."""
        raise NotImplementedError

    def from_grid_point(self, point: Mapping[str, float]) -> np.ndarray:
        """A starting point given in the documented grid parameterisation -> internal theta."""
        return np.array([point[k] for k in self.names], float)

    def log_pred(self, theta):
        t, _ = self.terms(theta)
        return logsumexp(t, axis=1)

    def objective(self, theta, log_y, delta):
        """Sum of Huber losses of log-residuals (Hoffmann et al. 2022, App. D.2), and its gradient.

        Written with plain numpy ops on small arrays: it is called ~10^4-10^5 times per fit, so
        per-call overhead (not flops) is what matters.
        """
        t, J = self.terms(theta)
        m = t.max(axis=1, keepdims=True)
        w = np.exp(t - m)
        s = w.sum(axis=1)
        r = m[:, 0] + np.log(s) - log_y            # log L_hat - log L
        ar = np.abs(r)
        c = np.minimum(ar, delta)
        f = float(np.dot(c, ar - 0.5 * c))
        gr = np.clip(r, -delta, delta) / s          # d huber / d r, folded with the softmax denominator
        return f, (w * gr[:, None]).ravel() @ J     # chain rule through softmax weights


class _PowerLawModel(_Model):
    # log L_hat = LSE(a - alpha*log(x/x_ref), e): A' = exp(a) is the reducible loss at x_ref (the
    # geometric mean of x), so A = A' * x_ref**alpha. Centring decorrelates a and alpha, which is
    # what makes the L-BFGS problem well conditioned.
    names = ("a", "e", "alpha")
    bounds = [(None, None), (None, None), (0.0, None)]   # alpha >= 0: loss does not grow with scale

    def __init__(self, x):
        self.logx_ref = float(np.mean(np.log(x)))
        u = np.log(x) - self.logx_ref
        n = u.size
        # The terms are linear in theta, so the Jacobian is a constant matrix: t = (J @ theta).
        J = np.zeros((n, 2, 3))
        J[:, 0, 0], J[:, 0, 2], J[:, 1, 1] = 1.0, -u, 1.0
        self.n, self.J = n, J.reshape(2 * n, 3)

    def terms(self, th):
        return (self.J @ th).reshape(self.n, 2), self.J

    def from_public(self, p):
        return np.array([_log(p["A"]) - p["alpha"] * self.logx_ref, _log(p["E"]), p["alpha"]])

    def to_public(self, th):
        a, e, alpha = th
        return {"E": float(np.exp(e)), "A": float(np.exp(a + alpha * self.logx_ref)), "alpha": float(alpha)}


class _ChinchillaModel(_Model):
    # Paper parameterisation (App. D.2): log L_hat = LSE(a - alpha*log N, b - beta*log D, e).
    # Internally we optimise the exactly equivalent centred form a' = a - alpha*mean(log N)
    # (same for b), so that a' and alpha are not almost collinear; grid points are given in the
    # paper's (a, b, e, alpha, beta) and converted, so the grid means what the paper's grid means.
    names = ("a", "b", "e", "alpha", "beta")
    bounds = [(None, None), (None, None), (None, None), (0.0, None), (0.0, None)]

    def __init__(self, N, D):
        self.mN, self.mD = float(np.mean(np.log(N))), float(np.mean(np.log(D)))
        uN, uD = np.log(N) - self.mN, np.log(D) - self.mD
        n = uN.size
        # Linear in theta: constant Jacobian, t = (J @ theta).
        J = np.zeros((n, 3, 5))
        J[:, 0, 0], J[:, 0, 3] = 1.0, -uN
        J[:, 1, 1], J[:, 1, 4] = 1.0, -uD
        J[:, 2, 2] = 1.0
        self.n, self.J = n, J.reshape(3 * n, 5)

    def from_grid_point(self, p):
        return np.array([p["a"] - p["alpha"] * self.mN, p["b"] - p["beta"] * self.mD,
                         p["e"], p["alpha"], p["beta"]], float)

    def to_paper(self, th) -> dict[str, float]:
        a_c, b_c, e, alpha, beta = th
        return {"a": float(a_c + alpha * self.mN), "b": float(b_c + beta * self.mD), "e": float(e),
                "alpha": float(alpha), "beta": float(beta)}

    def terms(self, th):
        return (self.J @ th).reshape(self.n, 3), self.J

    def from_public(self, p):
        return np.array([_log(p["A"]) - p["alpha"] * self.mN, _log(p["B"]) - p["beta"] * self.mD,
                         _log(p["E"]), p["alpha"], p["beta"]])

    def to_public(self, th):
        p = self.to_paper(th)
        return {"E": float(np.exp(p["e"])), "A": float(np.exp(p["a"])), "B": float(np.exp(p["b"])),
                "alpha": p["alpha"], "beta": p["beta"]}


class _SaturatingModel(_Model):
    # E = a (C + d)^(-b) + c with a = exp(la), c = exp(lc) (positive by construction),
    # d = C_ref * exp(ld) (positive; d -> 0 as ld -> -inf), b >= 0 by an L-BFGS-B bound.
    # C is divided by its geometric mean C_ref so that ld, la are O(1) for any compute unit.
    #   log E_hat = LSE(la - b*log(C/C_ref + exp(ld)), lc)
    # (the fitted a is rescaled back: a_public = exp(la) * C_ref**b).
    names = ("la", "b", "lc", "ld")
    bounds = [(None, None), (0.0, None), (None, None), (-30.0, 30.0)]

    def __init__(self, C):
        self.logC_ref = float(np.mean(np.log(C)))
        self.c = np.exp(np.log(C) - self.logC_ref)

    def terms(self, th):
        la, b, lc, ld = th
        n = self.c.size
        s = self.c + np.exp(ld)
        ls = np.log(s)
        t = np.stack([la - b * ls, np.full(n, lc)], axis=1)
        dt = np.zeros((n, 2, 4))
        dt[:, 0, 0] = 1.0
        dt[:, 0, 1] = -ls
        dt[:, 0, 3] = -b * np.exp(ld) / s
        dt[:, 1, 2] = 1.0
        return t, dt.reshape(2 * n, 4)

    def from_public(self, p):
        return np.array([_log(p["a"]) - p["b"] * self.logC_ref, p["b"], _log(p["c"]),
                         np.clip(_log(p["d"]) - self.logC_ref, -30.0, 30.0)])

    def to_public(self, th):
        la, b, lc, ld = th
        return {"a": float(np.exp(la + b * self.logC_ref)), "b": float(b), "c": float(np.exp(lc)),
                "d": float(np.exp(ld + self.logC_ref))}


# ---------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------

def _validate(fn_name: str, arrays: Mapping[str, Any], n_params: int, param_names: Sequence[str],
              names: Sequence[str] | None):
    """Drop invalid points, warn which and why; raise if too few remain.

    Every array must be strictly positive and finite: the fits work on logs, and a NaN/inf loss is
    what a diverged run reports. Returns (dict of the kept arrays, tuple of ExcludedPoint).
    """
    arrs = {k: np.asarray(v, dtype=float).ravel() for k, v in arrays.items()}
    sizes = {k: v.size for k, v in arrs.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"{fn_name}: input arrays have different lengths {sizes}")
    n = next(iter(sizes.values()))
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != n:
            raise ValueError(f"{fn_name}: names has {len(names)} entries but there are {n} points")

    keep = np.ones(n, bool)
    excluded: list[ExcludedPoint] = []
    for i in range(n):
        why = []
        for k, v in arrs.items():
            val = v[i]
            if np.isnan(val):
                why.append(f"{k} is NaN" + (" (diverged run?)" if k in ("loss", "err") else ""))
            elif np.isinf(val):
                why.append(f"{k} is {val} (diverged run?)" if k in ("loss", "err") else f"{k} is {val}")
            elif val <= 0:
                why.append(f"{k} = {val:g} is not > 0 (the fit works on log {k})")
        if why:
            keep[i] = False
            excluded.append(ExcludedPoint(i, names[i] if names is not None else None, "; ".join(why)))

    if excluded:
        listing = ", ".join(f"point {p.label()}: {p.reason}" for p in excluded)
        warnings.warn(f"{fn_name}: excluded {len(excluded)} of {n} points -- {listing}",
                      ExcludedPointsWarning, stacklevel=3)
    n_kept = int(keep.sum())
    if n_kept < n_params:
        raise ValueError(
            f"{fn_name}: {n_kept} valid {'point remains' if n_kept == 1 else 'points remain'}"
            f"{f' (of {n}, {len(excluded)} excluded)' if excluded else ''}, but at least {n_params} "
            f"are needed to fit {n_params} parameters ({', '.join(param_names)})")
    return {k: v[keep] for k, v in arrs.items()}, tuple(excluded)


# ---------------------------------------------------------------------------------------------------
# Multi-start L-BFGS-B
# ---------------------------------------------------------------------------------------------------

def _starts(model: "_Model", grid, default: Mapping[str, Sequence[float]], fit_cls,
            paper: Mapping[str, Sequence[float]] | None = None) -> list[np.ndarray]:
    """Resolve ``init_grid`` to a list of internal starting vectors.

    Accepts None / "default" (module default grid), "paper" (Chinchilla only), a mapping
    name -> values (Cartesian product), a sequence of mappings (explicit starting points, in the
    grid parameterisation), or a previous fit of the same law (warm start from its parameters --
    converted through the public parameters, so it is valid for resampled data too).
    """
    if isinstance(grid, fit_cls):
        return [model.from_public(grid.params)]
    if grid is None:
        grid = default
    elif isinstance(grid, str):
        if grid == "paper" and paper is not None:
            grid = paper
        elif grid == "default":
            grid = default
        else:
            raise ValueError(f"unknown init_grid {grid!r}")
    names = model.names
    if isinstance(grid, Mapping):
        missing = set(names) - set(grid)
        if missing:
            raise ValueError(f"init_grid is missing values for {sorted(missing)}; needs {list(names)}")
        points = [dict(zip(names, vals)) for vals in itertools.product(*(grid[k] for k in names))]
    else:
        points = [dict(p) for p in grid]
        for p in points:
            if set(names) - set(p):
                raise ValueError(f"init_grid point {p} must give {list(names)}")
    if not points:
        raise ValueError("init_grid gives no starting points")
    return [model.from_grid_point(p) for p in points]


def _single_threaded_blas():
    """Context manager limiting BLAS to one thread.

    scipy's L-BFGS-B makes many tiny BLAS calls per iteration; with a multi-threaded OpenBLAS each
    one wakes the thread pool, which on a loaded machine made a fit >10x slower (measured: 18.9 s vs
    1.4 s for 32 starts on 2 shared cores). One thread is always fast enough for these sizes.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _multistart(model: _Model, log_y: np.ndarray, starts: list[np.ndarray], delta: float):
    """Run L-BFGS-B from every start; return (best theta, its objective, number of starts)."""
    with _single_threaded_blas():
        return _multistart_impl(model, log_y, starts, delta)


def _multistart_impl(model, log_y, starts, delta):
    best_f, best_th = np.inf, None
    scale = 1.0 / delta   # see _LBFGS_OPTIONS
    bounds = model.bounds

    def fun(th):
        f, g = model.objective(th, log_y, delta)
        return f * scale, g * scale

    for th0 in starts:
        # Respect the bounds at the start (a grid value may sit on or outside one).
        th0 = np.array([min(max(v, lo if lo is not None else -np.inf), hi if hi is not None else np.inf)
                        for v, (lo, hi) in zip(th0, bounds)])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            res = optimize.minimize(fun, th0, jac=True, method="L-BFGS-B", bounds=bounds,
                                    options=_LBFGS_OPTIONS)
        f = res.fun / scale
        if np.isfinite(f) and f < best_f:
            best_f, best_th = f, res.x
    if best_th is None:
        raise RuntimeError("every L-BFGS-B start failed (non-finite objective)")
    return best_th, float(best_f), len(starts)


# ---------------------------------------------------------------------------------------------------
# Public fitting functions
# ---------------------------------------------------------------------------------------------------

def fit_power_law(x, loss, *, huber_delta: float = 1e-3, init_grid=None,
                  names: Sequence[str] | None = None) -> PowerLawFit:
    """Fit ``L(X) = E + A * X**(-alpha)`` (Kaplan et al. 2020, Eq. 1.1-1.3 with an irreducible term E).

    Minimises ``sum_i Huber_delta(LSE(a - alpha*log(x_i/x_ref), e) - log L_i)`` with L-BFGS-B from each
    point of ``init_grid`` (Hoffmann et al. 2022, App. D.2 procedure), where ``E = exp(e)``,
    ``A = exp(a) * x_ref**alpha`` and ``x_ref`` is the geometric mean of ``x`` (centring makes one
    default grid work for any unit of x). ``alpha >= 0``.

    Args:
      x: the scale variable (parameters, tokens, FLOPs), > 0.
      loss: the loss (or error) per run, > 0. NaN/inf/non-positive points are excluded with an
        :class:`ExcludedPointsWarning`.
      huber_delta: Huber threshold on log-loss residuals (1e-3 as in Hoffmann et al.).
      init_grid: None (``POWER_LAW_DEFAULT_GRID``: 4*4*5 = 80 starts over a, e, alpha), a mapping
        ``{"a": [...], "e": [...], "alpha": [...]}`` (Cartesian product, normalised parameterisation),
        a list of such points, or a previous :class:`PowerLawFit` to warm-start from its optimum.
      names: optional run names, used in warnings and in ``excluded``.

    Raises:
      ValueError: fewer than 3 valid points.
    """
    data, excluded = _validate("fit_power_law", {"x": x, "loss": loss}, 3, PowerLawFit._param_names, names)
    model = _PowerLawModel(data["x"])
    starts = _starts(model, init_grid, POWER_LAW_DEFAULT_GRID, PowerLawFit)
    th, f, ns = _multistart(model, np.log(data["loss"]), starts, huber_delta)
    return PowerLawFit(**model.to_public(th), objective=f, n_points=data["x"].size, excluded=excluded,
                       n_starts=ns)


def fit_chinchilla(N, D, loss, *, huber_delta: float = 1e-3, init_grid=None,
                   names: Sequence[str] | None = None, e_min: float | None = None) -> ChinchillaFit:
    """Fit ``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, Eq. 2, "Approach 3").

    As in the paper (App. D.2, Eq. 3) minimises over ``(a, b, e, alpha, beta)``::

        sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i ),

    ``A = exp(a)``, ``B = exp(b)``, ``E = exp(e)``, ``delta = 1e-3``, with L-BFGS-B from every point of
    a grid of initialisations, keeping the lowest objective. ``alpha, beta >= 0``. Internally ``a`` and
    ``b`` are re-centred on the mean ``log N`` / ``log D`` (an exact reparameterisation, for
    conditioning); the grid is given in the paper's parameterisation.

    Args:
      N: parameters per run (> 0).  D: training tokens / examples per run (> 0).
      loss: final loss per run (> 0); NaN/inf/non-positive points are excluded with a warning.
      huber_delta: Huber threshold on log-loss residuals.
      init_grid: None -> ``CHINCHILLA_DEFAULT_GRID``, a 3^5 = 243-point sub-grid of the paper's (every
        other value), chosen for speed; ``"paper"`` -> the paper's full 4500-point
        ``CHINCHILLA_PAPER_GRID`` (alpha, beta in {0,.5,..,2}, e in {-1,-.5,..,1},
        a, b in {0,5,..,25}); a mapping name -> values; a list of points; or a previous
        :class:`ChinchillaFit` (warm start from its optimum -- what bootstrap refits use).
      names: optional run names, used in warnings and in ``excluded``.
      e_min: a known lower bound of the irreducible loss, ``E >= e_min`` (an L-BFGS-B bound on
        ``e = log E``); e.g. the entropy of the labels' noise. None: only ``E > 0``.

    Raises:
      ValueError: fewer than 5 valid points, or ``e_min`` not > 0.
    """
    data, excluded = _validate("fit_chinchilla", {"N": N, "D": D, "loss": loss}, 5,
                               ChinchillaFit._param_names, names)
    model = _ChinchillaModel(data["N"], data["D"])
    if e_min is not None:
        if not (np.isfinite(e_min) and e_min > 0):
            raise ValueError(f"fit_chinchilla: e_min must be a positive number, got {e_min!r}")
        model.bounds = list(model.bounds)
        model.bounds[2] = (float(np.log(e_min)), None)
    starts = _starts(model, init_grid, CHINCHILLA_DEFAULT_GRID, ChinchillaFit, paper=CHINCHILLA_PAPER_GRID)
    th, f, ns = _multistart(model, np.log(data["loss"]), starts, huber_delta)
    return ChinchillaFit(**model.to_public(th), objective=f, n_points=data["N"].size, excluded=excluded,
                         n_starts=ns)


def fit_saturating(C, err, *, huber_delta: float = 1e-3, init_grid=None,
                   names: Sequence[str] | None = None) -> SaturatingFit:
    """Fit ``E(C) = a * (C + d)**(-b) + c`` (Zhai et al. 2022, "Scaling Vision Transformers", Sec. 2.1).

    ``a, c, d > 0`` and ``b >= 0`` (positivity by parameterisation: ``a = exp(la) * C_ref**b``,
    ``c = exp(lc)``, ``d = exp(ld) * C_ref``, ``C_ref`` the geometric mean of C; ``b`` by a bound).
    Objective, as for the other laws: ``sum_i Huber_delta(LSE(la - b*log(C_i/C_ref + exp(ld)), lc)
    - log E_i)`` minimised by L-BFGS-B from each grid point.

    Args:
      C: compute per run (> 0), any unit.  err: error / loss per run (> 0).
      init_grid: None -> ``SATURATING_DEFAULT_GRID`` (4*3*3*3 = 108 starts over la, b, lc, ld), a
        mapping, a list of points, or a previous :class:`SaturatingFit` (warm start).
      names: optional run names, used in warnings and in ``excluded``.

    Raises:
      ValueError: fewer than 4 valid points.
    """
    data, excluded = _validate("fit_saturating", {"C": C, "err": err}, 4, SaturatingFit._param_names, names)
    model = _SaturatingModel(data["C"])
    starts = _starts(model, init_grid, SATURATING_DEFAULT_GRID, SaturatingFit)
    th, f, ns = _multistart(model, np.log(data["err"]), starts, huber_delta)
    return SaturatingFit(**model.to_public(th), objective=f, n_points=data["C"].size, excluded=excluded,
                         n_starts=ns)
