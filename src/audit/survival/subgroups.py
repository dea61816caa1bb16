"""Survival fairness: does the prognostic value of FaceAge and of the risk score hold within
each subgroup, and does it differ between subgroups?

Within each group of the configured attributes (one row per subject, time in years):

- ``faceage_per_decade``: Cox HR of FaceAge per 10 years adjusted for chronological age and
  (where the attribute is not sex) sex, as the FaceAge paper reports it;
- ``risk_q4_vs_q1``: Cox HR of the top risk quartile against the bottom one (cut points from
  the whole cohort, so a group's quartiles mean the same as everyone's), adjusted likewise.

Interaction tests on the whole cohort: a likelihood-ratio test of the predictor x group
terms (FaceAge per decade, or the risk score per SD) added to a model with the predictor,
age, sex and the group; a small p-value says the prognostic effect differs by group. Groups
with fewer than ``min_events`` deaths or ``min_group_size`` subjects are ``too_small``: listed,
not fitted, and left out of the interaction test.

References
----------
Cox DR. Regression models and life-tables. JRSS B 34, 1972.
Royston P, Sauerbrei W. Multivariable model-building. Wiley, 2008 (interaction tests of a
prognostic factor with subgroups).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2

from audit.data.cohort import natural_order
from audit.metrics.fairness import add_fairness_groups, attribute_groupings
from audit.pipeline.schema import columns
from audit.stats.cox import design_matrix, fit_cox
from audit.stats.groups import group_index, quantile_cuts

SUBGROUP_COLUMNS = columns("survival_subgroups")
TEST_COLUMNS = columns("survival_tests")


_NO_HR = {"hr": np.nan, "hr_low": np.nan, "hr_high": np.nan, "p_value": np.nan}


def _hr(df: pd.DataFrame, term: str, numeric: list[str], categorical: dict) -> dict:
    fit = fit_cox(df, design_matrix(df, numeric, categorical))
    if not fit.ok:
        return {**_NO_HR, "status": "not_converged", "note": fit.reason}
    if term not in fit.summary.index:
        return {
            **_NO_HR,
            "status": "not_fitted",
            "note": f"{term} does not vary within the group's complete cases",
        }
    r = fit.summary.loc[term]
    return {
        "hr": float(r["exp(coef)"]),
        "hr_low": float(r["exp(coef) lower 95%"]),
        "hr_high": float(r["exp(coef) upper 95%"]),
        "p_value": float(r["p"]),
        "status": "ok",
    }


def survival_subgroups(
    subjects: pd.DataFrame,
    model: str,
    outputs: list[str],
    config,
    min_events: int,
    age_cuts: list[float],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-group hazard ratios and interaction tests for one model's outputs.

    Parameters
    ----------
    subjects : one row per subject with ``time`` (years), ``event``, ``age``, ``sex``, the
        outputs and the grouping columns.
    model : the model's name.
    outputs : ``faceage`` and/or ``risk``.
    config : the audit config's ``fairness`` section (``survival_attributes``,
        ``min_group_size``).
    min_events : fewer deaths in a group: not fitted.
    """
    need = {"time", "event", "age"}
    if not need <= set(subjects.columns) or subjects["event"].isna().all():
        return pd.DataFrame(columns=SUBGROUP_COLUMNS), pd.DataFrame(columns=TEST_COLUMNS)
    df, predictors = _predictor_frame(subjects, outputs, age_cuts)
    has_sex = "sex" in df.columns and df["sex"].nunique() > 1
    rows, tests = [], []
    for attribute, labels in attribute_groupings(df, config.survival_attributes):
        cat = {"sex": "male"} if has_sex and attribute != "sex" else {}
        for name, term in predictors:
            fitted_groups = []
            for group in natural_order(labels.dropna().unique()):
                row = {
                    "model": model,
                    "predictor": name,
                    "attribute": attribute,
                    "group_name": str(group),
                    "adjustment": "age" + (" and sex" if cat else ""),
                }
                row.update(_group_hr(df, labels == group, name, term, cat, config, min_events))
                rows.append(row)
                if row["status"] == "ok":
                    fitted_groups.append(group)
            if len(fitted_groups) >= 2:
                term_name, term = (
                    ("faceage_per_decade", "faceage_decade")
                    if name == "faceage_per_decade"
                    else ("risk_per_sd", "risk_sd")
                )
                tests.append(
                    _interaction(df, labels, fitted_groups, model, term_name, term, attribute, cat)
                )
    return (pd.DataFrame(rows, columns=SUBGROUP_COLUMNS), pd.DataFrame(tests, columns=TEST_COLUMNS))


