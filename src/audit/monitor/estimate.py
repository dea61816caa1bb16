"""Performance on a new cohort estimated before its outcomes are known, by reweighting a
reference cohort that has them.

A new external cohort arrives; its deaths will be known in years. If the new cohort differs
from the reference only in what can be seen now (its case mix: age, sex, race, site, camera,
the photos' properties, the faces the model sees) and the outcome given those is the same
(covariate shift), then any performance measure on the new cohort equals the same measure on
the reference with each reference subject weighted by the density ratio
``p_new(x) / p_ref(x)``. The ratio comes from a classifier that tells the two cohorts apart:
``w(x) = P(new | x) / P(ref | x) * n_ref / n_new`` (Sugiyama et al. 2007; Bickel et al. 2009).
The classifier (an L2 logistic regression on the standardised numeric features, one-hot
categories and the first principal components of the model's embeddings) is cross-fitted: a
reference subject's weight comes from a classifier fitted on the other folds, so no subject's
own features inflate its weight.

Weighted on the reference (the weights normalised to mean 1):

- Harrell's C and Uno's C (:func:`audit.stats.concordance.weighted_concordance`, pairs
  weighted ``w_i w_j``; Uno's inverse censoring weights from the weighted Kaplan-Meier of the
  censoring), the cumulative/dynamic AUC at each horizon (cases weighted ``w_i / G(T_i)``,
  controls ``w_j``);
- calibration in the large at each horizon: the reweighted Kaplan-Meier survival of the
  reference minus the mean survival the reference's Cox model of the score predicts for the
  new cohort's subjects (computable now: it needs their scores only);
- FaceAge's MAE and mean error against chronological age: the new cohort has ages now, so
  its realised value is known at once and the gap tells whether the model behaves as it did
  (a gap the case mix cannot explain).

Each estimate has a percentile CI over resamples of the reference subjects (the weights held
fixed, as fitted; the new cohort's subjects resampled too where they enter) and the effective
sample size ``(sum w)^2 / sum w^2`` of the weights (Kish), overall and among the deaths. When
the overlap is too poor (effective sample size under ``min_ess`` or under ``min_ess_share`` of
the reference, or a category of the new cohort absent from the reference) nothing is
estimated and the reason is given: extreme weights give estimates that look precise and are
not.

When the new cohort's outcomes are known, the same measures computed on it (unweighted, with
their own bootstrap CIs) are the *realised* values, and the gap (realised minus estimate) has
a CI from the two independent sets of resamples: a gap whose CI excludes 0 says the model's
behaviour changed, not only the case mix.

References
----------
Sugiyama M, Krauledat M, Mueller KR. Covariate shift adaptation by importance weighted cross
validation. JMLR 8, 2007.
Bickel S, Brueckner M, Scheffer T. Discriminative learning under covariate shift. JMLR 10, 2009.
Kish L. Survey sampling. Wiley, 1965 (effective sample size of weights).
Uno H et al. On the C-statistics for evaluating overall adequacy of risk prediction procedures
with censored survival data. Stat Med 30, 2011.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.stats.bootstrap import bootstrap_weights, percentile_ci
from audit.stats.concordance import weighted_concordance
from audit.stats.cox import fit_cox
from audit.survival.metrics import usable_horizons

ESTIMATED, POOR_OVERLAP, NOT_ESTIMABLE = "estimated", "poor overlap", "not estimable"


@dataclass(frozen=True)
class EstimateSettings:
    """The estimator's knobs (the ``[estimate]`` config section)."""

    folds: int = 5
    n_boot: int = 200
    level: float = 0.95
    horizons: tuple = (1.0, 2.0, 5.0)
    min_ess: float = 100.0  # reference subjects' effective sample size
    min_ess_share: float = 0.05  # ... and as a share of the reference
    components: int = 8  # principal components of the embeddings the classifier sees
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> EstimateSettings:
        """From the ``[estimate]`` config section."""
        return cls(
            folds=cfg.folds,
            n_boot=cfg.n_boot,
            level=cfg.ci_level,
            horizons=tuple(cfg.horizons),
            min_ess=cfg.min_ess,
            min_ess_share=cfg.min_ess_share,
            components=cfg.embedding_components,
            seed=cfg.seed,
        )


