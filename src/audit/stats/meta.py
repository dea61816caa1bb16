"""Pooling one quantity across sites: fixed-effect and random-effects meta-analysis.

Each site reports an estimate ``y_i`` (on a scale where it is about normal: a log hazard
ratio, a C-index, a mean error) and its within-site variance ``v_i``. Pooled:

- **fixed effect** (inverse variance): ``mu = sum w y / sum w`` with ``w = 1 / v``, variance
  ``1 / sum w``;
- **random effects**: the sites' true values scatter with variance ``tau^2`` around ``mu``;
  ``w = 1 / (v + tau^2)``. ``tau^2`` by REML (Viechtbauer's fixed-point iteration, checked for
  convergence) or DerSimonian-Laird's moment estimator; truncated at 0;
- heterogeneity: Cochran's ``Q`` with its chi-square p; ``I^2 = tau^2 / (tau^2 + s^2)`` and
  ``H^2 = (tau^2 + s^2) / s^2`` with ``s^2`` the typical within-site variance
  ``(k - 1) sum w / ((sum w)^2 - sum w^2)`` (Higgins and Thompson 2002, as metafor reports
  them; for DerSimonian-Laird this ``I^2`` is ``(Q - (k - 1)) / Q``);
- the random-effects CI by Hartung-Knapp (``t`` on ``k - 1`` degrees of freedom with the
  weighted residual variance; Knapp and Hartung 2003; IntHout et al. 2014 found the normal CI
  too narrow with few sites) or the normal approximation;
- a prediction interval for a new site's true value: ``mu +- t_{k-2} sqrt(tau^2 + se^2)``
  (Higgins, Thompson and Spiegelhalter 2009; needs ``k >= 3``).

References
----------
DerSimonian R, Laird N. Meta-analysis in clinical trials. Control Clin Trials 7, 1986.
Viechtbauer W. Bias and efficiency of meta-analytic variance estimators in the random-effects
model. J Educ Behav Stat 30, 2005.
Knapp G, Hartung J. Improved tests for a random effects meta-regression with a single
covariate. Stat Med 22, 2003.
Higgins JPT, Thompson SG, Spiegelhalter DJ. A re-evaluation of random-effects meta-analysis.
J R Stat Soc A 172, 2009.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats


@lru_cache(maxsize=256)
def _t(level: float, df: int) -> float:
    """The two-sided ``level`` critical value of t on ``df`` degrees of freedom (0: normal);
    cached, as a combined audit pools thousands of quantities over the same few sites."""
    q = 0.5 + level / 2
    return float(stats.norm.ppf(q) if df == 0 else stats.t.ppf(q, df))


class MetaNotConverged(RuntimeError):
    """The REML iteration for tau^2 did not converge."""


@dataclass(frozen=True)
class Pooled:
    """One quantity pooled across ``k`` sites."""

    k: int
    method: str  # "REML" or "DL" (tau^2); "fixed" for one site
    fixed: float
    fixed_se: float
    fixed_low: float
    fixed_high: float
    estimate: float  # random effects
    se: float
    low: float
    high: float
    ci_method: str  # "Hartung-Knapp" or "normal"
    tau2: float
    q: float
    q_p: float
    i2: float
    h2: float
    pred_low: float
    pred_high: float


def tau2_dl(y: np.ndarray, v: np.ndarray) -> float:
    """DerSimonian and Laird's moment estimator of tau^2 (truncated at 0)."""
    w = 1 / v
    mu = np.sum(w * y) / np.sum(w)
    q = np.sum(w * (y - mu) ** 2)
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    return float(max(0.0, (q - (len(y) - 1)) / c)) if c > 0 else 0.0


