"""The decision-curve view of a run page: per score and horizon, the plot, one sentence of
where the model is useful, and the numbers by threshold (:mod:`audit.decisions.curves`)."""

from __future__ import annotations

import math

import pandas as pd

from audit.decisions.curves import threshold_runs, useful_thresholds, years
from audit.report import plots

SCORES = {"faceage": "FaceAge", "risk": "risk score"}
WITH_ARTICLE = {"FaceAge": "FaceAge", "risk score": "the risk score"}


def at_thresholds(runs: str) -> str:
    """``"at thresholds 10-35%"``, or ``"at no threshold"`` for :func:`threshold_runs`'s
    ``"none"``."""
    return "at no threshold" if runs == "none" else f"at thresholds {runs}"


def _clean(row: dict) -> dict:
    """NaN (no comparison made) as None, for the template's "is not none" tests."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def decision_summaries(rows: pd.DataFrame, model: str) -> list[dict]:
    """Per (score, horizon) of ``model``'s ``decision_curves`` rows: labels, sizes, where
    the model is useful (against treat-all and treat-none, and against age) and one sentence
    saying so; with the group's rows as ``curve`` (for the page's plot and table)."""
    out = []
    # the nested models' curves carry the incremental label, which is a model's own name
    # when one model gives every output: they are shown by nested_summaries
    rows = rows[(rows["model"] == model) & ~rows["model_id"].str.startswith("incremental__")]
    for (score, horizon), g in rows.groupby(["model_id", "horizon"], sort=True):
        grid = sorted(float(v) for v in g["threshold"].unique())
        label = SCORES.get(score, score)
        when = years(float(horizon))
        over_all = threshold_runs(useful_thresholds(g, "treat_all"), grid)
        has_age = bool((g["strategy"] == "chronological_age").any())
        over_age = (
            threshold_runs(useful_thresholds(g, "chronological_age"), grid) if has_age else None
        )
        summary = (
            f"Acting on the {label} (as a cross-fitted risk of death within {when}) "
            f"beats both treating everyone and treating no one, with 95% "
            f"confidence, {at_thresholds(over_all)}"
        )
        if over_age is not None:
            summary += f"; it also beats chronological age {at_thresholds(over_age)}"
        first = g.iloc[0]
        out.append(
            {
                "score": label,
                "horizon": float(horizon),
                "when": when,
                "n": int(first["n"]),
                "events": int(first["events"]),
                "useful": over_all,
                "useful_over_age": over_age,
                "summary": summary + ".",
                "curve": g,
                "grid": grid,
            }
        )
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
            table.append(
                _clean(
                    {
                        "threshold": th,
                        "positive_rate": m["positive_rate"],
                        "net_benefit": m["net_benefit"],
                        "ci_low": m["ci_low"],
                        "ci_high": m["ci_high"],
                        "age": None if age is None else age.loc[th, "net_benefit"],
                        "treat_all": wide["treat_all"].loc[th, "net_benefit"],
                        "diff_treat_all": m["diff_treat_all"],
                        "diff_treat_all_low": m["diff_treat_all_low"],
                        "diff_treat_all_high": m["diff_treat_all_high"],
                        "diff_age": m["diff_age"],
                        "diff_age_low": m["diff_age_low"],
                        "diff_age_high": m["diff_age_high"],
                        "interventions_avoided": m["interventions_avoided"],
                    }
                )
            )
        label, when = d["score"], d["when"]
        out.append(
            dict(
                d,
                rows=table,
                uri=plots.to_uri(
                    plots.decision_plot(g, f"{model}\n{label}: decision curve, death within {when}")
                ),
                alt=(
                    f"Net benefit of the {label} against the threshold probability of death "
                    f"within {when}, with its 95% CI band, beside chronological age, treat all "
                    "and treat none (zero)."
                ),
            )
        )
    return out


def step_label(model_id: str) -> str:
    """``incremental__clinical+faceage`` -> ``clinical + FaceAge``."""
    parts = model_id.split("__", 1)[-1].split("+")
    return " + ".join(SCORES.get(p, p) for p in parts)


def nested_summaries(rows: pd.DataFrame, label: str) -> list[dict]:
    """Per horizon of the nested models' ``decision_curves`` rows (``model`` = ``label``,
    the incremental models' label, e.g. ``"FaceAge model + risk model"``): each step, where
    it beats treating everyone and no one, and where it beats the step before (its gain's
    95% lower bound above 0, and the step itself above treat-all and treat-none), in one
    sentence; ``added_by`` names the model whose output the step adds."""
    out = []
    rows = rows[(rows["model"] == label) & rows["model_id"].str.startswith("incremental__")]
    by = label.split(" + ")
    for horizon, g in rows.groupby("horizon", sort=True):
        grid = sorted(float(v) for v in g["threshold"].unique())
        ids = list(dict.fromkeys(g.loc[g["strategy"] == "model", "model_id"]))
        steps, sentences = [], []
        for i, model_id in enumerate(ids):
            part = g[g["model_id"] == model_id]
            added = SCORES.get(model_id.rsplit("+", 1)[-1]) if i else None
            step = {
                "model_id": model_id,
                "label": step_label(model_id),
                "added": added,
                "added_by": by[i - 1] if i and len(by) >= i else None,
                "useful": threshold_runs(useful_thresholds(part, "treat_all"), grid),
                "gain": (threshold_runs(useful_thresholds(part, "compared"), grid) if i else None),
            }
            steps.append(step)
            if i == 0:
                sentences.append(
                    f"The clinical model alone beats treating everyone and no "
                    f"one, with 95% confidence, {at_thresholds(step['useful'])}"
                )
            else:
                source = f" ({step['added_by']})" if step["added_by"] else ""
                sentences.append(
                    f"adding {WITH_ARTICLE.get(added, added)}{source} raises "
                    f"the net benefit, with 95% confidence, "
                    f"{at_thresholds(step['gain'])}"
                )
        first = g.iloc[0]
        out.append(
            {
                "horizon": float(horizon),
                "when": years(float(horizon)),
                "n": int(first["n"]),
                "events": int(first["events"]),
                "steps": steps,
                "summary": "; ".join(sentences) + ".",
                "curve": g,
                "grid": grid,
            }
        )
    return out


def nested_view(rows: pd.DataFrame, label: str) -> list[dict]:
    """The incremental section's decision curves: :func:`nested_summaries` with the plot and,
    by threshold, each step's net benefit and gain over the step before."""
    out = []
    for d in nested_summaries(rows, label):
        g = d.pop("curve")
        wide = {
            m: part.set_index("threshold")
            for m, part in g[g["strategy"] == "model"].groupby("model_id")
        }
        treat_all = g[g["strategy"] == "treat_all"].set_index("threshold")["net_benefit"]
        table = []
        for th in d.pop("grid"):
            cells = []
            for s in d["steps"]:
                r = wide[s["model_id"]].loc[th]
                cells.append(
                    _clean(
                        {
                            "net_benefit": r["net_benefit"],
                            "ci_low": r["ci_low"],
                            "ci_high": r["ci_high"],
                            "gain": r["diff_compared"],
                            "gain_low": r["diff_compared_low"],
                            "gain_high": r["diff_compared_high"],
                        }
                    )
                )
            table.append({"threshold": th, "treat_all": treat_all.get(th), "steps": cells})
        names = [(s["model_id"], s["label"]) for s in d["steps"]]
        when = d["when"]
        out.append(
            dict(
                d,
                rows=table,
                uri=plots.to_uri(
                    plots.nested_decision_plot(
                        g, names, f"{label}\nnested models: decision curves, death within {when}"
                    )
                ),
                alt=(
                    f"Net benefit of the nested models ({', '.join(n for _, n in names)}) "
                    f"against the threshold probability of death within {when}, the largest "
                    "with its 95% CI band, beside treat all and treat none (zero)."
                ),
            )
        )
    return out


