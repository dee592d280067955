"""From sweep records to scaling laws: fits with bootstrap intervals, the compute-optimal frontier, a
hold-out check, plots and a markdown/JSON report.

    python experiments/scaling/analyze.py --out workdirs/scaling_digits

What is fitted (records come from :mod:`vitjax.scaling.sweep`; L is the final eval loss by default):

* ``chinchilla``: ``L(N, D) = E + A/N^alpha + B/D^beta`` over every valid run (Hoffmann et al. 2022,
  Approach 3). Where several runs share (N, D) -- a learning-rate axis -- the lowest loss is used, as a
  tuned learning rate is what the law describes.
* ``compute_saturating`` and ``compute_power_law``: ``L(C) = a (C + d)^-b + c`` (Zhai et al. 2022) and
  ``L(C) = E + A C^-alpha`` on the compute frontier: the runs that reach a lower loss than every run of
  less compute (the lower envelope Zhai et al. fit).
* the compute-optimal ``N*(C) ~ C^a``, ``D*(C) ~ C^b`` from the Chinchilla fit, with ``C = k N D`` and
  ``k`` calibrated on the sweep itself (median of measured C / (N D)), so FLOPs stay XLA's.
* hold-out: the ``holdout`` largest-compute (N, D) points (each as its lowest-loss run) are left out,
  the laws refitted on the rest and asked to predict them; the report gives each relative error.

Diverged runs, runs with a missing/NaN/non-positive loss, N, D or C are excluded before fitting, with a
message listing them; a law with too few remaining points is reported as not fitted (and if no law can
be fitted, :func:`analyze_records` raises ``ValueError`` saying how many runs remain and why).
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vitjax.scaling.bootstrap import with_bootstrap
from vitjax.scaling.fit import fit_chinchilla, fit_power_law, fit_saturating
from vitjax.scaling.laws import ExcludedPointsWarning, compute_optimal
from vitjax.scaling.plots import (plot_isoloss, plot_learning_curves, plot_loss_vs_compute, plot_residuals,
                                  write_report)
from vitjax.scaling.records import describe_missing, progress, read_records

__all__ = ["analyze_sweep", "analyze_records", "select_runs", "compute_frontier", "holdout_split", "summary"]

_MIN_POINTS = {"chinchilla": 5, "compute_saturating": 4, "compute_power_law": 3}


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def select_runs(records: Sequence[Mapping[str, Any]], *, loss_key: str = "loss", n_key: str = "N_nonembed"
                ) -> tuple[list[dict], list[dict]]:
    """Splits records into fit rows ``{"name", "N", "D", "C", "loss", ...}`` and excluded runs
    ``{"name", "reason"}``: diverged, or a loss/N/D/C that is missing, non-finite or not > 0."""
    rows, excluded = [], []
    for r in records:
        name = str(r.get("name"))
        if r.get("status", "finished") != "finished":
            first = str(r.get("error") or "").split(". ")[0]
            excluded.append({"name": name, "reason": f"{r.get('status')}" + (f" ({first})" if first else "")})
            continue
        vals = {"N": _num(r.get(n_key)), "D": _num(r.get("D")), "C": _num(r.get("C")), "loss": _num(r.get(loss_key))}
        bad = [f"{k if k != 'loss' else loss_key} is {'missing/NaN' if math.isnan(v) else v}"
               for k, v in vals.items() if not (math.isfinite(v) and v > 0)]
        if bad:
            excluded.append({"name": name, "reason": "; ".join(bad)})
            continue
        # The eval loss's standard error over test examples is measured for the final loss only.
        se = _num(r.get("loss_se")) if loss_key == "loss" else float("nan")
        rows.append({"name": name, **vals, "loss_se": se, "N_total": _num(r.get("N")), "top1": _num(r.get("top1")),
                     "C_6ND": _num(r.get("C_6ND")), "epochs": _num(r.get("epochs"))})
    return rows, excluded


def compute_frontier(C, loss) -> np.ndarray:
    """Boolean mask of the compute frontier: points whose loss is below that of every point with
    less compute (ties in C: the lowest loss there)."""
    C, loss = np.asarray(C, float), np.asarray(loss, float)
    order = np.lexsort((loss, C))
    mask = np.zeros(C.size, bool)
    best = np.inf
    for i in order:
        if loss[i] < best:
            mask[i] = True
            best = loss[i]
    return mask


def holdout_split(C, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest-compute points (the hold-out set)."""
    C = np.asarray(C, float)
    mask = np.zeros(C.size, bool)
    if k > 0:
        mask[np.argsort(-C, kind="stable")[:k]] = True
    return mask


