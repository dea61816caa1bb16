"""Incremental prognostic value: does FaceAge (and then FaceSurvival's risk score) add to
the clinical model?

Nested Cox models on one common sample (complete cases for every term of the largest
model, so the likelihoods compare): the clinical model (age, sex, cancer type and the
cohort's covariates), + FaceAge per decade, + FaceAge + the risk score per SD. Each step
gets a likelihood-ratio test (twice the gain in log-likelihood against chi-square with the
number of added terms) and the change in Harrell's C of the linear predictors with a
subject-bootstrap CI (both C's from the same resamples). The original FaceAge statistics
script compared a file with itself, so its test was always 0; here each model is fitted on
its own terms.

References
----------
Harrell FE. Regression modeling strategies, 2nd ed. Springer, 2015 (likelihood-ratio tests
of added predictors, events per variable).
Pencina MJ, D'Agostino RB. Overall C as a measure of discrimination in survival analysis.
Stat Med 23, 2004.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from audit.decisions.curves import COLUMNS as DECISION_COLUMNS
from audit.decisions.curves import nested_decision_curves
from audit.stats.bootstrap import bootstrap_weights
from audit.stats.concordance import concordance_resamples, weighted_concordance
from audit.stats.cox import CoxNotConverged, design_matrix, fit_cox
from audit.survival.analysis import (
    METRIC_COLUMNS,
    MODEL_COLUMNS,
    TERM_COLUMNS,
    TEST_COLUMNS,
    term_rows,
)


def clinical_terms(df: pd.DataFrame, covariates: list) -> tuple[list[str], dict]:
    """Numeric and categorical terms of the clinical model present in ``df``."""
    numeric = ["age_decade"] + [c.name for c in covariates if c.type == "numeric"]
    categorical: dict = {}
    if "sex" in df.columns and df["sex"].nunique() > 1:
        categorical["sex"] = "male"
    if "cancer_type" in df.columns and df["cancer_type"].nunique() > 1:
        categorical["cancer_type"] = None
    categorical.update({c.name: c.reference for c in covariates if c.type == "categorical"})
    return numeric, categorical


def _nested_design(
    subjects: pd.DataFrame, covariates: list, faceage_model: str | None, risk_model: str | None
) -> tuple[pd.DataFrame, pd.DataFrame, list, str, list[str]]:
    """The complete cases, the full design, the nested steps (clinical, + FaceAge, + risk:
    ``(model_id, columns)``), the label of the added models, and notes on what was
    dropped and on events per term."""
    df = subjects.copy()
    df["age_decade"] = df["age"].astype(float) / 10.0
    numeric, categorical = clinical_terms(df, covariates)
    added = []
    if faceage_model:
        df["faceage_decade"] = df["faceage"].astype(float) / 10.0
        added.append(("faceage", "faceage_decade", faceage_model))
    if risk_model:
        r = df["risk"].astype(float)
        df["risk_sd"] = (r - r.mean()) / r.std(ddof=1)
        added.append(("risk", "risk_sd", risk_model))
    label = " + ".join(m for _, _, m in added)
    full = design_matrix(df, numeric + [t for _, t, _ in added], categorical)
    complete = full.notna().all(axis=1) & df[["time", "event"]].notna().all(axis=1)
    notes = []
    dropped = {
        c: int(df[c].isna().sum())
        for c in numeric + list(categorical) + [a for a, _, _ in added]
        if c in df.columns and df[c].isna().any()
    }
    if dropped:
        notes.append(
            f"incremental value on {int(complete.sum())} complete cases of {len(df)} "
            "subjects; missing: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
        )
    df, full = df[complete].reset_index(drop=True), full[complete].reset_index(drop=True)
    steps = [
        ("clinical", [c for c in full.columns if not c.startswith(("faceage_decade", "risk_sd"))])
    ]
    for name, term, _ in added:
        steps.append((steps[-1][0] + f"+{name}", steps[-1][1] + [term]))
    events = int(df["event"].sum())
    if events < 10 * len(steps[-1][1]):
        notes.append(
            f"{events} events for {len(steps[-1][1])} terms: fewer than 10 events per "
            "variable, so the largest model may be over-fitted"
        )
    return df, full, steps, label, notes


def _step_rows(label: str, model_id: str, fit, df: pd.DataFrame, lp) -> tuple[dict, list]:
    """A converged step's ``survival_models`` row and its ``survival_terms`` rows."""
    cph = fit.fitter
    row = {
        "model": label,
        "model_id": f"incremental__{model_id}",
        "description": f"incremental value: {model_id.replace('+', ' + ')}",
        "n": len(df),
        "events": int(df["event"].sum()),
        "concordance": float(
            weighted_concordance(df["time"], df["event"], lp, np.ones((1, len(df))))[0]
        ),
        "concordance_low": None,
        "concordance_high": None,
        "log_likelihood": float(cph.log_likelihood_),
        "ph_test_min_p": None,
        "status": "ok",
        "note": "; ".join(fit.notes) or None,
    }
    return row, term_rows(label, f"incremental__{model_id}", cph.summary)