# ---------------------------------------------------------------------------- weights


def design(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    components: int = 8,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The classifier's features for both cohorts: numeric columns standardised on the pooled
    cohorts (a missing value: the median and a missing flag), categories one-hot (missing is a
    category), and the first ``components`` principal components of the embeddings
    (standardised on the pooled vectors). Columns absent or constant in both are left out."""
    pooled = pd.concat([reference, current], ignore_index=True)
    nr = len(reference)
    blocks, names = [], []
    for col in numeric:
        if col not in pooled.columns:
            continue
        x = pd.to_numeric(pooled[col], errors="coerce").to_numpy(float)
        missing = ~np.isfinite(x)
        if missing.all() or np.nanstd(x) == 0:
            continue
        x = np.where(missing, np.nanmedian(x), x)
        blocks.append(((x - x.mean()) / x.std())[:, None])
        names.append(col)
        if missing.any():
            blocks.append(missing[:, None].astype(float))
            names.append(f"{col} missing")
    for col in categorical:
        if col not in pooled.columns:
            continue
        values = pooled[col].astype(object).where(pooled[col].notna(), "(missing)").astype(str)
        levels = sorted(set(values))
        if len(levels) < 2:
            continue
        for level in levels:
            blocks.append((values == level).to_numpy(float)[:, None])
            names.append(f"{col} = {level}")
    if embeddings is not None and min(len(embeddings[0]), len(embeddings[1])) > components:
        v = np.vstack([embeddings[0], embeddings[1]]).astype(float)
        v = (v - v.mean(0)) / np.where(v.std(0) > 0, v.std(0), 1.0)
        _, s, vt = np.linalg.svd(v - v.mean(0), full_matrices=False)
        k = min(components, vt.shape[0])
        pcs = v @ vt[:k].T
        pcs = pcs / np.where(pcs.std(0) > 0, pcs.std(0), 1.0)
        blocks.append(pcs)
        names += [f"embedding PC{i + 1}" for i in range(k)]
    x = np.hstack(blocks) if blocks else np.zeros((len(pooled), 0))
    return x[:nr], x[nr:], names


@dataclass
class Weights:
    """Importance weights of the reference subjects (mean 1) and the overlap diagnostics."""

    w: np.ndarray
    classifier_auc: float
    ess: float
    ess_share: float
    poor: list[str] = field(default_factory=list)  # why the overlap is too poor (empty: fine)

    @property
    def ok(self) -> bool:
        return not self.poor


def kish_ess(w: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``."""
    w = np.asarray(w, float)
    return float(w.sum() ** 2 / (w**2).sum()) if (w**2).sum() > 0 else 0.0


def importance_weights(x_ref: np.ndarray, x_cur: np.ndarray, settings: EstimateSettings) -> Weights:
    """Cross-fitted density-ratio weights of the reference subjects toward the new cohort
    (``settings.folds`` stratified folds, seeded), normalised to mean 1, with the
    classifier's cross-fitted AUC (0.5: the cohorts look alike) and Kish's effective sample
    size. A classifier whose fit does not converge raises :class:`RuntimeError`."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    nr, nc = len(x_ref), len(x_cur)
    x = np.vstack([x_ref, x_cur])
    y = np.r_[np.zeros(nr), np.ones(nc)]
    p = np.full(len(y), 0.5)
    if x.shape[1]:
        folds = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
        for train, test in folds.split(x, y):
            p[test] = _classifier(x[train], y[train]).predict_proba(x[test])[:, 1]
    auc = float(roc_auc_score(y, p)) if x.shape[1] else 0.5
    pr = np.clip(p[:nr], 1e-12, 1 - 1e-12)
    w = pr / (1 - pr)
    w = w / w.mean()
    ess = kish_ess(w)
    poor = []
    if ess < settings.min_ess or ess < settings.min_ess_share * nr:
        poor.append(
            f"the weights' effective sample size is {ess:.0f} of {nr} reference subjects "
            f"(at least {max(settings.min_ess, settings.min_ess_share * nr):.0f} needed; the "
            f"classifier tells the cohorts apart with AUC {auc:.2f})"
        )
    return Weights(w, auc, ess, ess / nr, poor)


def _classifier(x: np.ndarray, y: np.ndarray, sample_weight=None, start=None):
    """The cohort classifier (L2 logistic regression), fitted from ``start`` (a fitted
    classifier whose coefficients it starts from) when given; one whose fit does not
    converge raises :class:`RuntimeError`."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = start if start is not None else LogisticRegression(C=1.0, max_iter=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            return model.fit(x, y, sample_weight=sample_weight)
        except ConvergenceWarning as exc:
            raise RuntimeError(f"the cohort classifier did not converge ({exc})") from exc


def resampled_weights(
    x_ref: np.ndarray, x_cur: np.ndarray, counts_ref: np.ndarray, counts_cur: np.ndarray
) -> np.ndarray:
    """(B, n_ref) weights of the reference subjects refitted on each resample of both
    cohorts (the counts as sample weights), so that the CIs carry the weights' own error;
    each row normalised to mean 1 over its resample. Each fit starts from the whole
    sample's coefficients (warm start: the same optimum, reached in fewer steps)."""
    from sklearn.base import clone

    x = np.vstack([x_ref, x_cur])
    y = np.r_[np.zeros(len(x_ref)), np.ones(len(x_cur))]
    out = np.ones(counts_ref.shape)
    if not x.shape[1]:
        return out
    whole = _classifier(x, y)
    for b in range(len(counts_ref)):
        start = clone(whole).set_params(warm_start=True)
        start.coef_, start.intercept_ = whole.coef_.copy(), whole.intercept_.copy()
        fit = _classifier(x, y, np.r_[counts_ref[b], counts_cur[b]], start)
        p = np.clip(fit.predict_proba(x_ref)[:, 1], 1e-12, 1 - 1e-12)
        w = p / (1 - p)
        out[b] = w * counts_ref[b].sum() / (counts_ref[b] * w).sum()
    return out


def unseen_categories(
    reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str], min_count: int = 1
) -> list[str]:
    """Categories of the new cohort that the reference lacks (no reweighting reaches them)."""
    out = []
    for col in categorical:
        if col not in reference.columns or col not in current.columns:
            continue
        seen = set(reference[col].dropna().astype(str))
        new = current[col].dropna().astype(str)
        for value, count in new[~new.isin(seen)].value_counts().items():
            if count >= min_count:
                out.append(f"{col} = {value}: {count} new subjects, none in the reference")
    return out