def tau2_reml(y: np.ndarray, v: np.ndarray, tol: float = 1e-10, max_iter: int = 1000) -> float:
    """REML estimate of tau^2 by the fixed-point iteration ``tau^2 = sum w^2 ((y - mu)^2 - v)
    / sum w^2 + 1 / sum w`` (Viechtbauer 2005), from the DerSimonian-Laird value, truncated
    at 0; :class:`MetaNotConverged` when it does not settle."""
    tau2 = tau2_dl(y, v)
    for _ in range(max_iter):
        w = 1 / (v + tau2)
        mu = np.sum(w * y) / np.sum(w)
        new = max(0.0, float(np.sum(w**2 * ((y - mu) ** 2 - v)) / np.sum(w**2) + 1 / np.sum(w)))
        if abs(new - tau2) < tol * max(1.0, tau2):
            return new
        tau2 = new
    raise MetaNotConverged(f"REML tau^2 did not converge in {max_iter} iterations")


def pool(
    estimates,
    variances,
    method: str = "REML",
    hartung_knapp: bool = True,
    level: float = 0.95,
) -> Pooled:
    """Pool ``estimates`` with their within-site ``variances`` (see the module text). One
    site gives its own estimate and CI (no heterogeneity to estimate)."""
    y = np.asarray(estimates, dtype=float)
    v = np.asarray(variances, dtype=float)
    if len(y) == 0 or len(y) != len(v) or not (np.isfinite(y).all() and (v > 0).all()):
        raise ValueError("pooling needs finite estimates with positive variances, one each")
    k = len(y)
    z = _t(level, 0)
    w = 1 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    fixed_se = float(np.sqrt(1 / np.sum(w)))
    q = float(np.sum(w * (y - fixed) ** 2))
    if k == 1:
        return Pooled(
            1, "fixed", fixed, fixed_se, fixed - z * fixed_se, fixed + z * fixed_se,
            fixed, fixed_se, fixed - z * fixed_se, fixed + z * fixed_se, "normal",
            0.0, 0.0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
        )  # fmt: skip
    tau2 = tau2_reml(y, v) if method == "REML" else tau2_dl(y, v)
    wr = 1 / (v + tau2)
    mu = float(np.sum(wr * y) / np.sum(wr))
    se = float(np.sqrt(1 / np.sum(wr)))
    if hartung_knapp:
        se_ci = float(np.sqrt(np.sum(wr * (y - mu) ** 2) / ((k - 1) * np.sum(wr))))
        crit = _t(level, k - 1)
    else:
        se_ci, crit = se, z
    typical = (k - 1) * np.sum(w) / (np.sum(w) ** 2 - np.sum(w**2))
    i2 = float(tau2 / (tau2 + typical))
    if k >= 3:
        half = _t(level, k - 2) * np.sqrt(tau2 + se**2)
        pred = (mu - half, mu + half)
    else:
        pred = (float("nan"), float("nan"))
    return Pooled(
        k=k,
        method=method,
        fixed=fixed,
        fixed_se=fixed_se,
        fixed_low=fixed - z * fixed_se,
        fixed_high=fixed + z * fixed_se,
        estimate=mu,
        se=se,
        low=mu - crit * se_ci,
        high=mu + crit * se_ci,
        ci_method="Hartung-Knapp" if hartung_knapp else "normal",
        tau2=tau2,
        q=q,
        q_p=float(special.chdtrc(k - 1, q)),  # the chi-square survival function, as a ufunc
        i2=i2,
        h2=float((tau2 + typical) / typical),
        pred_low=float(pred[0]),
        pred_high=float(pred[1]),
    )


def deleted_residuals(estimates, variances, method: str = "REML") -> np.ndarray:
    """Each site's studentized deleted residual: its estimate against the random-effects pool
    of the other sites, ``(y_i - mu_(-i)) / sqrt(v_i + tau^2_(-i) + se_(-i)^2)`` (Viechtbauer
    and Cheung 2010), about standard normal for a site that belongs with the others. Needs
    at least 3 sites (NaN otherwise)."""
    y = np.asarray(estimates, dtype=float)
    v = np.asarray(variances, dtype=float)
    out = np.full(len(y), np.nan)
    if len(y) < 3:
        return out
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        rest = pool(y[keep], v[keep], method, hartung_knapp=False)
        out[i] = (y[i] - rest.estimate) / np.sqrt(v[i] + rest.tau2 + rest.se**2)
    return out