def _step_comparison(label, prev, cur, lps, concordance, df, w, linear_from) -> tuple[dict, dict]:
    """The likelihood-ratio test of step ``cur`` against ``prev``, and the change in C with
    its paired bootstrap interval."""
    lp0, ll0, k0 = lps[prev]
    lp1, ll1, k1 = lps[cur]
    stat = max(0.0, 2 * (ll1 - ll0))
    dof = k1 - k0
    test = {
        "model": label,
        "test": f"likelihood ratio: {cur} vs {prev}",
        "groups": None,
        "statistic": float(stat),
        "df": float(dof),
        "p_value": float(chi2.sf(stat, dof)),
    }
    t, e = df["time"], df["event"]
    d = concordance_resamples(t, e, lp1, w, linear_from) - concordance_resamples(
        t, e, lp0, w, linear_from
    )
    low, high = np.nanquantile(d, [0.025, 0.975]) if len(d) else (np.nan, np.nan)
    metric = {
        "model": label,
        "model_id": f"incremental__{cur}",
        "metric": "delta_c",
        "horizon": None,
        "value": float(concordance[cur] - concordance[prev]),
        "ci_low": float(low),
        "ci_high": float(high),
    }
    return test, metric


def _not_converged_row(label: str, model_id: str, n: int, events: int, reason: str) -> dict:
    """The ``survival_models`` row of a nested model that did not converge."""
    return {
        "model": label,
        "model_id": f"incremental__{model_id}",
        "description": f"incremental value: {model_id.replace('+', ' + ')}",
        "n": n,
        "events": events,
        "status": "not_converged",
        "note": f"Cox fit not converged: {reason}",
    }


def _nested_decisions(df, designs, label: str, notes: list[str], **options) -> pd.DataFrame:
    """The nested models' cross-fitted decision curves, or none (with a note) when a
    cross-fitted model does not converge."""
    try:
        return nested_decision_curves(label, designs, df["time"], df["event"], **options)
    except CoxNotConverged as exc:
        notes.append(
            "the cross-fitted nested models did not converge "
            f"({exc.reason}): their decision curves are not computed"
        )
        return pd.DataFrame(columns=DECISION_COLUMNS)


def incremental_value(
    subjects: pd.DataFrame,
    covariates: list,
    *,
    faceage_model: str | None,
    risk_model: str | None,
    n_boot: int = 200,
    seed: int = 0,
    penalizer: float = 0.0,
    decision_horizons=(),
    decision_thresholds=None,
    folds: int = 5,
    linear_from: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Nested models, tests and C changes.

    Parameters
    ----------
    subjects : one row per subject: ``time`` (years), ``event``, ``age``, the clinical
        columns, and ``faceage`` and/or ``risk`` (from the named models).
    covariates : the cohort's declared covariates.
    faceage_model, risk_model : names of the models whose outputs are added (None: absent).

    decision_horizons, decision_thresholds, folds : where given, the nested models' decision
        curves (:func:`audit.decisions.curves.nested_decision_curves`): net benefit of each,
        cross-fitted on ``folds`` folds, and each step's paired gain over the one before.
    linear_from : from this many subjects on, the change in C over resamples from each C's
        influence values (:func:`audit.stats.concordance.concordance_resamples`).

    Returns ``{"survival_models", "survival_terms", "survival_tests", "survival_metrics",
    "decision_curves"}`` frames, and a ``notes`` list under ``"notes"``.
    """
    df, full, steps, label, notes = _nested_design(subjects, covariates, faceage_model,
                                                   risk_model)  # fmt: skip
    events = int(df["event"].sum())
    models, terms, tests, metrics, lps, concordance = [], [], [], [], {}, {}
    w = bootstrap_weights(len(df), n_boot, np.random.default_rng(seed), compact=True)
    for model_id, cols in steps:
        fit = fit_cox(df, full[cols], penalizer)
        if not fit.ok:
            models.append(_not_converged_row(label, model_id, len(df), events, fit.reason))
            notes.append(
                f"incremental value: the {model_id.replace('+', ' + ')} model did not "
                f"converge ({fit.reason}); the steps that need it are not tested"
            )
            continue
        lp = fit.fitter.predict_log_partial_hazard(fit.data).to_numpy()
        lps[model_id] = (lp, fit.fitter.log_likelihood_, len(fit.fitter.params_))
        row, step_terms = _step_rows(label, model_id, fit, df, lp)
        concordance[model_id] = row["concordance"]
        models.append(row)
        terms.extend(step_terms)
    for (prev, _), (cur, _) in zip(steps, steps[1:]):
        if prev in lps and cur in lps:
            test, metric = _step_comparison(label, prev, cur, lps, concordance, df, w, linear_from)
            tests.append(test)
            metrics.append(metric)
    decisions = pd.DataFrame(columns=DECISION_COLUMNS)
    if decision_horizons:
        decisions = _nested_decisions(
            df,
            [(f"incremental__{mid}", full[cols].to_numpy(float)) for mid, cols in steps],
            label,
            notes,
            horizons=decision_horizons,
            thresholds=decision_thresholds,
            n_boot=n_boot,
            seed=seed,
            k=folds,
            penalizer=penalizer,
            linear_from=linear_from,
        )
    return {
        "survival_models": pd.DataFrame(models, columns=MODEL_COLUMNS),
        "decision_curves": decisions,
        "survival_terms": pd.DataFrame(terms, columns=TERM_COLUMNS),
        "survival_tests": pd.DataFrame(tests, columns=TEST_COLUMNS),
        "survival_metrics": pd.DataFrame(metrics, columns=METRIC_COLUMNS),
        "notes": notes,
    }
