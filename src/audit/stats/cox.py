"""One Cox fitting layer for every stage: a fit is checked before any number leaves it.

lifelines' ``CoxPHFitter`` (Efron ties, as R's ``coxph``) does the fitting. It standardises
every column internally (``_norm_mean``, ``_norm_std``) and reports coefficients on the
user's scale; this layer does not trust its stopping rule, though. lifelines stops when the
relative change of the log-likelihood falls under 1e-9, which a shrinking Newton step reaches
far from the maximum: on scikit-survival's ``flchain`` cohort censored at 5 years, the kappa
light chain (largest value 21 SD above the mean) gets a coefficient of -19.7 where the
maximum is +0.272, with nothing but a warning. So each fit is checked here, independently of
lifelines' own criteria:

1. the score (gradient of the Efron partial log-likelihood, computed here by hand) is zero at
   the estimate: the Newton decrement ``g' V g / 2`` (``V`` lifelines' variance matrix, the
   inverse of minus the Hessian) is under ``1e-6``;
2. the Hessian is negative definite (``V`` finite and positive definite): every term is
   estimable;
3. the log-likelihood is not below the null model's (all coefficients 0);
4. no standardised coefficient or its standard error exceeds 10 (a coefficient that keeps
   growing: monotone likelihood, a term that separates deaths from survivors);
5. where asked (``cross_check``), scikit-survival's ``CoxPHSurvivalAnalysis`` fitted on the
   same standardised terms agrees within ``1e-3`` per standardised coefficient.

A fit that fails a check is refitted with damped Newton steps (step sizes 0.5, then 0.2 with
more iterations), then from scikit-survival's estimate. A fit that still fails is a result,
not an exception: :class:`CoxFit` with ``status = "not_converged"`` and the reason, which the
stages write to their tables and notes. Every warning lifelines raises is recorded on the fit
(``warnings``), never dropped unread.

References
----------
Efron B. The efficiency of Cox's likelihood function for censored data. JASA 72, 1977.
Therneau TM, Grambsch PM. Modeling survival data: extending the Cox model. Springer, 2000
(section 3.5: convergence, infinite coefficients / monotone likelihood).
Boyd S, Vandenberghe L. Convex optimization. Cambridge, 2004 (9.5: the Newton decrement).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DECREMENT_TOLERANCE = 1e-6  # g' V g / 2 at the estimate (scale-free)
MAX_STANDARDISED = 10.0  # |coefficient| or SE per SD of a term: beyond, monotone likelihood
CROSS_CHECK_TOLERANCE = 1e-3  # lifelines vs scikit-survival, per standardised coefficient
ATTEMPTS = (  # (label, lifelines fit_options)
    ("Newton-Raphson", {}),
    ("damped Newton-Raphson (step 0.5)", {"step_size": 0.5, "max_steps": 200}),
    ("damped Newton-Raphson (step 0.2)", {"step_size": 0.2, "max_steps": 500}),
)


class CoxNotConverged(RuntimeError):
    """A Cox fit that failed its checks, raised by :meth:`CoxFit.require` for callers that
    cannot use a partial result (they turn it into a note)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class CoxFit:
    """A checked Cox fit.

    Attributes
    ----------
    fitter : the lifelines ``CoxPHFitter`` (None when no attempt produced an estimate).
    data : the frame fitted (terms, ``time``, ``event``; complete cases).
    status : ``ok`` or ``not_converged``.
    reason : why not (None when ok).
    method : the attempt that passed the checks (e.g. ``damped Newton-Raphson (step 0.5)``).
    notes : what happened on the way (earlier attempts that failed, constant terms left out,
        lifelines' warnings), for the stage's notes.
    dropped : terms left out because they are constant among the fitted rows.
    separating : terms whose coefficient grows without bound under the default and a damped
        step alike (monotone likelihood); the fit is then ``not_converged`` and smaller steps
        are not tried (they cannot help). A default step that diverges on a heavy-tailed term
        can look the same, hence the damped second look.
    newton_decrement, log_likelihood, log_likelihood_null : the checks' quantities.
    cross_check : the largest difference to scikit-survival per standardised coefficient
        (None when not run).
    """

    fitter: object | None
    data: pd.DataFrame
    status: str
    reason: str | None = None
    method: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    separating: list[str] = field(default_factory=list)
    newton_decrement: float = float("nan")
    log_likelihood: float = float("nan")
    log_likelihood_null: float = float("nan")
    cross_check: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def summary(self) -> pd.DataFrame:
        """lifelines' summary (coefficients on the user's scale)."""
        return self.fitter.summary

    def require(self) -> "CoxFit":
        """This fit, or :class:`CoxNotConverged` with the reason."""
        if not self.ok:
            raise CoxNotConverged(self.reason or "the Cox fit did not converge")
        return self