def subgroup_summaries(rows: pd.DataFrame) -> list[dict]:
    """Per (model, score, horizon) of ``decision_subgroups`` rows: each group's size and
    where acting on the score is useful or harmful in it (simultaneous bands), and where it
    is harmed although the score is useful for the cohort as a whole."""
    out = []
    for (model, score, horizon), g in rows.groupby(["model", "model_id", "horizon"], sort=True):
        grid = sorted(float(v) for v in g["threshold"].unique())
        groups = []
        for (attribute, name), part in g.groupby(["attribute", "group_name"], sort=False):

            def runs(mask):
                return threshold_runs(sorted(float(v) for v in part.loc[mask, "threshold"]), grid)

            small = bool((part["status"] == "too_small").all())
            groups.append(
                {
                    "attribute": attribute,
                    "group_name": name,
                    "n": int(part["n"].iloc[0]),
                    "events": int(part["events"].iloc[0]),
                    "too_small": small,
                    "useful": None if small else runs(part["status"] == "useful"),
                    "harmful": None if small else runs(part["status"] == "harmful"),
                    "harmed_where_useful": None
                    if small
                    else runs((part["status"] == "harmful") & part["overall_useful"].astype(bool)),
                }
            )
        overall = threshold_runs(
            sorted(float(v) for v in g.loc[g["overall_useful"].astype(bool), "threshold"].unique()),
            grid,
        )
        flagged = [x for x in groups if x["harmed_where_useful"] not in (None, "none")]
        out.append(
            {
                "model": model,
                "score": SCORES.get(score, score),
                "horizon": float(horizon),
                "when": years(float(horizon)),
                "overall_useful": overall,
                "groups": groups,
                "flagged": flagged,
                "rows": g,
            }
        )
    return out


def subgroup_view(rows: pd.DataFrame) -> list[dict]:
    """The fairness section's clinical utility by subgroup: :func:`subgroup_summaries` with
    a map of each group's status by threshold."""
    out = []
    for d in subgroup_summaries(rows):
        g = d.pop("rows")
        title = f"{d['model']}: {d['score']}, death within {d['when']}"
        out.append(
            dict(
                d,
                uri=plots.to_uri(plots.utility_map(g, title)),
                alt=(
                    "For each subgroup (rows) and threshold probability (columns): whether "
                    f"acting on the {d['score']} beats treating everyone and no one in that "
                    "group (useful), does worse than them (harmful), or cannot be told apart "
                    "(uncertain), with simultaneous "
                    "95% bands; blank: too small to judge; a dot marks the thresholds at which the "
                    "score is useful for the whole cohort."
                ),
            )
        )
    return out
