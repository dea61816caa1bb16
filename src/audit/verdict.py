"""Verdicts: each audit check against its threshold from the audit config.

A check is ``pass``, ``fail`` or ``skipped`` (its inputs are absent, e.g. no outcomes):
a skipped check never fails a run, and its ``details`` say why. The run's verdict is
``fail`` when any check failed, else ``pass``. Checks read the run's own result tables, so
every verdict traces to a row in DuckDB.
"""

from __future__ import annotations

import math

import pandas as pd

from audit.config import Thresholds

VERDICT_COLUMNS = ["model", "check_name", "category", "threshold", "value", "passed", "status",
                   "details"]


def _row(model, name, category, threshold, value, ok, details):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {"model": model, "check_name": name, "category": category,
                "threshold": threshold, "value": None, "passed": None, "status": "skipped",
                "details": details}
    return {"model": model, "check_name": name, "category": category, "threshold": threshold,
            "value": float(value), "passed": bool(ok), "status": "pass" if ok else "fail",
            "details": details}


def _accuracy_value(acc: pd.DataFrame, model: str, output: str, metric: str):
    sel = acc[(acc["model"] == model) & (acc["output"] == output) & (acc["metric"] == metric)
              & (acc["attribute"] == "all")]
    if sel.empty:
        return None, None
    r = sel.iloc[0]
    return r["value"], f"{r['value']:.3g} (95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}; n={r['n']})"


def _term(terms: pd.DataFrame, model: str, model_ids: list[str], term: str):
    for model_id in model_ids:
        sel = terms[(terms["model"] == model) & (terms["model_id"] == model_id)
                    & (terms["term"] == term)]
        if not sel.empty:
            return sel.iloc[0], model_id
    return None, None


def evaluate(*, models: list[dict], n_manifest_rows: int, n_quarantined: int,
             accuracy: pd.DataFrame, survival_terms: pd.DataFrame, has_outcomes: bool,
             thresholds: Thresholds) -> pd.DataFrame:
    """All checks of a run.

    Parameters
    ----------
    models : ``[{"name": ..., "outputs": [...]}]`` for each model audited.
    n_manifest_rows, n_quarantined : rows read and rows set aside.
    accuracy, survival_terms : the run's ``accuracy`` and ``survival_terms`` rows.
    has_outcomes : whether the cohort has time and event.
    thresholds : from the audit config.
    """
    t = thresholds
    rows = []
    frac = n_quarantined / n_manifest_rows if n_manifest_rows else 0.0
    rows.append(_row(None, "quarantine_fraction", "data", t.max_quarantine_fraction, frac,
                     frac <= t.max_quarantine_fraction,
                     f"{n_quarantined} of {n_manifest_rows} rows quarantined (at most "
                     f"{t.max_quarantine_fraction:.0%} allowed)"))
    for m in models:
        name, outputs = m["name"], m["outputs"]
        if "faceage" in outputs:
            v, d = _accuracy_value(accuracy, name, "faceage", "mae")
            rows.append(_row(name, "faceage_mae", "accuracy", t.faceage_mae_max, v,
                             v is not None and v <= t.faceage_mae_max,
                             f"MAE {d} must be at most {t.faceage_mae_max:g} years" if d
                             else "no FaceAge predictions with a chronological age"))
            v, d = _accuracy_value(accuracy, name, "faceage", "mean_error")
            rows.append(_row(name, "faceage_abs_mean_error", "accuracy",
                             t.faceage_abs_mean_error_max, None if v is None else abs(v),
                             v is not None and abs(v) <= t.faceage_abs_mean_error_max,
                             f"mean signed error {d}; its size must be at most "
                             f"{t.faceage_abs_mean_error_max:g} years" if d
                             else "no FaceAge predictions with a chronological age"))
            v, d = _accuracy_value(accuracy, name, "faceage", "pearson_r")
            rows.append(_row(name, "faceage_pearson_r", "accuracy", t.faceage_pearson_min, v,
                             v is not None and v >= t.faceage_pearson_min,
                             f"Pearson r {d} must be at least {t.faceage_pearson_min:g}" if d
                             else "no FaceAge predictions with a chronological age"))
            term, model_id = _term(survival_terms, name,
                                   ["faceage_per_decade__age_sex", "faceage_per_decade__age"],
                                   "faceage_decade")
            why = ("the cohort has no outcomes" if not has_outcomes
                   else "the adjusted Cox model was not fitted (too few events?)")
            rows.append(_row(
                name, "faceage_adjusted_hr_per_decade", "survival",
                t.faceage_adjusted_hr_lower_min, None if term is None else term["hr_low"],
                term is not None and term["hr_low"] > t.faceage_adjusted_hr_lower_min,
                why if term is None else
                f"{model_id}: HR {term['hr']:.3f} per decade (95% CI {term['hr_low']:.3f} to "
                f"{term['hr_high']:.3f}); the lower bound must exceed "
                f"{t.faceage_adjusted_hr_lower_min:g}"))
        if "risk" in outputs:
            v, d = _accuracy_value(accuracy, name, "risk", "c_index")
            rows.append(_row(name, "risk_c_index", "accuracy", t.risk_cindex_min, v,
                             v is not None and v >= t.risk_cindex_min,
                             f"Harrell's C {d} must be at least {t.risk_cindex_min:g}" if d
                             else "the cohort has no outcomes"))
            term, model_id = _term(survival_terms, name,
                                   ["risk_quartiles__age_sex", "risk_quartiles__unadjusted"],
                                   "risk[Q4]")
            rows.append(_row(
                name, "risk_q4_vs_q1_hr", "survival", t.risk_q4_vs_q1_hr_lower_min,
                None if term is None else term["hr_low"],
                term is not None and term["hr_low"] > t.risk_q4_vs_q1_hr_lower_min,
                ("the cohort has no outcomes" if not has_outcomes
                 else "the quartile Cox model was not fitted") if term is None else
                f"{model_id}: Q4 vs Q1 HR {term['hr']:.2f} (95% CI {term['hr_low']:.2f} to "
                f"{term['hr_high']:.2f}); the lower bound must exceed "
                f"{t.risk_q4_vs_q1_hr_lower_min:g}"))
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def overall(verdicts: pd.DataFrame) -> str:
    """``fail`` when any check failed, else ``pass``."""
    return "fail" if (verdicts["status"] == "fail").any() else "pass"
