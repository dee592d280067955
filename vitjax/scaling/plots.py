"""Plots and a markdown/JSON report for scaling-law fits.

matplotlib is imported lazily, inside each plotting function, so ``vitjax.scaling`` (fitting and
:func:`write_report`) works without it. Figures are drawn with the object-oriented API on an Agg
canvas (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``) rather than through ``pyplot``: that
needs no display and never changes the process-wide backend of a notebook that imports this module.

``runs`` arguments are either a mapping of columns (``{"N": [...], "D": [...], "loss": [...]}``) or
a sequence of per-run mappings (``[{"name": "S/16-1e9", "N": 2.2e7, "D": 1e9, "loss": 2.31}, ...]``).
Recognised columns: ``name``, ``N`` (parameters), ``D`` (tokens / examples seen), ``C`` (FLOPs;
computed as ``k*N*D`` with ``k = flops_per_param_token`` when absent) and ``loss`` (or ``err``).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from vitjax.scaling.laws import ChinchillaFit, PowerLawFit, SaturatingFit, compute_optimal

__all__ = ["plot_loss_vs_compute", "plot_isoloss", "plot_learning_curves", "plot_residuals",
           "write_report"]

_FORMULAS = {
    ChinchillaFit: ("chinchilla", "L(N, D) = E + A / N^alpha + B / D^beta  (Hoffmann et al. 2022, Eq. 2)"),
    PowerLawFit: ("power_law", "L(X) = E + A * X^(-alpha)  (Kaplan et al. 2020)"),
    SaturatingFit: ("saturating", "E(C) = a * (C + d)^(-b) + c  (Zhai et al. 2022, Sec. 2.1)"),
}


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------

def _figure(figsize=(6.4, 4.8)):
    """A new Figure on an Agg canvas; matplotlib imported here, lazily."""
    try:   # lazy: matplotlib is optional and slow to import (module docstring)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # keep the fitting part usable without matplotlib
        raise ImportError("vitjax.scaling plotting needs matplotlib: pip install matplotlib") from e
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> str:
    path = os.fspath(path)
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _runs_table(runs, flops_per_param_token: float = 6.0) -> dict[str, np.ndarray]:
    """Normalise ``runs`` (columns mapping or list of row mappings) to a dict of column arrays."""
    if runs is None:
        return {}
    if isinstance(runs, Mapping):
        cols = {k: list(v) for k, v in runs.items()}
    else:
        rows = list(runs)
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        cols = {k: [r.get(k, None) for r in rows] for k in keys}
    out: dict[str, np.ndarray] = {}
    for k, v in cols.items():
        if k == "name":
            out[k] = np.array([str(x) for x in v], dtype=object)
        else:
            try:
                out[k] = np.array([np.nan if x is None else x for x in v], dtype=float)
            except (TypeError, ValueError):
                out[k] = np.array(v, dtype=object)
    if "loss" not in out:
        for alt in ("err", "error"):
            if alt in out:
                out["loss"] = out[alt]
                break
    if "C" not in out and "N" in out and "D" in out:
        out["C"] = flops_per_param_token * out["N"] * out["D"]
    return out


def _valid(*arrays) -> np.ndarray:
    m = np.ones(np.shape(arrays[0]), bool)
    for a in arrays:
        a = np.asarray(a, float)
        m &= np.isfinite(a) & (a > 0)
    return m


def _log_span(lo: float, hi: float, pad: float = 1.5, n: int = 200) -> np.ndarray:
    return np.logspace(math.log10(lo / pad), math.log10(hi * pad), n)


# ---------------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------------

def _plain_log_ticks(axis) -> None:
    """Ticks at 1, 2, 5 x 10^k labelled as plain numbers: predicted losses usually span less than a
    decade, where matplotlib's default labels every minor tick and the labels collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # lazy: optional, slow to import
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _floor_line(ax, value: float, label: str, loss) -> None:
    """The irreducible-loss line, unless it lies far below the data: a fitted floor of ~0 (common
    when a sweep stops short of saturation) would otherwise stretch the log axis over decades."""
    lo = float(np.min(loss)) if np.size(loss) else value
    if value > 0 and value >= 0.05 * lo:
        ax.axhline(value, color="k", ls=":", lw=1, label=label)
    else:
        ax.plot([], [], " ", label=f"{label} (below the axes)")


