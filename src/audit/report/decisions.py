"""The decision-curve view of a run page: per score and horizon, the plot, one sentence of
where the model is useful, and the numbers by threshold (:mod:`audit.decision_curves`)."""

from __future__ import annotations

import math

import pandas as pd

from audit.decision_curves import threshold_runs, useful_thresholds, years
from audit.report import plots

SCORES = {"faceage": "FaceAge", "risk": "risk score"}


def _clean(row: dict) -> dict:
    """NaN (no comparison made) as None, for the template's "is not none" tests."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def decision_summaries(rows: pd.DataFrame, model: str) -> list[dict]:
    """Per (score, horizon) of ``model``'s ``decision_curves`` rows: labels, sizes, where
    the model is useful (against treat-all and treat-none, and against age) and one sentence
    saying so; with the group's rows as ``curve`` (for the page's plot and table)."""
    out = []
    rows = rows[rows["model"] == model]
    for (score, horizon), g in rows.groupby(["model_id", "horizon"], sort=True):
        grid = sorted(float(v) for v in g["threshold"].unique())
        label = SCORES.get(score, score)
        when = years(float(horizon))
        over_all = threshold_runs(useful_thresholds(g, "treat_all"), grid)
        has_age = bool((g["strategy"] == "chronological_age").any())
        over_age = threshold_runs(useful_thresholds(g, "chronological_age"), grid) \
            if has_age else None
        summary = (f"Acting on the {label} (as a cross-fitted risk of death within {when}) "
                   f"beats both treating everyone and treating no one, with 95% "
                   f"confidence, at thresholds {over_all}")
        if over_age is not None:
            summary += f"; it also beats chronological age at {over_age}"
        first = g.iloc[0]
        out.append({"score": label, "horizon": float(horizon), "when": when,
                    "n": int(first["n"]), "events": int(first["events"]),
                    "useful": over_all, "useful_over_age": over_age,
                    "summary": summary + ".", "curve": g, "grid": grid})
    return out


def decision_view(rows: pd.DataFrame, model: str) -> list[dict]:
    """The page's entries: :func:`decision_summaries` with the plot and the numbers by
    threshold."""
    out = []
    for d in decision_summaries(rows, model):
        g = d.pop("curve")
        wide = {s: part.set_index("threshold") for s, part in g.groupby("strategy")}
        age = wide.get("chronological_age")
        table = []
        for th in d.pop("grid"):
            m = wide["model"].loc[th]
            table.append(_clean({
                "threshold": th, "positive_rate": m["positive_rate"],
                "net_benefit": m["net_benefit"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                "age": None if age is None else age.loc[th, "net_benefit"],
                "treat_all": wide["treat_all"].loc[th, "net_benefit"],
                "diff_treat_all": m["diff_treat_all"], "diff_treat_all_low": m["diff_treat_all_low"],
                "diff_treat_all_high": m["diff_treat_all_high"], "diff_age": m["diff_age"],
                "diff_age_low": m["diff_age_low"], "diff_age_high": m["diff_age_high"],
                "interventions_avoided": m["interventions_avoided"]}))
        label, when = d["score"], d["when"]
        out.append(dict(
            d, rows=table,
            uri=plots.decision_plot(g, f"{model}\n{label}: decision curve, death within {when}"),
            alt=(f"Net benefit of the {label} against the threshold probability of death "
                 f"within {when}, with its 95% CI band, beside chronological age, treat all "
                 "and treat none (zero).")))
    return out