def _best_per_nd(rows: list[dict]) -> list[dict]:
    """One row per (N, D): the lowest loss (runs that differ only by learning rate, say)."""
    best: dict[tuple[float, float], dict] = {}
    for r in rows:
        key = (r["N"], r["D"])
        if key not in best or r["loss"] < best[key]["loss"]:
            best[key] = r
    return list(best.values())


def _cols(rows, *keys):
    return [np.array([r[k] for r in rows], float) for k in keys]


def _fit_compute_laws(rows, n_boot, seed, errors, fits, grids, suffix=""):
    C, L = _cols(rows, "C", "loss")
    front = compute_frontier(C, L)
    names = [r["name"] for r in rows]
    fr_names = [n for n, m in zip(names, front) if m]
    for law, fn in (("compute_saturating", fit_saturating), ("compute_power_law", fit_power_law)):
        key = law + suffix
        kw = {"init_grid": grids[law]} if grids.get(law) is not None else {}
        try:
            if n_boot:
                fits[key] = with_bootstrap(fn, C[front], L[front], n_boot=n_boot, seed=seed, names=fr_names, **kw)
            else:
                fits[key] = fn(C[front], L[front], names=fr_names, **kw)
        except ValueError as e:
            errors[key] = f"{e} (the compute frontier has {int(front.sum())} of {len(rows)} runs)"
    return front