def efron_loglik(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    beta: np.ndarray,
    strata: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Efron partial log-likelihood and its gradient (score) at ``beta``.

    Written by hand, O(n p) after a sort, so that a fit's convergence is checked by code that
    is not the code that fitted it. Per distinct death time ``t`` with ``d`` deaths ``D`` and
    risk set ``R``, for ``l = 0 .. d-1``: ``den_l = S0(R) - l/d S0(D)``, and
    ``ll = sum_D eta - sum_l log den_l``; ``grad = sum_D x - sum_l (S1(R) - l/d S1(D)) / den_l``.
    """
    x = np.asarray(x, float)
    x = x[:, None] if x.ndim == 1 else x
    time, event = np.asarray(time, float), np.asarray(event, int)
    if strata is None:
        strata = np.zeros(len(time), dtype=int)
    ll, grad = 0.0, np.zeros(x.shape[1])
    for s in pd.unique(strata):
        m = strata == s
        a, b = _efron_one(x[m], time[m], event[m], np.asarray(beta, float))
        ll += a
        grad += b
    return ll, grad


def _efron_one(x, time, event, beta):
    order = np.argsort(time, kind="stable")
    x, time, event = x[order], time[order], event[order]
    parts = _efron_parts(x, time, event, beta)
    if parts is None:
        return 0.0, np.zeros(x.shape[1])
    eta, shift, dead, _, num, den = parts
    ll = float(eta[dead].sum() - np.sum(np.log(den) + shift))
    grad = x[dead].sum(axis=0) - (num / den[:, None]).sum(axis=0)
    return ll, grad


def _efron_parts(x, time, event, beta):
    """For subjects sorted by ``time``: the linear predictor and its shift, the deaths, each
    death's death-time index ``g``, and Efron's numerator ``S1(R) - l/d S1(D)`` and
    denominator ``S0(R) - l/d S0(D)`` of each death (``l``: its rank among the ``d`` deaths
    of its time); None without deaths."""
    eta = x @ beta
    shift = float(eta.max()) if len(eta) else 0.0
    r = np.exp(eta - shift)
    s0 = np.cumsum(r[::-1])[::-1]  # sum over j >= i (times sorted ascending)
    s1 = np.cumsum((x * r[:, None])[::-1], axis=0)[::-1]
    dead = np.flatnonzero(event == 1)
    if len(dead) == 0:
        return None
    death_times = np.unique(time[dead])
    g = np.searchsorted(death_times, time[dead])  # each death's death-time index
    first_of_time = np.searchsorted(time, death_times, side="left")  # risk set starts
    d = np.bincount(g, minlength=len(death_times)).astype(float)
    s0_d = np.bincount(g, weights=r[dead], minlength=len(death_times))
    s1_d = np.zeros((len(death_times), x.shape[1]))
    np.add.at(s1_d, g, x[dead] * r[dead, None])
    # rank: each death's rank among the deaths at its time (0 .. d-1)
    start = np.r_[0, np.cumsum(d)[:-1]].astype(int)
    rank = np.arange(len(dead)) - start[g]
    frac = rank / d[g]
    den = s0[first_of_time][g] - frac * s0_d[g]
    num = s1[first_of_time][g] - frac[:, None] * s1_d[g]
    return eta, shift, dead, g, num, den


def schoenfeld_test(
    x: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    beta: np.ndarray,
    variance: np.ndarray,
    strata: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Grambsch-Therneau test of proportional hazards per term on the scaled Schoenfeld
    residuals against the rank of the death times: ``(statistics, p-values)``, chi-squared
    on 1 df each.

    The statistic of lifelines' ``proportional_hazard_test`` and of R's ``cox.zph`` before
    survival 3.0 (scaled residuals ``D * s @ V``, statistic
    ``(sum_k (r_k - rbar) s*_k)^2 / (D se^2 sum_k (r_k - rbar)^2)``), with ``r_k`` the rank of
    death k's time among the deaths, tied times sharing their average rank as R's ``rank``
    gives them. (lifelines' ``"rank"`` transform numbers tied deaths in the order of the rows,
    so its statistic changed when the rows were shuffled, and with strata it numbers them
    stratum after stratum; with this rank it equals lifelines given the average rank as its
    time transform, in any row order: tested.) The residuals come
    from the risk-set sums of one sorted pass per stratum, where lifelines loops over the
    subjects in Python and grows its array by appending (about 5 s a model at 100,000
    subjects, against 0.05 s). Efron ties: the expected covariate at a death time is the mean
    over ``l`` of ``(S1(R) - l/d S1(D)) / (S0(R) - l/d S0(D))``. Raises ValueError with fewer
    than two deaths (no trend to test).

    References
    ----------
    Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on weighted
    residuals. Biometrika 81, 1994.
    """
    from scipy.stats import chi2, rankdata

    x = np.asarray(x, float)
    x = x[:, None] if x.ndim == 1 else x
    time, event = np.asarray(time, float), np.asarray(event, int)
    codes = (
        np.zeros(len(time), dtype=np.int64)
        if strata is None
        else np.unique(np.asarray(strata), return_inverse=True)[1].ravel()
    )
    order = np.lexsort((event, time, codes))
    x, time, event, codes = x[order], time[order], event[order], codes[order]
    resid = np.zeros_like(x)
    bounds = np.r_[0, np.flatnonzero(np.diff(codes)) + 1, len(codes)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        parts = _efron_parts(x[lo:hi], time[lo:hi], event[lo:hi], np.asarray(beta, float))
        if parts is None:
            continue
        _, _, dead, g, num, den = parts
        d = np.bincount(g).astype(float)
        expected = (
            np.stack([np.bincount(g, weights=num[:, j] / den) for j in range(x.shape[1])], axis=1)
            / d[:, None]
        )
        resid[lo + dead] = x[lo + dead] - expected[g]
    deaths = np.flatnonzero(event == 1)
    n_deaths = len(deaths)
    if n_deaths < 2:
        raise ValueError("fewer than two deaths: no trend over time to test")
    variance = np.asarray(variance, float)
    scaled = n_deaths * resid[deaths] @ variance
    rank = rankdata(time[deaths])  # tied times: their average rank
    centred = rank - rank.mean()
    statistic = (centred @ scaled) ** 2 / (n_deaths * np.diag(variance) * float(centred @ centred))
    return statistic, chi2.sf(statistic, 1)


def fit_cox(
    df: pd.DataFrame,
    terms: pd.DataFrame,
    penalizer: float = 0.0,
    strata: pd.Series | None = None,
    *,
    cross_check: str = "auto",
) -> CoxFit:
    """Fit and check a Cox model of ``terms`` (Efron ties).

    Parameters
    ----------
    df : holds ``time`` and ``event`` (row-aligned with ``terms``).
    terms : the design matrix (numeric columns); rows with any missing term are left out
        (complete cases, as R's ``coxph``), and a column constant among the rest is dropped
        (named in ``dropped``).
    penalizer : lifelines' ridge penalty (0: none).
    strata : levels that get their own baseline hazard.
    cross_check : ``"always"``, ``"never"``, or ``"auto"`` (only when the first attempt did
        not pass, or lifelines warned). Not run with strata or a penalty (scikit-survival's
        model differs there).
    """
    problem = _Problem.of(df, terms, penalizer, strata)
    base = CoxFit(
        fitter=None,
        data=problem.data,
        status="not_converged",
        dropped=problem.dropped,
        notes=list(problem.notes),
    )
    if int(problem.data["event"].sum()) == 0:
        base.reason = "no deaths among the fitted subjects"
        return base
    base.log_likelihood_null = problem.ll_null
    failures: list[str] = []
    for i, (label, options, initial) in enumerate(_attempts(problem)):
        fit = _attempt(problem, options, initial)
        if isinstance(fit, str):
            failures.append(f"{label}: {fit}")
            continue
        cph, caught = fit
        verdict, decrement = _check(cph, problem)
        if verdict is not None:
            failures.append(f"{label}: {verdict}")
            wild = _separating(cph, problem)
            if wild and i >= 1:  # a damped step runs off too: the estimate is infinite, and
                base.separating = wild  # no smaller step finds a finite maximum
                break
            continue
        result = _accepted(problem, cph, caught, label, decrement, failures)
        if cross_check == "always" or (cross_check == "auto" and (failures or caught)):
            _cross_check(result, problem, label)
        return result
    base.reason = _failure_reason(base.separating, failures)
    return base


@dataclass
class _Problem:
    """One Cox model to fit: the complete cases, the terms kept, their standardised values
    ``z`` (centre and ``scale`` per term) and the null model's log-likelihood."""

    data: pd.DataFrame
    cols: list[str]
    dropped: list[str]
    notes: list[str]
    z: np.ndarray
    scale: np.ndarray
    t: np.ndarray
    e: np.ndarray
    st: np.ndarray | None
    penalizer: float
    ll_null: float = float("nan")
    sksurv_beta: np.ndarray | None = None  # scikit-survival's estimate, once computed

    @classmethod
    def of(cls, df, terms: pd.DataFrame, penalizer: float, strata) -> _Problem:
        data = terms.copy()
        data["time"] = np.asarray(df["time"], float)
        data["event"] = np.asarray(df["event"], float).astype(int)
        if strata is not None:
            data["_stratum"] = strata.astype(object).to_numpy()
        data = data.dropna()
        dropped = [c for c in terms.columns if data[c].nunique() <= 1]
        data = data.drop(columns=dropped)
        cols = [c for c in terms.columns if c not in dropped]
        notes = (
            [f"left out, constant among the fitted subjects: {', '.join(dropped)}"]
            if dropped
            else []
        )
        x = data[cols].to_numpy(float)
        center = x.mean(axis=0) if len(cols) and len(x) else np.zeros(len(cols))
        scale = x.std(axis=0, ddof=1) if len(cols) and len(x) > 1 else np.ones(len(cols))
        problem = cls(
            data=data,
            cols=cols,
            dropped=dropped,
            notes=notes,
            z=(x - center) / np.where(scale > 0, scale, 1.0),
            scale=scale,
            t=data["time"].to_numpy(float),
            e=data["event"].to_numpy(int),
            st=data["_stratum"].to_numpy() if strata is not None else None,
            penalizer=penalizer,
        )
        if problem.e.sum() > 0:
            problem.ll_null, _ = efron_loglik(
                problem.z, problem.t, problem.e, np.zeros(len(cols)), problem.st
            )
        return problem

    @property
    def plain(self) -> bool:
        """Unstratified, unpenalised, with terms: scikit-survival fits the same model."""
        return self.st is None and self.penalizer == 0 and bool(self.cols)

    def reference(self) -> np.ndarray | None:
        """scikit-survival's estimate on the standardised terms (computed once)."""
        if self.sksurv_beta is None:
            self.sksurv_beta = _sksurv_beta(self.z, self.t, self.e)
        return self.sksurv_beta


def _attempts(problem: _Problem):
    """``(label, lifelines fit_options, initial point)`` of each attempt in turn: the
    :data:`ATTEMPTS`, then, as a last resort where scikit-survival fits the same model,
    damped steps from its estimate."""
    for label, options in ATTEMPTS:
        yield label, options, None
    if problem.plain and problem.reference() is not None:
        yield (
            "Newton-Raphson from scikit-survival's estimate",
            {"step_size": 0.5, "max_steps": 200},
            problem.sksurv_beta,
        )


def _accepted(problem: _Problem, cph, caught, label, decrement, failures) -> CoxFit:
    """The fit that passed the checks, with notes on the attempts before it and on
    lifelines' warnings."""
    result = CoxFit(
        fitter=cph,
        data=problem.data,
        status="ok",
        method=label,
        dropped=problem.dropped,
        notes=list(problem.notes),
        warnings=caught,
        log_likelihood_null=problem.ll_null,
        log_likelihood=float(cph.log_likelihood_),
        newton_decrement=decrement,
    )
    if failures:
        result.notes.append("refitted with " + label + " after " + "; ".join(failures))
    if caught:
        result.notes.append(
            "lifelines warned (checks passed): "
            + "; ".join(sorted({w.split(".")[0] for w in caught}))
        )
    return result


def _cross_check(result: CoxFit, problem: _Problem, label: str) -> None:
    """Compare the standardised coefficients with scikit-survival's; a disagreement makes
    the fit ``not_converged``."""
    if not problem.plain:
        return
    ref = problem.reference()
    if ref is None:
        return
    mine = result.fitter.params_.to_numpy() * problem.scale
    result.cross_check = float(np.max(np.abs(mine - ref)))
    if result.cross_check > CROSS_CHECK_TOLERANCE * max(1.0, np.max(np.abs(ref))):
        result.status = "not_converged"
        result.reason = (
            f"lifelines ({label}) and scikit-survival disagree by "
            f"{result.cross_check:.3g} on a standardised coefficient"
        )


def _failure_reason(separating: list[str], failures: list[str]) -> str:
    """Why no attempt gave a fit."""
    if separating:
        return (
            f"the likelihood keeps rising as the coefficient of "
            f"{', '.join(separating)} grows (monotone likelihood: the term "
            "separates deaths from survivors, or is nearly constant among the "
            "deaths); its hazard ratio is infinite, so this model is not reported"
        )
    return "no fit passed the convergence checks: " + "; ".join(failures)


# lifelines computes Efron's tie correction either one distinct time at a time (a Python
# loop over the times) or in batches of tied times. With many ties (times in whole days: a
# registry of 100,000 subjects has under 2,000 distinct times) the batches are five times
# faster; with few, the loop is. Both give the same fit (benchmarks/RESULTS.md, "Registry
# scale"); lifelines' own choice picked the loop for such cohorts.
BATCH_DISTINCT_SHARE = 0.5


def batch_mode(times) -> bool:
    """Whether to fit in lifelines' batch mode: distinct times are at most
    :data:`BATCH_DISTINCT_SHARE` of the rows."""
    times = np.asarray(times, float)
    return len(times) > 0 and len(np.unique(times)) <= BATCH_DISTINCT_SHARE * len(times)


def _attempt(p: _Problem, options: dict, initial):
    """One lifelines fit: ``(fitter, warnings)`` or the error's text."""
    from lifelines import CoxPHFitter

    cph = CoxPHFitter(penalizer=p.penalizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cph.fit(
                p.data,
                duration_col="time",
                event_col="event",
                strata=["_stratum"] if p.st is not None else None,
                fit_options=options or None,
                initial_point=None if initial is None else np.asarray(initial, float),
                batch_mode=batch_mode(p.t),
            )
        except Exception as exc:  # lifelines' ConvergenceError, LinAlgError, ...
            from lifelines.exceptions import ConvergenceError

            if isinstance(
                exc,
                (
                    ConvergenceError,
                    np.linalg.LinAlgError,
                    ValueError,
                    ZeroDivisionError,
                    FloatingPointError,
                ),
            ):
                return f"{type(exc).__name__}: {str(exc).split('. ')[0]}"
            raise
    texts = [
        str(w.message).strip()
        for w in caught
        if issubclass(w.category, (RuntimeWarning, UserWarning))
    ]
    return cph, texts


def _decrement(cph, p: _Problem) -> float:
    """The Newton decrement ``g' V g / 2`` at lifelines' estimate, on standardised terms."""
    if not p.cols:
        return 0.0
    beta_z = cph.params_.to_numpy() * p.scale
    _, grad = efron_loglik(p.z, p.t, p.e, beta_z, p.st)
    if p.penalizer > 0:
        grad = grad - len(p.t) * p.penalizer * beta_z
    v = cph.variance_matrix_.to_numpy(float) * np.outer(p.scale, p.scale)
    return float(grad @ v @ grad / 2)


def _check(cph, p: _Problem) -> tuple[str | None, float]:
    """Why the fit fails the checks (None when it passes), and its Newton decrement (NaN
    where a check before it failed)."""
    if not p.cols:
        return None, 0.0
    params = cph.params_.to_numpy(float)
    v = cph.variance_matrix_.to_numpy(float)
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(v))):
        return "the estimate or its variance is not finite", float("nan")
    try:
        eig = np.linalg.eigvalsh(v * np.outer(p.scale, p.scale))
    except np.linalg.LinAlgError:
        return "the variance matrix cannot be decomposed", float("nan")
    if eig.min() <= 0:
        return (
            "the Hessian is not negative definite: a term is not estimable (collinear "
            "terms or one with no information)"
        ), float("nan")
    wild = _separating(cph, p)
    if wild:
        return (
            f"the coefficient of {', '.join(wild)} ran beyond {MAX_STANDARDISED:g} per SD "
            "(a diverging step, or an infinite estimate)"
        ), float("nan")
    dec = _decrement(cph, p)
    if not np.isfinite(dec) or dec > DECREMENT_TOLERANCE:
        return f"not at the maximum (Newton decrement {dec:.3g})", dec
    ll_null = p.ll_null
    if p.penalizer == 0 and cph.log_likelihood_ < ll_null - 1e-6 * max(1.0, abs(ll_null)):
        return (
            f"log-likelihood {cph.log_likelihood_:.4f} below the null model's {ll_null:.4f}"
        ), dec
    return None, dec


def _separating(cph, p: _Problem) -> list[str]:
    """Terms whose standardised coefficient or standard error exceeds
    :data:`MAX_STANDARDISED`."""
    beta_z = cph.params_.to_numpy(float) * p.scale
    with np.errstate(invalid="ignore"):
        se_z = np.sqrt(np.diag(cph.variance_matrix_.to_numpy(float))) * p.scale
    return [
        c
        for c, b, s in zip(p.cols, beta_z, se_z)
        if not (abs(b) <= MAX_STANDARDISED and s <= MAX_STANDARDISED)
    ]


def _sksurv_beta(z, t, e) -> np.ndarray | None:
    """scikit-survival's Efron estimate on standardised terms, or None if it fails."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its own convergence is judged by the comparison
            est = CoxPHSurvivalAnalysis(alpha=0.0, ties="efron", n_iter=200, tol=1e-10)
            est.fit(z, Surv.from_arrays(event=e.astype(bool), time=t))
        beta = np.asarray(est.coef_, float)
        return beta if np.all(np.isfinite(beta)) else None
    except Exception:  # scikit-survival's own failure: no cross-check, nothing more
        return None


def design_matrix(
    df: pd.DataFrame, numeric: list[str], categorical: dict[str, str | None]
) -> pd.DataFrame:
    """Numeric terms as they are; each categorical as 0/1 columns ``name[level]`` against its
    reference level (given, else the most frequent). Rows with a missing term are dropped
    (complete cases), as R's ``coxph`` does by default."""
    out = df[numeric].astype(float).copy()
    for name, reference in categorical.items():
        values = df[name].astype(object)
        levels = values.dropna().value_counts()
        if levels.empty:
            continue
        ref = reference if reference in levels.index else levels.index[0]
        for level in sorted(str(v) for v in levels.index if v != ref):
            col = values.map(
                lambda v, level=level: np.nan if v is None or v != v else float(str(v) == level)
            )
            out[f"{name}[{level}]"] = col
    return out
