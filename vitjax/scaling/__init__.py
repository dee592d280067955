"""Scaling-law fitting for ViT sweeps (pure numpy/scipy; plotting needs matplotlib, imported lazily).

    from vitjax.scaling import fit_chinchilla, with_bootstrap, compute_optimal
    fit = with_bootstrap(fit_chinchilla, N, D, loss, n_boot=200)      # fit + 95% bootstrap CIs
    N_opt, D_opt, a, b = compute_optimal(fit, C=1e20)

Sweeps: ``vitjax.scaling.sweep`` plans and trains a grid/star of runs and records N, D, C, losses and
learning curves per run (it imports JAX and the Trainer, so it is not imported here: fitting stays free
of JAX); ``vitjax.scaling.analysis`` turns those records (``vitjax.scaling.records``) into fits, plots
and a report (command lines: experiments/scaling/sweep.py and analyze.py; guide: docs/scaling.md).

References: Kaplan et al. 2020 (power laws); Hoffmann et al. 2022 (Chinchilla, Approach 3 fit and
compute-optimal allocation); Zhai et al. 2022 (saturating law for ViTs); Alabdulmohsin et al. 2023
(shape-aware extension, not implemented).

Modules: ``laws`` (the law forms, fit results, compute-optimal allocation), ``fit`` (the multi-start
Huber/L-BFGS-B fits), ``bootstrap`` (resampled intervals), ``plots`` (figures and the report).
"""
from vitjax.scaling.bootstrap import bootstrap, with_bootstrap  # noqa: F401
from vitjax.scaling.fit import (  # noqa: F401
    CHINCHILLA_DEFAULT_GRID,
    CHINCHILLA_PAPER_GRID,
    fit_chinchilla,
    fit_power_law,
    fit_saturating,
    huber,
)
from vitjax.scaling.laws import (  # noqa: F401
    BootstrapCI,
    ChinchillaFit,
    ComputeOptimal,
    ExcludedPoint,
    ExcludedPointsWarning,
    PowerLawFit,
    SaturatingFit,
    compute_optimal,
)
from vitjax.scaling.plots import (  # noqa: F401  (matplotlib is imported only when a plot is drawn)
    plot_isoloss,
    plot_learning_curves,
    plot_loss_vs_compute,
    plot_residuals,
    write_report,
)

__all__ = [
    "fit_power_law", "fit_chinchilla", "fit_saturating", "bootstrap", "with_bootstrap",
    "compute_optimal", "huber", "PowerLawFit", "ChinchillaFit", "SaturatingFit", "ComputeOptimal",
    "BootstrapCI", "ExcludedPoint", "ExcludedPointsWarning", "CHINCHILLA_PAPER_GRID",
    "CHINCHILLA_DEFAULT_GRID", "plot_loss_vs_compute", "plot_isoloss", "plot_learning_curves",
    "plot_residuals", "write_report",
]