# ---------------------------------------------------------------------------- weighted metrics


def weighted_km(time, event, weights, at: float) -> np.ndarray:
    """Kaplan-Meier survival at ``at`` under each row of ``weights`` (B, n): at each death
    time the product of ``1 - (weight of the deaths) / (weight at risk)``."""
    time, event = np.asarray(time, float), np.asarray(event).astype(bool)
    w = np.atleast_2d(np.asarray(weights, float))
    times = np.unique(time[event & (time <= at)])
    if not len(times):
        return np.ones(w.shape[0])
    order = np.argsort(time, kind="stable")
    ts, ws, es = time[order], w[:, order], event[order]
    # weight at risk at each death time: the subjects with time >= t
    first = np.searchsorted(ts, times, side="left")
    suffix = np.concatenate([np.cumsum(ws[:, ::-1], axis=1)[:, ::-1], np.zeros((w.shape[0], 1))], 1)
    at_risk = suffix[:, first]
    code = np.searchsorted(times, ts)
    hit = es & (ts <= at) & (code < len(times))
    deaths = np.zeros((w.shape[0], len(times)))
    np.add.at(deaths.T, code[hit], ws[:, hit].T)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1 - deaths / at_risk, 1.0)
    return np.prod(factor, axis=1)


def _censoring_weights(time, event, w: np.ndarray, tau: float) -> np.ndarray:
    """``1 / G(T_i)`` for each subject who died before ``tau`` (0 otherwise), G the
    Kaplan-Meier of the censoring under the weights ``w`` (n,), evaluated just before T_i."""
    time, event = np.asarray(time, float), np.asarray(event).astype(bool)
    out = np.zeros(len(time))
    cens_times = np.unique(time[~event])
    order = np.argsort(time, kind="stable")
    ts, ws = time[order], w[order]
    suffix = np.r_[np.cumsum(ws[::-1])[::-1], 0.0]
    at_risk = suffix[np.searchsorted(ts, cens_times, side="left")]
    code = np.searchsorted(cens_times, time)
    on = (code < len(cens_times)) & (cens_times[np.minimum(code, len(cens_times) - 1)] == time)
    censored = np.bincount(code[on & ~event], w[on & ~event], minlength=len(cens_times))
    # deaths at a censoring time come first: they leave the censoring's risk set
    at_risk = at_risk - np.bincount(code[on & event], w[on & event], minlength=len(cens_times))
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(at_risk > 0, 1 - censored / at_risk, 1.0)
    g_after = np.cumprod(factor)  # G just after each censoring time
    idx = np.flatnonzero(event & (time < tau))
    # G(T_i-): censoring strictly before T_i (a death at a censoring time comes first)
    k = np.searchsorted(cens_times, time[idx], side="right")
    g = np.where(k > 0, g_after[np.maximum(k - 1, 0)], 1.0)
    out[idx] = np.where(g > 0, 1.0 / g, 0.0)
    return out