def analyze_records(records: Sequence[Mapping[str, Any]], out_dir: str, *, loss_key: str = "loss",
                    n_key: str = "N_nonembed", holdout: int = 3, n_boot: int = 200, seed: int = 0,
                    plots: bool = True, title: str = "Scaling laws", extra: Mapping[str, Any] | None = None,
                    init_grids: Mapping[str, Any] | None = None, e_min: float | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fits the laws to sweep ``records``, writes ``report.md``, ``report.json`` and ``plots/*.png``
    under ``out_dir``, and returns the JSON document.

    Args:
      records: run records (:func:`vitjax.scaling.sweep.read_records`), or fabricated dicts with at least
        ``name``, ``N_nonembed`` (or ``n_key``), ``D``, ``C`` and ``loss`` (or ``loss_key``).
      loss_key: "loss" (final eval loss) or "best_loss".
      n_key: "N_nonembed" (Kaplan et al.'s convention) or "N" (all parameters).
      holdout: how many of the largest-compute (N, D) points to hold out for the prediction check (0: none).
      n_boot: bootstrap resamples per law (0: no intervals).
      plots: draw the PNGs (needs matplotlib).
      extra: more key/values for the report's "sweep" section (e.g. runtime, load average).
      init_grids: ``{law: init_grid}`` for "chinchilla", "compute_saturating", "compute_power_law":
        L-BFGS-B starting grids (see each fit function; e.g. ``{"chinchilla": "paper"}`` for Hoffmann
        et al.'s full 4,500-point grid). Default: each fit's default grid.
      e_min: a known lower bound of the irreducible loss E of L(N, D) (e.g. the label-noise entropy
        of ``synthetic_digits``, :func:`vitjax.data.synthetic_digits.label_noise_floor`), used by the
        Chinchilla fits, the hold-out refit included; the hold-out check then also reports the fit
        without it (``chinchilla_e_free``). None: E > 0 only.

    Raises:
      ValueError: when no law can be fitted; the message lists the excluded runs and the per-law errors.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    rows, excluded = select_runs(records, loss_key=loss_key, n_key=n_key)
    if excluded:
        log(f"analysis: excluded {len(excluded)} of {len(records)} runs from the fits -- "
            + "; ".join(f"{e['name']}: {e['reason']}" for e in excluded))
    fits: dict[str, Any] = {}
    errors: dict[str, str] = {}
    grids = dict(init_grids or {})
    unknown = set(grids) - set(_MIN_POINTS)
    if unknown:
        raise ValueError(f"init_grids: unknown laws {sorted(unknown)}; laws are {sorted(_MIN_POINTS)}")
    chin_kw = {"init_grid": grids["chinchilla"]} if grids.get("chinchilla") is not None else {}
    if e_min is not None:
        chin_kw["e_min"] = float(e_min)

    nd_rows = _best_per_nd(rows)
    N, D, L = _cols(nd_rows, "N", "D", "loss")
    nd_names = [r["name"] for r in nd_rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedPointsWarning)   # invalid points were excluded above
        try:
            fits["chinchilla"] = (with_bootstrap(fit_chinchilla, N, D, L, n_boot=n_boot, seed=seed, names=nd_names,
                                                 **chin_kw)
                                  if n_boot else fit_chinchilla(N, D, L, names=nd_names, **chin_kw))
        except ValueError as e:
            errors["chinchilla"] = f"{e} ({len(nd_rows)} distinct (N, D) among {len(rows)} valid runs)"
        front = _fit_compute_laws(rows, n_boot, seed, errors, fits, grids) if rows else np.zeros(0, bool)

        # Hold-out: refit without the largest-compute runs, predict them.
        ho_doc = None
        if holdout and nd_rows:
            # Held out: the largest-compute (N, D) points, each as its best run (see _best_per_nd).
            ho = holdout_split(_cols(nd_rows, "C")[0], min(holdout, len(nd_rows)))
            train_rows = [r for r, m in zip(nd_rows, ho) if not m]
            test_rows = [r for r, m in zip(nd_rows, ho) if m]
            ho_doc = {"held_out": [r["name"] for r in test_rows], "fits": {}}
            try:
                # From the grid, not warm-started from the full fit: that fit has seen the held-out runs.
                f = fit_chinchilla(*_cols(train_rows, "N", "D", "loss"), **chin_kw)
                ho_doc["fits"]["chinchilla"] = _predict(f, test_rows, lambda r: (r["N"], r["D"]))
                ho_doc["fits"]["chinchilla"]["params"] = f.params
            except ValueError as e:
                errors["chinchilla_holdout"] = str(e)
            if e_min is not None:      # the same refit without the bound, for comparison
                try:
                    f = fit_chinchilla(*_cols(train_rows, "N", "D", "loss"),
                                       **{k: v for k, v in chin_kw.items() if k != "e_min"})
                    ho_doc["fits"]["chinchilla_e_free"] = _predict(f, test_rows, lambda r: (r["N"], r["D"]))
                    ho_doc["fits"]["chinchilla_e_free"]["params"] = f.params
                    ho_doc["fits"]["chinchilla_e_free"]["note"] = "L(N, D) refitted without e_min"
                except ValueError as e:
                    errors["chinchilla_e_free_holdout"] = str(e)
            sub_errors: dict[str, str] = {}
            sub_fits: dict[str, Any] = {}
            _fit_compute_laws(train_rows, 0, seed, sub_errors, sub_fits, grids)
            on_front = {r["name"] for r, m in zip(rows, front) if m}
            for law, f in sub_fits.items():
                ho_doc["fits"][law] = _predict(f, [r for r in test_rows if r["name"] in on_front], lambda r: (r["C"],))
                ho_doc["fits"][law]["params"] = f.params
                ho_doc["fits"][law]["note"] = "predicts the held-out runs that lie on the full compute frontier"
            errors.update({k + "_holdout": v for k, v in sub_errors.items()})

    if not fits:
        ex = "; ".join(f"{e['name']}: {e['reason']}" for e in excluded) or "none"
        raise ValueError(f"no scaling law could be fitted: {len(rows)} of {len(records)} runs are valid "
                         f"(excluded: {ex}). " + " | ".join(f"{k}: {v}" for k, v in errors.items()))
    for k, v in errors.items():
        log(f"analysis: {k} not fitted: {v}")

    # Compute-optimal frontier, with k calibrated so that C = k N D matches the measured FLOPs.
    k_eff = float(np.median([r["C"] / (r["N"] * r["D"]) for r in rows])) if rows else 6.0
    co_doc = None
    if "chinchilla" in fits:
        chin = fits["chinchilla"]
        Cs = np.array(sorted({float(min(r["C"] for r in rows)), float(max(r["C"] for r in rows))}))
        Cs = np.concatenate([Cs, Cs[-1:] * 10, Cs[-1:] * 100])
        try:
            N_opt, D_opt, a_, b_ = compute_optimal(chin, Cs, k_eff)
            G = float((chin.alpha * chin.A / (chin.beta * chin.B)) ** (1 / (chin.alpha + chin.beta)))
            co_doc = {"k_flops_per_param_image": k_eff, "a": a_, "b": b_, "G": G,
                      "a_ci": (chin.ci or {}).get("a_opt"), "b_ci": (chin.ci or {}).get("b_opt"),
                      "table": [{"C": float(c), "N_opt": float(n), "D_opt": float(d),
                                 "L_opt": float(chin.predict(n, d))} for c, n, d in zip(Cs, N_opt, D_opt)]}
        except ValueError as e:
            errors["compute_optimal"] = str(e)

    os.makedirs(out_dir, exist_ok=True)
    md_path, json_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.json")
    table = [{k: r[k] for k in ("name", "N", "D", "C", "loss", "loss_se", "top1", "N_total", "C_6ND", "epochs")}
             for r in rows]
    doc = write_report(md_path, json_path, fits, table, title=title, flops_per_param_token=k_eff)
    doc["settings"] = {"loss": loss_key, "N": n_key, "holdout": holdout, "n_boot": n_boot, "seed": seed,
                       "e_min": e_min}
    doc["excluded_runs"] = excluded
    doc["not_fitted"] = errors
    doc["compute_frontier"] = [r["name"] for r, m in sorted(zip(rows, front), key=lambda t: t[0]["C"]) if m]
    doc["compute_optimal"] = co_doc
    doc["holdout_check"] = ho_doc
    ratios = [r["C"] / r["C_6ND"] for r in rows if math.isfinite(r["C_6ND"]) and r["C_6ND"] > 0]
    doc["flops"] = {"k_flops_per_param_image": k_eff,
                    "C_xla_over_6ND": {"min": min(ratios), "median": float(np.median(ratios)), "max": max(ratios)}
                    if ratios else None}
    doc["sweep"] = dict(extra or {})

    paths = {}
    if plots and rows:
        pdir = os.path.join(out_dir, "plots")
        if "chinchilla" in fits:
            chin = fits["chinchilla"]
            paths["loss_vs_compute"] = plot_loss_vs_compute(
                table, chin, os.path.join(pdir, "loss_vs_compute.png"), flops_per_param_token=k_eff,
                title="loss vs FLOPs: L(N, D) fit per size, compute-optimal")
            Nr, Dr = (min(r["N"] for r in rows) / 2, max(r["N"] for r in rows) * 4), \
                (min(r["D"] for r in rows) / 2, max(r["D"] for r in rows) * 4)
            try:
                paths["isoloss"] = plot_isoloss(chin, Nr, Dr, os.path.join(pdir, "isoloss.png"), table,
                                                flops_per_param_token=k_eff)
            except ValueError as e:      # alpha or beta at 0: no compute-optimal line
                errors["isoloss_plot"] = str(e)
            paths["residuals_chinchilla"] = plot_residuals(chin, (N, D), L, os.path.join(pdir, "residuals_chinchilla.png"),
                                                           title="L(N, D) fit: log-residuals")
        for law in ("compute_saturating", "compute_power_law"):
            if law in fits:
                paths[f"loss_vs_compute_{law[8:]}"] = plot_loss_vs_compute(
                    table, fits[law], os.path.join(pdir, f"loss_vs_compute_{law[8:]}.png"),
                    title=f"loss vs FLOPs: {law[8:].replace('_', ' ')} law on the frontier")
        if "compute_saturating" in fits:
            Cf, Lf = _cols([r for r, m in zip(rows, front) if m], "C", "loss")
            paths["residuals_saturating"] = plot_residuals(fits["compute_saturating"], Cf, Lf,
                                                           os.path.join(pdir, "residuals_saturating.png"),
                                                           title="L(C) saturating fit (frontier): log-residuals")
        by_name = {str(r.get("name")): r for r in records}
        curves, sizes = {}, {}
        for r in rows:
            pts = [p for p in by_name[r["name"]].get("curve", []) if p.get("loss")]
            if pts:
                curves[r["name"]] = ([p["images"] for p in pts], [p["loss"] for p in pts])
                sizes[r["name"]] = r["N"]
        if curves:
            paths["learning_curves"] = plot_learning_curves(
                curves, sizes, os.path.join(pdir, "learning_curves.png"), xlabel="images seen",
                ylabel="eval loss", size_label=f"parameters ({n_key})",
                title="eval loss during training, coloured by model size")
    doc["plots"] = {k: os.path.relpath(v, out_dir) for k, v in paths.items()}
    doc["not_fitted"] = errors

    with open(json_path, "w") as fh:
        json.dump(_json_safe(doc), fh, indent=2, allow_nan=False)
    with open(md_path, "a") as fh:
        fh.write("\n" + "\n".join(_markdown_extra(doc)) + "\n")
    return doc


def _predict(fit, rows, inputs) -> dict[str, Any]:
    pts = []
    for r in rows:
        pred = float(fit.predict(*inputs(r)))
        se = r.get("loss_se", float("nan"))
        pts.append({"name": r["name"], "C": r["C"], "observed": r["loss"], "predicted": pred,
                    "rel_error": (pred - r["loss"]) / r["loss"], "observed_se": se,
                    "error_in_se": (pred - r["loss"]) / se if se and math.isfinite(se) and se > 0 else None})
    errs = [abs(p["rel_error"]) for p in pts]
    return {"points": pts, "mean_abs_rel_error": float(np.mean(errs)) if errs else None,
            "max_abs_rel_error": float(np.max(errs)) if errs else None}


def _json_safe(obj):
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _g(v, fmt=".4g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _markdown_extra(doc) -> list[str]:
    md = ["## Sweep", ""]
    s = doc["settings"]
    md.append(f"L = `{s['loss']}` (eval cross-entropy), N = `{s['N']}`, D = images seen, C = training FLOPs "
              f"from XLA's cost analysis; {s['n_boot']} bootstrap resamples per law."
              + (f" L(N, D) fitted with E >= {s['e_min']:.4g} (a known lower bound of the loss)."
                 if s.get("e_min") is not None else ""))
    for k, v in doc["sweep"].items():
        md.append(f"- {k}: {v}")
    md.append("")
    if doc["excluded_runs"]:
        md += [f"Excluded {len(doc['excluded_runs'])} runs from every fit:"]
        md += [f"- {e['name']}: {e['reason']}" for e in doc["excluded_runs"]]
        md.append("")
    for k, v in doc["not_fitted"].items():
        md.append(f"- not fitted: **{k}**: {v}")
    if doc["not_fitted"]:
        md.append("")
    fl = doc["flops"]
    if fl["C_xla_over_6ND"]:
        r = fl["C_xla_over_6ND"]
        md += [f"FLOPs: C = {_g(fl['k_flops_per_param_image'])} x N x D on the median (per parameter per image); "
               f"XLA's count / Kaplan's 6·N·tokens = {_g(r['min'], '.3g')}-{_g(r['max'], '.3g')} "
               f"(median {_g(r['median'], '.3g')}): attention scores, embeddings, head and optimizer are "
               f"not in 6·N·tokens.", ""]
    md += [f"Compute frontier (runs fitted by the L(C) laws): {', '.join(doc['compute_frontier']) or 'none'}.", ""]
    co = doc["compute_optimal"]
    if co:
        ci = lambda c: f" [{_g(c[0], '.3g')}, {_g(c[1], '.3g')}]" if c else ""  # noqa: E731
        md += ["## Compute-optimal frontier", "",
               f"N*(C) = G (C/k)^a, D*(C) = (C/k)^b / G with k = {_g(co['k_flops_per_param_image'])} FLOPs per "
               f"parameter per image, G = {_g(co['G'])}: **a = {_g(co['a'], '.3f')}**{ci(co['a_ci'])}, "
               f"**b = {_g(co['b'], '.3f')}**{ci(co['b_ci'])} (95% bootstrap).", "",
               "| C [FLOPs] | N* | D* [images] | predicted L |", "|---|---|---|---|"]
        md += [f"| {t['C']:.3g} | {t['N_opt']:.3g} | {t['D_opt']:.3g} | {t['L_opt']:.4f} |" for t in co["table"]]
        md.append("")
    ho = doc["holdout_check"]
    if ho:
        md += ["## Hold-out check", "",
               f"Fitted without the {len(ho['held_out'])} largest-compute runs ({', '.join(ho['held_out'])}), "
               f"then asked to predict their loss. L(N, D) predicts every held-out run; the L(C) laws describe "
               f"the compute frontier, so they predict only the held-out runs that lie on it.", "",
               "Observed ± one standard error of the eval loss over the test examples (where the sweep "
               "measured it); the last column is the prediction error in those standard errors.", "",
               "| law | run | C | observed | predicted | rel. error | error / SE |", "|---|---|---|---|---|---|---|"]
        for law, h in ho["fits"].items():
            for p in h["points"]:
                se = p.get("observed_se")
                obs = f"{p['observed']:.4f}" + (f" ± {se:.4f}" if se is not None and math.isfinite(se) else "")
                md.append(f"| {law} | {p['name']} | {p['C']:.3g} | {obs} | {p['predicted']:.4f} | "
                          f"{100 * p['rel_error']:+.1f}% | {_g(p.get('error_in_se'), '+.1f')} |")
            if not h["points"]:
                md.append(f"| {law} | (no held-out run is on the compute frontier) | | | | | |")
        md.append("")
        for law, h in ho["fits"].items():
            if h["points"]:
                md.append(f"- {law}: mean |rel. error| {100 * h['mean_abs_rel_error']:.1f}%, "
                          f"max {100 * h['max_abs_rel_error']:.1f}% (goal: <= 5%)")
        md.append("")
    if doc["plots"]:
        md += ["## Plots", ""] + [f"![{k}]({v})" for k, v in doc["plots"].items()] + [""]
    return md


def analyze_sweep(sweep_dir: str, **kwargs) -> dict[str, Any]:
    """:func:`analyze_records` on ``<sweep_dir>/runs/*/record.json``, writing into ``sweep_dir``; options not
    given default to the ``analysis`` section of the sweep config saved in ``sweep.json``."""
    meta_path = os.path.join(sweep_dir, "sweep.json")
    meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
    opts = dict((meta.get("sweep_config") or {}).get("analysis") or {})
    opts.update({k: v for k, v in kwargs.items() if v is not None})
    if opts.get("e_min") is not None and float(opts["e_min"]) <= 0:    # --e_min 0: no bound
        opts["e_min"] = None
    records = read_records(sweep_dir)
    order = {r["name"]: i for i, r in enumerate(meta.get("runs") or [])}     # plan order, where known
    records.sort(key=lambda r: order.get(r.get("name"), len(order)))
    # A sweep trained by parallel jobs is analysed as it stands: say which planned runs are not in it.
    missing = describe_missing(progress(sweep_dir))
    if not records:
        raise ValueError(f"{sweep_dir} holds no finished runs (no runs/*/record.json); run the sweep first "
                         f"({missing})")
    extra = dict(opts.pop("extra", None) or {})
    extra.setdefault("planned runs", missing)
    extra.setdefault("runs recorded", f"{len(records)} ({sum(r.get('status') == 'diverged' for r in records)} diverged)")
    extra.setdefault("training wall time, sum over runs", f"{sum(r.get('wall_s') or 0 for r in records):.0f} s")
    for i, inv in enumerate(meta.get("invocations") or []):
        extra.setdefault(f"sweep invocation {i + 1}",
                         f"{inv.get('started')}: {inv['wall_s']:.0f} s, trained {inv['trained']} runs, load average "
                         f"{_g(inv.get('loadavg_1m_start'), '.2f')} -> {_g(inv.get('loadavg_1m_end'), '.2f')} "
                         f"on {inv.get('cpu_count')} CPUs")
    try:
        return analyze_records(records, sweep_dir, extra=extra, **opts)
    except ValueError as e:
        raise ValueError(f"{e} ({missing})") from e


def summary(doc: Mapping[str, Any]) -> str:
    """A few lines for the terminal: each law's parameters with intervals, and the hold-out errors."""
    lines = []
    for name, f in doc["fits"].items():
        ci = f["ci"]
        parts = [f"{k}={_g(v)}" + (f" [{_g(ci[k][0], '.3g')}, {_g(ci[k][1], '.3g')}]" if k in ci else "")
                 for k, v in {**f["params"], **f["derived"]}.items()]
        lines.append(f"{name}: " + ", ".join(parts))
    for law, h in ((doc.get("holdout_check") or {}).get("fits") or {}).items():
        if h["points"]:
            lines.append(f"hold-out {law}: mean |rel. error| {100 * h['mean_abs_rel_error']:.1f}%, "
                         f"max {100 * h['max_abs_rel_error']:.1f}% over {len(h['points'])} runs")
            for p in h["points"]:
                se = p.get("observed_se")
                se_txt = f" +- {se:.4f}" if se is not None and math.isfinite(se) else ""
                lines.append(f"  {p['name']}: observed {p['observed']:.4f}{se_txt}, predicted {p['predicted']:.4f} "
                             f"({100 * p['rel_error']:+.1f}%)")
    return "\n".join(lines)