def plot_loss_vs_compute(runs, fit, path, *, flops_per_param_token: float = 6.0,
                         title: str | None = None) -> str:
    """Loss vs training compute, runs coloured by model size, with the fitted frontier.

    For a :class:`ChinchillaFit` the frontier is ``L(N_opt(C), D_opt(C))`` with the compute-optimal
    allocation of :func:`compute_optimal` (Hoffmann et al. 2022, Fig. 3/Eq. 4), plus faint
    ``L(N, C/(kN))`` curves for each model size in ``runs`` (the IsoParam curves); for a power-law or
    saturating fit (fitted against compute) it is ``fit.predict(C)``. Returns ``path``.
    """
    from matplotlib import colormaps  # lazy: optional, slow to import
    from matplotlib.colors import LogNorm

    t = _runs_table(runs, flops_per_param_token)
    C, L = t["C"], t["loss"]
    ok = _valid(C, L)
    fig = _figure()
    ax = fig.add_subplot()
    Cg = _log_span(C[ok].min(), C[ok].max())
    if "N" in t and ok.any():
        N = t["N"]
        norm = LogNorm(N[ok].min(), max(N[ok].max(), N[ok].min() * 1.0001))
        sc = ax.scatter(C[ok], L[ok], c=N[ok], cmap="viridis", norm=norm, s=22, zorder=3, label="runs")
        fig.colorbar(sc, ax=ax, label="parameters N")
        if isinstance(fit, ChinchillaFit):
            sizes = np.unique(N[ok])
            if len(sizes) <= 16:   # more would be a smear, not a guide
                cmap = colormaps["viridis"]
                for n_ in sizes:
                    ax.plot(Cg, fit.predict(n_, Cg / (flops_per_param_token * n_)), lw=0.8, alpha=0.5,
                            color=cmap(norm(n_)))
    else:
        ax.scatter(C[ok], L[ok], s=22, zorder=3, label="runs")
    if isinstance(fit, ChinchillaFit):
        N_opt, D_opt, a_, b_ = compute_optimal(fit, Cg, flops_per_param_token)
        ax.plot(Cg, fit.predict(N_opt, D_opt), "k-", lw=2,
                label=f"compute-optimal frontier ($N_{{opt}}\\propto C^{{{a_:.2f}}}$)")
        _floor_line(ax, fit.E, f"E = {fit.E:.3g}", L[ok])
    elif fit is not None:
        ax.plot(Cg, fit.predict(Cg), "k-", lw=2, label="fit")
        floor = fit.E if isinstance(fit, PowerLawFit) else fit.c
        _floor_line(ax, floor, f"irreducible = {floor:.3g}", L[ok])
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ok.any():
        # Frame the runs (and the floor line, if drawn): extrapolated per-size curves can climb decades
        # above the data at small compute and would otherwise squash the runs into a sliver.
        lo, hi = float(L[ok].min()), float(L[ok].max())
        floor = getattr(fit, "E", getattr(fit, "c", None)) if fit is not None else None
        if floor is not None and floor > 0 and floor >= 0.05 * lo:
            lo = min(lo, floor)
        ax.set_ylim(lo / 1.5, hi * 1.5)
    ax.set_xlabel("training compute C [FLOPs]")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss vs compute")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_isoloss(fit: ChinchillaFit, N_range, D_range, path, runs=None, *, levels=None,
                 flops_per_param_token: float = 6.0, title: str | None = None) -> str:
    """Iso-loss contours of ``L(N, D)`` in the (N, D) plane with the compute-optimal line.

    Hoffmann et al. 2022, Fig. 4 (left) draws the same picture in (FLOPs, N). Dashed grey lines are
    iso-FLOP lines ``k N D = C``; the thick line is ``(N_opt(C), D_opt(C))`` from
    :func:`compute_optimal`, which crosses each iso-FLOP line where it touches the lowest contour.
    ``N_range``/``D_range`` are ``(lo, hi)``; ``runs`` (optional) are scattered on top.
    """
    if not isinstance(fit, ChinchillaFit):
        raise TypeError(f"plot_isoloss needs a ChinchillaFit, got {type(fit).__name__}")
    from matplotlib.colors import LogNorm  # lazy: optional, slow to import

    k = flops_per_param_token
    Ns = np.logspace(math.log10(N_range[0]), math.log10(N_range[1]), 200)
    Ds = np.logspace(math.log10(D_range[0]), math.log10(D_range[1]), 200)
    NN, DD = np.meshgrid(Ns, Ds)
    LL = fit.predict(NN, DD)
    if levels is None:
        # Geometric spacing of the reducible part L - E spreads contours evenly on log axes.
        red = LL - fit.E
        levels = fit.E + np.geomspace(red.min(), red.max(), 12)[1:-1]
    fig = _figure()
    ax = fig.add_subplot()
    cs = ax.contour(NN, DD, LL, levels=np.sort(levels), cmap="viridis",
                    norm=LogNorm(min(levels), max(levels)))
    ax.clabel(cs, fmt="%.3g", fontsize=7)
    Cs = np.geomspace(k * N_range[0] * D_range[0], k * N_range[1] * D_range[1], 7)[1:-1]
    for c in Cs:
        ax.plot(Ns, c / (k * Ns), color="0.6", ls="--", lw=0.8)
    Cline = np.geomspace(k * N_range[0] * D_range[0], k * N_range[1] * D_range[1], 200)
    N_opt, D_opt, a_, b_ = compute_optimal(fit, Cline, k)
    ax.plot(N_opt, D_opt, "r-", lw=2,
            label=f"compute-optimal: $N\\propto C^{{{a_:.2f}}}$, $D\\propto C^{{{b_:.2f}}}$")
    if runs is not None:
        t = _runs_table(runs, k)
        ok = _valid(t["N"], t["D"])
        ax.scatter(t["N"][ok], t["D"][ok], c="k", s=14, zorder=3, label="runs")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(N_range)
    ax.set_ylim(D_range)
    ax.set_xlabel("parameters N")
    ax.set_ylabel("data D")
    ax.set_title(title or "iso-loss contours (dashed: iso-FLOP)")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_learning_curves(curves: Mapping[str, tuple[Any, Any]], sizes, path, *, xlabel: str = "step",
                         ylabel: str = "loss", logx: bool = True, logy: bool = True,
                         size_label: str = "parameters N", title: str | None = None) -> str:
    """Learning curves ``{label: (x, y)}`` coloured by model size on a log colour scale, with a colorbar.

    ``sizes`` is ``{label: size}`` or a sequence in the order of ``curves``. Non-positive / non-finite
    points are dropped from log axes (a diverged run's tail shows as the curve ending).
    """
    from matplotlib import colormaps  # lazy: optional, slow to import
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    labels = list(curves)
    if isinstance(sizes, Mapping):
        sz = np.array([float(sizes[lab]) for lab in labels])
    else:
        sz = np.asarray(list(sizes), float)
        if sz.size != len(labels):
            raise ValueError(f"sizes has {sz.size} entries but there are {len(labels)} curves")
    lo, hi = float(sz.min()), float(sz.max())
    norm = LogNorm(lo, hi if hi > lo else lo * 1.0001)
    cmap = colormaps["viridis"]
    fig = _figure()
    ax = fig.add_subplot()
    for lab, s in zip(labels, sz):
        x, y = (np.asarray(v, float) for v in curves[lab])
        ok = np.isfinite(x) & np.isfinite(y)
        if logx:
            ok &= x > 0
        if logy:
            ok &= y > 0
        ax.plot(x[ok], y[ok], color=cmap(norm(s)), lw=1.2, label=str(lab))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=size_label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or "learning curves")
    if len(labels) <= 10:
        ax.legend(fontsize=7)
    return _save(fig, path)