def weighted_auc(time, event, score, weights, ipcw: np.ndarray, horizon: float) -> np.ndarray:
    """Cumulative/dynamic AUC at ``horizon`` under each row of ``weights`` (B, n): cases died
    by the horizon (weighted ``w_i * ipcw_i``, ipcw = 1 / G(T_i)), controls still followed
    after it (weighted ``w_j``); tied scores count one half."""
    time, event, score = (
        np.asarray(time, float),
        np.asarray(event).astype(bool),
        np.asarray(score, float),
    )
    w = np.atleast_2d(np.asarray(weights, float))
    cases = np.flatnonzero(event & (time <= horizon))
    controls = np.flatnonzero(time > horizon)
    if not len(cases) or not len(controls):
        return np.full(w.shape[0], np.nan)
    ctrl_scores = score[controls]
    order = np.argsort(ctrl_scores, kind="stable")
    sorted_scores = ctrl_scores[order]
    cw = w[:, controls][:, order]
    cum = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(cw, axis=1)], axis=1)
    below = np.searchsorted(sorted_scores, score[cases], side="left")
    upto = np.searchsorted(sorted_scores, score[cases], side="right")
    less, leq = cum[:, below], cum[:, upto]  # control weight with a lower (<=) score
    case_w = w[:, cases] * ipcw[cases]
    numerator = (case_w * (less + 0.5 * (leq - less))).sum(axis=1)
    denominator = case_w.sum(axis=1) * cw.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


# ---------------------------------------------------------------------------- the estimates

ESTIMATE_COLUMNS = [
    "output",
    "metric",
    "horizon",
    "reference_value",
    "estimate",
    "ci_low",
    "ci_high",
    "pred_low",
    "pred_high",
    "realised",
    "realised_low",
    "realised_high",
    "gap",
    "gap_low",
    "gap_high",
    "status",
    "ess",
    "ess_deaths",
    "classifier_auc",
    "n_reference",
    "n_current",
    "note",
]


