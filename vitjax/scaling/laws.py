"""The scaling laws and what a fit of one holds: the fitted parameters, predictions, residuals,
bootstrap intervals, and the compute-optimal allocation a Chinchilla law implies.

Laws (fitted by :mod:`vitjax.scaling.fit`, intervals from :mod:`vitjax.scaling.bootstrap`)
------------------------------------------------------------------------------------------
* :class:`PowerLawFit` -- ``L(X) = E + A * X**(-alpha)``, the single-variable law of Kaplan et al. 2020
  ("Scaling Laws for Neural Language Models", Eqs. 1.1-1.3, there without the ``E`` term) with the
  irreducible-loss term of Hoffmann et al. 2022.
* :class:`ChinchillaFit` -- ``L(N, D) = E + A / N**alpha + B / D**beta``, Hoffmann et al. 2022
  ("Training Compute-Optimal Large Language Models", Sec. 3.3 "Approach 3", Eq. 2; fitting procedure
  in Appendix D.2).
* :class:`SaturatingFit` -- ``E(C) = a * (C + d)**(-b) + c``, the saturating power law that Zhai et al.
  2022 ("Scaling Vision Transformers", Sec. 2.1, Fig. 2) fit to the compute/error frontier of ViTs.
  Alabdulmohsin et al. 2023 ("Getting ViT in Shape", Eq. 2) extend this form to shape dimensions
  (width, depth, MLP size); that extension is not implemented here.

:func:`compute_optimal` turns a Chinchilla fit into the compute-optimal ``N_opt(C)``, ``D_opt(C)``
(Hoffmann et al. 2022, Eq. 4). Pure numpy.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["ExcludedPoint", "ExcludedPointsWarning", "PowerLawFit", "ChinchillaFit", "SaturatingFit",
           "BootstrapCI", "ComputeOptimal", "compute_optimal"]


# ---------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExcludedPoint:
    """A run left out of a fit: its index in the input arrays, its name (if ``names=`` was given)
    and why."""
    index: int
    name: str | None
    reason: str

    def label(self) -> str:
        return f"{self.index} ({self.name!r})" if self.name is not None else f"{self.index}"


class ExcludedPointsWarning(UserWarning):
    """Emitted when a fit drops invalid runs (NaN/inf/non-positive loss or size)."""


class _FitMixin:
    """Shared behaviour of the fit result dataclasses."""

    # Overridden by each dataclass: names of the public parameters, in order.
    _param_names: tuple[str, ...] = ()

    @property
    def params(self) -> dict[str, float]:
        """The fitted law's parameters, by name."""
        return {k: float(getattr(self, k)) for k in self._param_names}

    @property
    def derived(self) -> dict[str, float]:
        """Quantities derived from the parameters (bootstrapped alongside them); none by default."""
        return {}

    def with_ci(self, ci: Mapping[str, tuple[float, float]]):
        """A copy of this fit carrying confidence intervals ``{param: (lo, hi)}`` in ``.ci``.

        A :class:`BootstrapCI` is kept as is (it also carries ``.level`` and the ``.samples``)."""
        return dataclasses.replace(self, ci=ci if isinstance(ci, BootstrapCI) else dict(ci))

    def log_residuals(self, *inputs, loss) -> np.ndarray:
        """``log(loss) - log(predict(*inputs))``: what the Huber objective was applied to."""
        return np.log(np.asarray(loss, float)) - np.log(self.predict(*inputs))


@dataclasses.dataclass(frozen=True)
class PowerLawFit(_FitMixin):
    """``L(X) = E + A * X**(-alpha)``.

    objective: the minimised sum of Huber losses of log-residuals; n_points: runs used;
    excluded: runs dropped by input validation; n_starts: L-BFGS-B starts tried; ci: bootstrap
    intervals ``{param: (lo, hi)}`` or None. Pass a fit as ``init_grid=`` to warm-start a refit.
    """
    E: float
    A: float
    alpha: float
    objective: float
    n_points: int
    excluded: tuple[ExcludedPoint, ...] = ()
    n_starts: int = 0
    ci: Mapping[str, tuple[float, float]] | None = None
    _param_names = ("E", "A", "alpha")

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, float)
        return self.E + self.A * x ** (-self.alpha)