def _inputs(fit, x) -> tuple[np.ndarray, ...]:
    """``x`` as the positional arguments of ``fit.predict``: (N, D) for Chinchilla, (x,) otherwise."""
    if isinstance(fit, ChinchillaFit):
        if len(x) != 2:
            raise ValueError("a ChinchillaFit needs x = (N, D)")
        return np.asarray(x[0], float), np.asarray(x[1], float)
    return (np.asarray(x, float),)


def plot_residuals(fit, x, y, path, *, title: str | None = None) -> str:
    """Log-residuals ``log y - log fit.predict(x)`` (the quantity the Huber objective sees) against the
    prediction, and their histogram. ``x`` is ``(N, D)`` for a :class:`ChinchillaFit`, else an array."""
    xs = _inputs(fit, x)
    y = np.asarray(y, float)
    ok = _valid(y, *xs)
    pred = fit.predict(*(a[ok] for a in xs))
    r = np.log(y[ok]) - np.log(pred)
    fig = _figure(figsize=(9, 4))
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    ax1.scatter(pred, r, s=18)
    ax1.axhline(0, color="k", lw=1)
    ax1.set_xscale("log")
    _plain_log_ticks(ax1.xaxis)
    ax1.set_xlabel("predicted loss")
    ax1.set_ylabel("log(observed) - log(predicted)")
    ax1.set_title(title or f"residuals ({r.size} points, RMS {np.sqrt(np.mean(r ** 2)):.2e})")
    ax2.hist(r, bins=max(5, min(30, r.size // 2)), orientation="horizontal", color="C0")
    ax2.axhline(0, color="k", lw=1)
    ax2.set_xlabel("count")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------

def _num(v):
    """JSON-safe float: NaN/inf -> None (strict JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _fit_summary(fit) -> dict[str, Any]:
    kind, formula = _FORMULAS.get(type(fit), (type(fit).__name__, ""))
    ci = fit.ci or {}
    out: dict[str, Any] = {
        "law": kind,
        "formula": formula,
        "params": {k: _num(v) for k, v in fit.params.items()},
        "derived": {k: _num(v) for k, v in fit.derived.items()},
        "ci": {k: [_num(lo), _num(hi)] for k, (lo, hi) in ci.items()},
        "ci_level": getattr(fit.ci, "level", None),
        "objective": _num(fit.objective),
        "n_points": fit.n_points,
        "n_starts": fit.n_starts,
        "excluded": [{"index": p.index, "name": p.name, "reason": p.reason} for p in fit.excluded],
    }
    return out


def _holdout_items(fits: Mapping[str, Any], holdout):
    """Yield (fit_name, inputs tuple, observed y, names or None) for each fit with hold-out data."""
    explicit = (isinstance(holdout, Mapping) and holdout and set(holdout) <= set(fits)
                and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in holdout.values()))
    if explicit:
        for name, (x, y) in holdout.items():
            yield name, _inputs(fits[name], x), np.asarray(y, float), None
        return
    t = _runs_table(holdout)
    for name, fit in fits.items():
        if isinstance(fit, ChinchillaFit):
            if "N" in t and "D" in t:
                yield name, (t["N"], t["D"]), t["loss"], t.get("name")
        elif "C" in t:
            yield name, (t["C"],), t["loss"], t.get("name")


def _holdout_summary(fit, xs, y, names) -> dict[str, Any]:
    ok = _valid(y, *xs)
    pred = np.full(y.shape, np.nan)
    pred[ok] = fit.predict(*(a[ok] for a in xs))
    rel = (pred - y) / y
    pts = []
    for i in range(y.size):
        pts.append({"index": i, "name": None if names is None else str(names[i]),
                    "inputs": [_num(a[i]) for a in xs], "observed": _num(y[i]),
                    "predicted": _num(pred[i]), "rel_error": _num(rel[i]) if ok[i] else None})
    r = np.abs(rel[ok])
    return {"n_points": int(ok.sum()), "n_invalid": int((~ok).sum()),
            "mean_abs_rel_error": _num(r.mean()) if r.size else None,
            "max_abs_rel_error": _num(r.max()) if r.size else None, "points": pts}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def write_report(path_md, path_json, fits: Mapping[str, Any], runs, holdout=None, *,
                 title: str = "Scaling-law fits", flops_per_param_token: float = 6.0) -> dict[str, Any]:
    """Write a markdown and a JSON summary of ``fits`` (``{name: fit}``) and ``runs``.

    For each fit: law and formula, parameters with bootstrap intervals (if the fit carries ``.ci``),
    derived exponents (Chinchilla: ``N_opt ~ C^a``, ``D_opt ~ C^b``), objective, points used and
    excluded. ``holdout`` (optional) adds prediction errors on runs held out of the fit: either
    ``{fit_name: (x, y)}`` with ``x`` as for :func:`plot_residuals`, or a runs table, from which
    Chinchilla fits read ``(N, D)`` and other fits read ``C``. Needs no matplotlib.

    Returns the JSON document (also written to ``path_json``).
    """
    t = _runs_table(runs, flops_per_param_token)
    n_runs = len(next(iter(t.values()))) if t else 0
    doc: dict[str, Any] = {"title": title, "runs": {"n": n_runs, "table": []}, "fits": {}}
    for i in range(n_runs):
        doc["runs"]["table"].append({k: (str(v[i]) if v.dtype == object else _num(v[i])) for k, v in t.items()})
    for name, fit in fits.items():
        doc["fits"][name] = _fit_summary(fit)
    if holdout is not None:
        doc["holdout"] = {name: _holdout_summary(fits[name], xs, y, nm)
                          for name, xs, y, nm in _holdout_items(fits, holdout)}

    md = [f"# {title}", "", f"{n_runs} runs.", ""]
    for name, s in doc["fits"].items():
        level = s["ci_level"]
        ci_head = f"{round(100 * level)}% CI" if level else "CI"
        md += [f"## {name} ({s['law']})", "", f"`{s['formula']}`", "",
               f"| parameter | value | {ci_head} |", "|---|---|---|"]
        for k, v in {**s["params"], **s["derived"]}.items():
            lohi = s["ci"].get(k)
            md.append(f"| {k} | {_fmt(v)} | " + (f"[{_fmt(lohi[0])}, {_fmt(lohi[1])}]" if lohi else "-") + " |")
        md += ["", f"Objective (sum of Huber losses on log-loss): {s['objective']:.4g}; "
                   f"{s['n_points']} points used; {s['n_starts']} L-BFGS-B starts.", ""]
        if s["law"] == "chinchilla":
            d = s["derived"]
            md += [f"Compute-optimal scaling: N_opt ∝ C^{_fmt(d['a_opt'])}, D_opt ∝ C^{_fmt(d['b_opt'])}.", ""]
        if s["excluded"]:
            md.append(f"Excluded {len(s['excluded'])} points:")
            md += [f"- {p['index']}{' (' + p['name'] + ')' if p['name'] else ''}: {p['reason']}"
                   for p in s["excluded"]]
            md.append("")
    if holdout is not None:
        md += ["## Hold-out predictions", "", "| fit | points | mean abs rel. error | max abs rel. error |",
               "|---|---|---|---|"]
        for name, h in doc["holdout"].items():
            md.append(f"| {name} | {h['n_points']} | {_fmt(h['mean_abs_rel_error'])} | "
                      f"{_fmt(h['max_abs_rel_error'])} |")
        md.append("")
    if n_runs:
        cols = [c for c in ("name", "N", "D", "C", "loss", "loss_se", "top1") if c in t]
        md += ["## Runs", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in doc["runs"]["table"]:
            md.append("| " + " | ".join(row[c] if c == "name" else _fmt(row[c]) for c in cols) + " |")
        md.append("")

    for p in (path_md, path_json):
        d = os.path.dirname(os.fspath(p))
        if d:
            os.makedirs(d, exist_ok=True)
    with open(path_md, "w") as f:
        f.write("\n".join(md))
    with open(path_json, "w") as f:
        json.dump(doc, f, indent=2, allow_nan=False)
    return doc