def _metric_samples(
    frame: pd.DataFrame, output: str, w: np.ndarray, resampled: np.ndarray, hs: list, cox
) -> dict:
    """Every measure of one score on one cohort, under the weights ``w`` (n,) and the
    weights of its resamples ``resampled`` (B, n): ``{(metric, horizon): (point, samples)}``.
    ``cox``: the reference's Cox model of the score (for the calibration), or None."""
    out = {}
    rows = np.vstack([w, resampled])
    score = frame[output].to_numpy(float)
    if {"time", "event"} <= set(frame.columns) and hs:
        t, e = frame["time"].to_numpy(float), frame["event"].to_numpy(int)
        c = weighted_concordance(t, e, score, rows)
        out[("c_index", None)] = (c[0], c[1:])
        tau = max(hs)
        ipcw_tau = _censoring_weights(t, e, w, tau)
        uno = weighted_concordance(t, e, score, rows, event_weight=ipcw_tau**2, tau=tau)
        out[("uno_c", tau)] = (uno[0], uno[1:])
        ipcw = _censoring_weights(t, e, w, np.inf)
        for h in hs:
            auc = weighted_auc(t, e, score, rows, ipcw, h)
            out[("auc", h)] = (auc[0], auc[1:])
            if cox is not None:
                km = weighted_km(t, e, rows, h)
                out[("observed_survival", h)] = (km[0], km[1:])
    if output == "faceage" and "age" in frame.columns:
        err = score - frame["age"].to_numpy(float)
        for metric, values in (("mae", np.abs(err)), ("mean_error", err)):
            est = (rows * values).sum(1) / rows.sum(1)
            out[(metric, None)] = (est[0], est[1:])
    return out


def _predicted_survival(cox, current: pd.DataFrame, output: str, counts: np.ndarray, hs: list):
    """The mean survival at each horizon that the reference's Cox model of the score predicts
    for the new cohort's subjects, and over resamples of them: ``{h: (point, samples)}``."""
    sf = cox.predict_survival_function(
        pd.DataFrame({output: current[output].to_numpy(float)}), times=list(hs)
    ).T.to_numpy()  # (n, H)
    rows = np.vstack([np.ones(len(current)), counts])
    means = rows @ sf / rows.sum(1)[:, None]
    return {h: (means[0, k], means[1:, k]) for k, h in enumerate(hs)}