@dataclasses.dataclass(frozen=True)
class ChinchillaFit(_FitMixin):
    """``L(N, D) = E + A / N**alpha + B / D**beta`` (Hoffmann et al. 2022, Eq. 2).

    ``derived`` holds the compute-optimal allocation exponents ``N_opt ~ C**a_opt``,
    ``D_opt ~ C**b_opt`` with ``a_opt = beta/(alpha+beta)``, ``b_opt = alpha/(alpha+beta)``
    (Hoffmann et al. 2022, Eq. 4; see :func:`compute_optimal`).
    """
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    n_points: int
    excluded: tuple[ExcludedPoint, ...] = ()
    n_starts: int = 0
    ci: Mapping[str, tuple[float, float]] | None = None
    _param_names = ("E", "A", "B", "alpha", "beta")

    def predict(self, N, D) -> np.ndarray:
        N, D = np.asarray(N, float), np.asarray(D, float)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)

    @property
    def derived(self) -> dict[str, float]:
        s = self.alpha + self.beta
        if s <= 0:
            return {"a_opt": float("nan"), "b_opt": float("nan")}
        return {"a_opt": float(self.beta / s), "b_opt": float(self.alpha / s)}


@dataclasses.dataclass(frozen=True)
class SaturatingFit(_FitMixin):
    """``E(C) = a * (C + d)**(-b) + c`` (Zhai et al. 2022, Sec. 2.1): ``c`` is the irreducible error,
    ``d`` the compute scale below which the curve flattens (the "small compute" saturation)."""
    a: float
    b: float
    c: float
    d: float
    objective: float
    n_points: int
    excluded: tuple[ExcludedPoint, ...] = ()
    n_starts: int = 0
    ci: Mapping[str, tuple[float, float]] | None = None
    _param_names = ("a", "b", "c", "d")

    def predict(self, C) -> np.ndarray:
        C = np.asarray(C, float)
        return self.a * (C + self.d) ** (-self.b) + self.c


class BootstrapCI(dict):
    """``{param: (lo, hi)}`` percentile intervals (:func:`vitjax.scaling.bootstrap.bootstrap`);
    ``.samples`` holds the per-resample values ``{param: array[n_ok]}``, ``.n_failed`` the resamples
    whose refit raised, ``.level`` the interval's coverage (e.g. 0.95)."""
    samples: dict[str, np.ndarray]
    n_failed: int
    level: float


# ---------------------------------------------------------------------------------------------------
# Compute-optimal allocation
# ---------------------------------------------------------------------------------------------------

class ComputeOptimal(NamedTuple):
    """``N_opt = G (C/k)**a``, ``D_opt = G**-1 (C/k)**b`` (arrays shaped like C), and the exponents."""
    N_opt: np.ndarray
    D_opt: np.ndarray
    a: float
    b: float


def compute_optimal(fit: ChinchillaFit, C, flops_per_param_token: float = 6.0) -> ComputeOptimal:
    """Compute-optimal model size and data for a FLOP budget (Hoffmann et al. 2022, Eq. 4).

    Minimises ``L(N, D)`` subject to ``C = k N D`` (``k = 6``: forward+backward FLOPs per parameter per
    token, Kaplan et al. 2020, Sec. 2.1). Substituting ``D = C/(kN)`` and setting ``dL/dN = 0``::

        N_opt = G (C/k)**a,   D_opt = G**-1 (C/k)**b,
        G = (alpha A / (beta B))**(1/(alpha+beta)),  a = beta/(alpha+beta),  b = alpha/(alpha+beta).

    For ViTs, "tokens" are whatever D counts (images x patches, or images with k rescaled); ``k`` is
    the FLOPs per parameter per unit of D.

    Returns:
      ComputeOptimal(N_opt, D_opt, a, b); unpack as ``N, D, a, b = compute_optimal(fit, C)``.
    """
    if not isinstance(fit, ChinchillaFit):
        raise TypeError(f"compute_optimal needs a ChinchillaFit, got {type(fit).__name__}")
    al, be = fit.alpha, fit.beta
    if al <= 0 or be <= 0:
        raise ValueError(f"compute_optimal: need alpha > 0 and beta > 0, got alpha={al}, beta={be} "
                         f"(with a zero exponent the optimum is at N or D -> infinity)")
    C = np.asarray(C, float)
    G = (al * fit.A / (be * fit.B)) ** (1.0 / (al + be))
    a_, b_ = be / (al + be), al / (al + be)
    ck = C / flops_per_param_token
    return ComputeOptimal(G * ck ** a_, ck ** b_ / G, float(a_), float(b_))