def _predictor_frame(
    subjects: pd.DataFrame, outputs: list[str], age_cuts: list[float]
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The complete-case subjects with the model's terms (FaceAge per decade, the risk
    score's cohort quartile and SD units, age per decade), and ``(predictor, term)`` for
    each output the model has."""
    df = add_fairness_groups(subjects, age_cuts).dropna(subset=["time", "event", "age"])
    df = df.reset_index(drop=True)
    df["age_decade_num"] = df["age"].astype(float) / 10.0
    predictors = []
    if "faceage" in outputs and "faceage" in df.columns:
        df["faceage_decade"] = df["faceage"].astype(float) / 10.0
        predictors.append(("faceage_per_decade", "faceage_decade"))
    if "risk" in outputs and "risk" in df.columns:
        r = df["risk"].astype(float)
        # the cohort's quartiles by value, as everywhere (audit.stats.groups)
        df["risk_quartile"] = group_index(r, quantile_cuts(r, 4)) + 1
        df["risk_sd"] = (r - r.mean()) / r.std(ddof=1)
        predictors.append(("risk_q4_vs_q1", "risk_q4"))
    return df, predictors


def _group_hr(
    df: pd.DataFrame, in_group, name: str, term: str, cat: dict, config, min_events: int
) -> dict:
    """One group's hazard ratio of ``term`` adjusted for age (and sex): ``n``, ``events``
    and the fit's columns, or why it was not fitted (no Q1 or Q4, too few subjects or
    deaths)."""
    sub = df[in_group]
    if name == "risk_q4_vs_q1":
        sub = sub[sub["risk_quartile"].isin([1, 4])].copy()
        sub["risk_q4"] = (sub["risk_quartile"] == 4).astype(float)
    events = int(sub["event"].sum())
    counts = {"n": len(sub), "events": events}
    if name == "risk_q4_vs_q1" and not (sub["risk_q4"].nunique() == 2):
        note = _missing_quartile(sub["risk_q4"], df["risk_quartile"])
        return {**counts, **_NO_HR, "status": "not_fitted", "note": note}
    if events < min_events or len(sub) < config.min_group_size:
        note = (
            f"{len(sub)} subjects, {events} deaths (minimum "
            f"{config.min_group_size} subjects, {min_events} deaths)"
        )
        return {**counts, **_NO_HR, "status": "too_small", "note": note}
    return {**counts, **_hr(sub, term, [term, "age_decade_num"], cat)}


def _missing_quartile(q4: pd.Series, cohort_quartiles: pd.Series) -> str:
    """Why a group has no Q4 vs Q1 comparison."""
    which = "Q4" if not (q4 == 1).any() else "Q1"
    if not (cohort_quartiles == (4 if which == "Q4" else 1)).any():
        return (
            f"the cohort has no {which}: tied risk scores leave it empty (the quartile cut "
            "points coincide)"
        )
    return f"no subject of this group is in the cohort's {which}"


def _interaction(df, labels, groups, model, name, term, attribute, cat) -> dict:
    """Likelihood-ratio test of ``term`` x group terms (the groups that could be fitted)."""
    keep = labels.isin(groups).to_numpy()
    sub = df[keep].reset_index(drop=True)
    lab = labels[keep].reset_index(drop=True).astype(str)
    ref = lab.value_counts().index[0]
    base = design_matrix(sub, [term, "age_decade_num"], cat)
    for g in sorted(set(lab) - {ref}):
        base[f"group[{g}]"] = (lab == g).astype(float)
    full = base.copy()
    for g in sorted(set(lab) - {ref}):
        full[f"{term}:group[{g}]"] = full[term] * full[f"group[{g}]"]
    fit0, fit1 = fit_cox(sub, base), fit_cox(sub, full)
    dof = len(groups) - 1
    row = {
        "model": model,
        "test": f"interaction: {name} x {attribute}",
        "groups": ", ".join(str(g) for g in groups),
        "df": dof,
    }
    bad = [(what, f) for what, f in (("without", fit0), ("with", fit1)) if not f.ok]
    if bad:
        return {
            **row,
            "statistic": np.nan,
            "p_value": np.nan,
            "note": "; ".join(
                f"the model {what} the interaction did not converge ({f.reason})" for what, f in bad
            ),
        }
    stat = max(0.0, 2 * (fit1.log_likelihood - fit0.log_likelihood))
    return {**row, "statistic": float(stat), "p_value": float(chi2.sf(stat, dof)), "note": None}