def estimate_performance(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    outputs: list[str],
    weights: Weights,
    settings: EstimateSettings,
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Each output's performance on ``current`` estimated from ``reference`` reweighted by
    ``weights`` (one row per subject in both, in an order fixed by the data). With the
    classifier's ``features`` (of :func:`design`), each resample's weights are refitted
    (:func:`resampled_weights`); without, they are held fixed.

    ``reference`` has ``time``, ``event`` (deaths), ``age`` and a column per output;
    ``current`` the same, its outcomes only once they are known (then the realised values
    and the gaps are filled). Returns the ``estimated_performance`` rows (without the run's
    keys) and notes. Calibration is ``calibration_in_the_large`` (observed minus predicted
    survival at a horizon; predicted by the reference's Cox model of the score)."""
    rng = np.random.default_rng(settings.seed)
    nr, nc = len(reference), len(current)
    counts_ref = bootstrap_weights(nr, settings.n_boot, rng)
    counts_cur = bootstrap_weights(nc, settings.n_boot, rng)
    if weights.ok:
        refit = (
            resampled_weights(features[0], features[1], counts_ref, counts_cur)
            if features is not None
            else np.broadcast_to(weights.w, counts_ref.shape)
        )
        resampled_ref = counts_ref * refit
    draws = (
        rng.multinomial(nc, weights.w / weights.w.sum(), size=settings.n_boot).astype(float)
        if weights.ok and settings.n_boot > 0
        else np.zeros((0, nr))
    )
    ones_ref, ones_cur = np.ones(nr), np.ones(nc)
    has_outcomes = {"time", "event"} <= set(current.columns) and current["event"].notna().all()
    notes: list[str] = []
    ess_deaths = kish_ess(weights.w[reference["event"].to_numpy(int) == 1])
    rows = []
    for output in outputs:
        if output not in reference.columns or output not in current.columns:
            continue
        t, e = reference["time"].to_numpy(float), reference["event"].to_numpy(int)
        hs = usable_horizons(t, e, settings.horizons) if e.sum() >= 5 else []
        hs_cur: set = set()
        if has_outcomes:
            tc, ec = current["time"].to_numpy(float), current["event"].to_numpy(int)
            hs_cur = set(usable_horizons(tc, ec, settings.horizons)) if ec.sum() >= 5 else set()
        cox = None
        if hs:
            fit = fit_cox(reference[["time", "event"]], reference[[output]])
            if fit.ok:
                cox = fit.fitter
            else:
                notes.append(
                    f"{output}: the reference's Cox model of the score did not converge "
                    f"({fit.reason}); calibration not estimated"
                )
        naive = _metric_samples(reference, output, ones_ref, np.zeros((0, nr)), hs, cox)
        est = (
            _metric_samples(reference, output, weights.w, resampled_ref, hs, cox)
            if weights.ok
            else {}
        )
        # what n_current subjects of the reweighted population show: draws of the new
        # cohort's size from the reference with probabilities proportional to the weights
        draw = (
            _metric_samples(reference, output, ones_ref, draws, hs, cox)
            if weights.ok and len(draws)
            else {}
        )
        # without outcomes only FaceAge's accuracy is realised (the new cohort has ages)
        real = _metric_samples(
            current if has_outcomes else current.drop(columns=["time", "event"], errors="ignore"),
            output,
            ones_cur,
            counts_cur,
            sorted(hs_cur & set(hs)) if has_outcomes else [],
            cox,
        )
        predicted = _predicted_survival(cox, current, output, counts_cur, hs) if cox else {}
        for key in _keys(naive):
            metric, h = key
            values = {}
            for name, source in (
                ("reference_value", naive),
                ("estimate", est),
                ("realised", real),
                ("draw", draw),
            ):
                values[name] = source.get(key)
            if metric == "observed_survival":
                metric = "calibration_in_the_large"
                # observed minus predicted survival: the prediction on the new cohort's scores
                p_point, p_samples = predicted[h]
                for name in ("estimate", "realised"):
                    if values[name] is not None:
                        obs_point, obs_samples = values[name]
                        values[name] = (obs_point - p_point, obs_samples - p_samples)
                ref_pred = (
                    cox.predict_survival_function(reference[[output]], times=[h]).to_numpy().mean()
                )
                values["reference_value"] = (values["reference_value"][0] - ref_pred, None)
            rows.append(
                _row(output, metric, h, values, weights, ess_deaths, nr, nc, settings.level)
            )
    frame = pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    return frame, notes


def _keys(samples: dict) -> list:
    order = ["c_index", "uno_c", "auc", "observed_survival", "mae", "mean_error"]
    return sorted(samples, key=lambda k: (order.index(k[0]), k[1] if k[1] is not None else 0))


def _row(output, metric, h, values, weights: Weights, ess_deaths, nr, nc, level) -> dict:
    ref = values["reference_value"]
    est, real = values["estimate"], values["realised"]
    row = {
        "output": output,
        "metric": metric,
        "horizon": h,
        "reference_value": float(ref[0]) if ref is not None else np.nan,
        "status": ESTIMATED if weights.ok else POOR_OVERLAP,
        "ess": weights.ess,
        "ess_deaths": ess_deaths,
        "classifier_auc": weights.classifier_auc,
        "n_reference": nr,
        "n_current": nc,
        "note": "; ".join(weights.poor) or None,
    }
    for prefix, source in (("", est), ("realised", real)):
        point = (
            (float(source[0]), *map(float, percentile_ci(source[1], level)))
            if source
            else (np.nan,) * 3
        )
        keys = (
            ("estimate", "ci_low", "ci_high")
            if prefix == ""
            else ("realised", "realised_low", "realised_high")
        )
        row.update(dict(zip(keys, point)))
    draw = values["draw"]
    if est and draw:  # the estimate's own error plus the new cohort's sampling error
        spread = est[1] + (draw[1] - np.nanmean(draw[1]))
        low, high = percentile_ci(spread, level)
        row.update(pred_low=float(low), pred_high=float(high))
    else:
        row.update(pred_low=np.nan, pred_high=np.nan)
    if est and real:
        gap = real[1] - est[1]
        low, high = percentile_ci(gap, level)
        row.update(gap=float(real[0] - est[0]), gap_low=float(low), gap_high=float(high))
    else:
        row.update(gap=np.nan, gap_low=np.nan, gap_high=np.nan)
    return row
