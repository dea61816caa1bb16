"""Verdicts: each audit check against its threshold from the audit config.

A check is ``pass``, ``fail``, ``inconclusive`` (the estimate is too imprecise to judge:
too few deaths, or a confidence interval too wide; the details say how many deaths would
settle it) or ``skipped`` (its inputs are absent, e.g. no outcomes): a skipped check never
fails a run, and its ``details`` say why. The run's verdict is ``fail`` when any check failed
or was inconclusive (a check passes only on adequate evidence), else ``pass``. ``value`` is
the estimate (e.g. the hazard ratio); ``judged_value`` is the number held against the
threshold (e.g. the lower bound of its CI). Checks read the run's own result tables, so every
verdict traces to a row in DuckDB.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.data.exclusions import most_excluded
from audit.decisions.curves import threshold_runs, useful_thresholds, years
from audit.metrics.slices import FINDING, NOT_CONFIRMED, judged
from audit.pipeline.config import FairnessConfig, Thresholds
from audit.pipeline.schema import columns

VERDICT_COLUMNS = columns("verdicts")


def sig3(x: float) -> str:
    """Three significant digits, with floating-point dust (|x| < 1e-9) shown as 0: the mean
    of an age-adjusted error is 0 by construction, not -4.88e-15."""
    return "0" if abs(x) < 1e-9 else f"{x:.3g}"


def check_row(
    model, name, category, threshold, value, ok, details, judged=None, inconclusive: bool = False
):
    """One check. ``judged``: the number held against the threshold when it is not the
    estimate ``value`` itself; ``inconclusive``: the estimate is too imprecise to judge."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {
            "model": model,
            "check_name": name,
            "category": category,
            "threshold": threshold,
            "value": None,
            "judged_value": None,
            "passed": None,
            "status": "inconclusive" if inconclusive else "skipped",
            "details": details,
        }
    judged = value if judged is None else judged
    status = "inconclusive" if inconclusive else ("pass" if ok else "fail")
    return {
        "model": model,
        "check_name": name,
        "category": category,
        "threshold": threshold,
        "value": float(value),
        "judged_value": float(judged),
        "passed": None if inconclusive else bool(ok),
        "status": status,
        "details": details,
    }


def _accuracy_value(acc: pd.DataFrame | None, model: str, output: str, metric: str):
    if acc is None or acc.empty:
        return None, None
    sel = acc[
        (acc["model"] == model)
        & (acc["output"] == output)
        & (acc["metric"] == metric)
        & (acc["attribute"] == "all")
    ]
    if sel.empty:
        return None, None
    r = sel.iloc[0]
    return r[
        "value"
    ], f"{r['value']:.3g} (95% CI {r['ci_low']:.3g} to {r['ci_high']:.3g}; n={r['n']})"


def _term(terms: pd.DataFrame | None, model: str, model_ids: list[str], term: str):
    if terms is None or terms.empty:
        return None, None
    for model_id in model_ids:
        sel = terms[
            (terms["model"] == model) & (terms["model_id"] == model_id) & (terms["term"] == term)
        ]
        if not sel.empty:
            return sel.iloc[0], model_id
    return None, None


def _accuracy_check(
    accuracy, model, check, output, metric, threshold, at_least, label, missing, absolute=False
):
    v, d = _accuracy_value(accuracy, model, output, metric)
    if v is not None and not math.isfinite(v):  # computed, but undefined on this cohort
        return check_row(
            model,
            check,
            "accuracy",
            threshold,
            None,
            False,
            f"{label} is undefined on this cohort: the output does not vary, or "
            "there are no deaths to rank",
        )
    value = None if v is None else (abs(v) if absolute else v)
    ok = value is not None and (value >= threshold if at_least else value <= threshold)
    rule = f"must be at least {threshold:g}" if at_least else f"must be at most {threshold:g}"
    size = "; its size " if absolute else " "
    return check_row(
        model, check, "accuracy", threshold, value, ok, f"{label} {d}{size}{rule}" if d else missing
    )


def _hr_check(
    terms,
    model,
    check,
    model_ids,
    term_name,
    threshold,
    label,
    missing,
    t: Thresholds,
    models: pd.DataFrame | None = None,
):
    """The lower CI bound of a hazard ratio against ``threshold``; ``inconclusive`` when the
    model has fewer than ``t.min_events_judged`` deaths or the CI's upper/lower ratio exceeds
    ``t.hr_ci_ratio_max`` (an HR of 39, CI 1.7 to 894, on 18 deaths says nothing)."""
    term, model_id, label = _hr_term(terms, model, model_ids, term_name, label)
    if term is None:
        failed = _not_converged(models, model, model_ids)
        if failed is not None:  # a fit the data broke is no evidence either way
            return check_row(
                model,
                check,
                "survival",
                threshold,
                math.nan,
                False,
                f"{failed[0]}: {failed[1]}",
                judged=math.nan,
                inconclusive=True,
            )
        return check_row(model, check, "survival", threshold, None, False, missing)
    events = _model_events(models, model, model_id)
    hr, low, high = float(term["hr"]), float(term["hr_low"]), float(term["hr_high"])
    text = (
        f"{model_id}: {label} {hr:.3g} (95% CI {low:.3g} to {high:.3g}"
        + (f"; {events} deaths" if events is not None else "")
        + ")"
    )
    imprecise = _imprecision(events, high / low if low > 0 else math.inf, t)
    if imprecise:
        return check_row(
            model,
            check,
            "survival",
            threshold,
            hr,
            False,
            f"{text}: too imprecise to judge: {imprecise}",
            judged=low,
            inconclusive=True,
        )
    return check_row(
        model,
        check,
        "survival",
        threshold,
        hr,
        low > threshold,
        f"{text}; the lower bound must exceed {threshold:g}",
        judged=low,
    )


def _hr_term(terms, model, model_ids, term_name: str, label: str):
    """``(term row, model_id, label)`` of the hazard ratio judged: for ``risk[Q4]`` with Q4
    empty (tied scores), the highest quartile present; ``(None, None, label)`` without one."""
    term, model_id = _term(terms, model, model_ids, term_name)
    if term is None and term_name == "risk[Q4]":  # tied scores can leave Q4 empty
        for lower in ("risk[Q3]", "risk[Q2]"):
            term, model_id = _term(terms, model, model_ids, lower)
            if term is not None:
                return (
                    term,
                    model_id,
                    f"{lower[5:7]} vs Q1 HR (Q4 is empty: tied scores; the highest "
                    "quartile present)",
                )
    return term, model_id, label


def _model_events(models: pd.DataFrame | None, model: str, model_id) -> int | None:
    """Deaths in the fitted model ``model_id`` (None when not recorded)."""
    if models is None or not len(models):
        return None
    sel = models[(models["model"] == model) & (models["model_id"] == model_id)]
    if len(sel) and pd.notna(sel["events"].iloc[0]):
        return int(sel["events"].iloc[0])
    return None


def _imprecision(events: int | None, ratio: float, t: Thresholds) -> str | None:
    """Why a hazard ratio is too imprecise to judge (too few deaths, or a CI whose
    upper/lower ratio exceeds ``t.hr_ci_ratio_max``) and about how many deaths would settle
    it; None when it can be judged."""
    short = events is not None and events < t.min_events_judged
    wide = not ratio <= t.hr_ci_ratio_max
    if not (short or wide):
        return None
    why = []
    if short:
        why.append(f"{events} deaths, under the {t.min_events_judged} needed to judge")
    if wide:
        why.append(f"the CI spans a factor of {ratio:.3g} (at most {t.hr_ci_ratio_max:g} to judge)")
    more = ""
    if events and math.isfinite(ratio) and ratio > 1:
        # the CI's log-width shrinks as 1 / sqrt(deaths)
        need = events * (math.log(ratio) / math.log(t.hr_ci_ratio_max)) ** 2 if wide else 0
        need = max(need, t.min_events_judged)
        more = f"; about {math.ceil(need)} deaths would settle it"
    return " and ".join(why) + more


def _not_converged(
    models: pd.DataFrame | None, model: str, model_ids: list[str]
) -> tuple[str, str] | None:
    """The first of ``model_ids`` whose Cox fit did not converge, with its note."""
    if models is None or not len(models) or "status" not in models:
        return None
    for model_id in model_ids:
        sel = models[
            (models["model"] == model)
            & (models["model_id"] == model_id)
            & (models["status"] == "not_converged")
        ]
        if len(sel):
            return model_id, str(sel["note"].iloc[0])
    return None


def _robustness_checks(
    rob: pd.DataFrame | None, model: str, output: str, t: Thresholds
) -> list[dict]:
    """Judged rows of the robustness table (severities up to the judged maximum, groups of
    at least the minimum size): the worst share beyond tolerance overall and in any
    subgroup, and for risk the worst share of quartile changes."""
    sel = (
        rob[(rob["model"] == model) & (rob["output"] == output)]
        if rob is not None and len(rob)
        else pd.DataFrame()
    )
    metrics = [
        ("frac_over_tolerance", t.robustness_frac_over_tolerance_max, "", "beyond tolerance")
    ]
    if output == "risk":
        metrics.append(
            (
                "quartile_change",
                t.robustness_quartile_change_max,
                "_quartile_change",
                "changing risk quartile",
            )
        )
    rows = []
    reliability, unreliable = _reliability_check(sel, model, output, t)
    if reliability is not None:
        rows.append(reliability)
    for metric, threshold, suffix, what in metrics:
        for scope, label in (("overall", ""), ("subgroups", "_subgroups")):
            name = f"robustness_{output}{suffix}{label}"
            judged = sel[sel["passed"].notna()] if len(sel) else sel
            if len(judged):
                judged = judged[(judged["attribute"] == "all") == (scope == "overall")]
            if judged is None or not len(judged):
                why = (
                    "robustness was not run for this model"
                    if not len(sel)
                    else f"no {scope} row at a judged severity with enough photos"
                )
                rows.append(check_row(model, name, "robustness", threshold, None, False, why))
                continue

            worst = judged.sort_values([metric, "severity"], ascending=[False, True]).iloc[0]
            value = float(worst[metric])
            n_fail = int((judged[metric] > threshold).sum())
            where = (
                "" if scope == "overall" else f" for {worst['attribute']} = {worst['group_name']}"
            )
            details = (
                f"worst{where}: {worst['perturbation']} at severity "
                f"{int(worst['severity'])} ({worst['description']}), {value:.0%} of "
                f"{int(worst['n'])} photos {what}; {n_fail} of {len(judged)} judged "
                f"rows over {threshold:.0%}"
            )
            hollow = value <= threshold and unreliable is not None
            # small shifts prove nothing for an output that hardly depends on the face
            rows.append(
                check_row(
                    model,
                    name,
                    "robustness",
                    threshold,
                    value,
                    value <= threshold,
                    f"{details}; not a pass: {unreliable}" if hollow else details,
                    inconclusive=hollow,
                )
            )
    return rows


def _reliability_check(
    sel: pd.DataFrame, model: str, output: str, t: Thresholds
) -> tuple[dict | None, str | None]:
    """Robustness relative to the model's own spread across subjects: the lowest ICC(3,1)
    between clean and perturbed outputs over the judged perturbations (whole sample) must
    reach ``t.robustness_icc_min``. A model whose output barely moves because it hardly
    depends on the face has a low ICC (its perturbation noise rivals its spread across
    subjects), and one whose output never varies has none: either way it has no robustness
    to claim, and the returned reason makes the tolerance checks inconclusive.

    Returns the check's row (None when robustness did not run) and that reason (None when
    the output is reliable enough for its shifts to be judged)."""
    name = f"robustness_{output}_reliability"
    judged = sel[sel["passed"].notna() & (sel["attribute"] == "all")] if len(sel) else sel
    if not len(judged):
        return None, None
    icc = judged["icc"].astype(float)
    if icc.isna().all():
        why = (
            "the output does not vary across subjects at any judged perturbation: a "
            "model whose output does not depend on the face has no robustness to claim"
        )
        return check_row(
            model, name, "robustness", t.robustness_icc_min, math.nan, False, why, inconclusive=True
        ), why
    worst = judged.loc[icc.fillna(-np.inf).idxmin()]
    value = float(worst["icc"]) if pd.notna(worst["icc"]) else float("nan")
    details = (
        f"lowest ICC(3,1) between clean and perturbed outputs: {value:.3f} under "
        f"{worst['perturbation']} at severity {int(worst['severity'])} "
        f"({worst['description']}, {int(worst['n'])} photos); must be at least "
        f"{t.robustness_icc_min:g}, so that perturbations move the output less than "
        "subjects differ"
    )
    if not np.isfinite(value):
        why = f"under {worst['perturbation']} the output stops varying across subjects"
        return check_row(
            model, name, "robustness", t.robustness_icc_min, math.nan, False, why, inconclusive=True
        ), why
    ok = value >= t.robustness_icc_min
    unreliable = (
        None
        if ok
        else (
            f"the output's reliability under perturbation is too low "
            f"(ICC {value:.3f} < {t.robustness_icc_min:g}): it moves "
            "nearly as much under a perturbation as between subjects"
        )
    )
    return check_row(
        model, name, "robustness", t.robustness_icc_min, value, ok, details
    ), unreliable


def _fairness_floor(sel: pd.DataFrame, output: str, t: Thresholds) -> str | None:
    """Why an output cannot be judged for fairness at all, or None. Errors adjusted for age
    say nothing of a FaceAge that does not track age (every group looks alike when the model
    says the same for everyone); C and O/E by group say nothing of a score that does not
    discriminate overall."""

    def overall(metric):
        row = sel[(sel["metric"] == metric) & (sel["attribute"] == "all")]
        return row.iloc[0] if len(row) else None

    if output == "faceage":
        r = overall("pearson_r")
        if r is not None and not (r["value"] >= t.fairness_min_pearson):
            return (
                f"not judged: FaceAge tracks chronological age too weakly (Pearson r "
                f"{r['value']:.3g}, at least {t.fairness_min_pearson:g} needed) for its "
                "age-adjusted errors to say anything about fairness"
            )
    if output == "risk":
        c = overall("c_index")
        if c is not None and not (c["ci_low"] > 0.5):
            return (
                f"not judged: the score does not discriminate overall (Harrell's C "
                f"{c['value']:.3f}, 95% CI {c['ci_low']:.3f} to {c['ci_high']:.3f}), so "
                "its C and O/E by group cannot show a group it serves worse"
            )
    return None


def _fairness_check(
    fair: pd.DataFrame | None, model: str, output: str, metrics: list[str], t: Thresholds
) -> dict:
    """Flagged subgroups of the verdict's fairness metrics for one model output."""
    name = f"fairness_{output}"
    sel = (
        fair[(fair["model"] == model) & (fair["output"] == output)]
        if fair is not None and len(fair)
        else pd.DataFrame()
    )
    if not len(sel):
        return check_row(
            model,
            name,
            "fairness",
            t.fairness_flagged_max,
            None,
            False,
            "fairness was not computed for this output",
        )
    floor = _fairness_floor(sel, output, t)
    if floor is not None:
        return check_row(
            model,
            name,
            "fairness",
            float(t.fairness_flagged_max),
            float((sel["metric"].isin(metrics) & (sel["status"] == "flagged")).sum()),
            False,
            floor,
            inconclusive=True,
        )
    judged = sel[sel["metric"].isin(metrics)]
    flagged = judged[judged["status"] == "flagged"]
    listed = "; ".join(
        f"{r.metric} {r.attribute} = {r.group_name}: {r.value:.3g} vs overall "
        f"{sig3(r.value - r.diff_to_overall)} (difference {r.diff_to_overall:+.3g}, "
        f"band {r.diff_ci_low:+.3g} to {r.diff_ci_high:+.3g})"
        for r in flagged.head(6).itertuples()
    )
    n_groups = int((judged["attribute"] != "all").sum())
    findings = count_findings(flagged)
    details = (
        f"{len(flagged)} of {n_groups} subgroup rows of {', '.join(sorted(set(judged['metric'])))} "
        f"flagged (simultaneous band beyond tolerance)"
        + (
            f", {findings} finding{'' if findings == 1 else 's'} once overlapping age "
            "groupings are counted once"
            if findings != len(flagged)
            else ""
        )
        + (f": {listed}" if listed else "")
        + (" ..." if len(flagged) > 6 else "")
    )
    return check_row(
        model,
        name,
        "fairness",
        float(t.fairness_flagged_max),
        float(findings),
        findings <= t.fairness_flagged_max,
        details,
    )


def _age_interval(attribute: str, group: str) -> tuple[float, float] | None:
    """The ages a group of an age grouping covers (``<=65``, ``65-75``, ``>85``, ``90-99``),
    or None for a group that is not a plain age range."""
    import re

    if attribute not in ("age_band", "age_decade"):
        return None
    text = str(group).strip()
    if m := re.fullmatch(r"<=\s*([\d.]+)", text):
        return (-math.inf, float(m.group(1)))
    if m := re.fullmatch(r">\s*([\d.]+)", text):
        return (float(m.group(1)), math.inf)
    if m := re.fullmatch(r"([\d.]+)\s*-\s*([\d.]+)", text):
        low, high = float(m.group(1)), float(m.group(2))
        return (low, high + 1.0) if attribute == "age_decade" else (low, high)
    return None


def count_findings(flagged: pd.DataFrame) -> int:
    """Flagged rows, with those of overlapping groupings of age (age band and age decade)
    counted once: flagged age groups of one metric whose age ranges overlap are one finding
    (the >85 band and the 90-99 decade are the same subjects' finding twice)."""
    rows = list(flagged[["metric", "attribute", "group_name"]].itertuples(index=False))
    ages = [(r.metric, _age_interval(r.attribute, r.group_name)) for r in rows]
    plain = sum(1 for _, iv in ages if iv is None)
    by_metric: dict[str, list[tuple[float, float]]] = {}
    for metric, iv in ages:
        if iv is not None:
            by_metric.setdefault(metric, []).append(iv)
    clusters = 0
    for intervals in by_metric.values():  # connected components of overlapping ranges
        end = -math.inf
        for low, high in sorted(intervals):
            if low >= end:
                clusters += 1
            end = max(end, high)
    return plain + clusters


def _representativeness_checks(rep: pd.DataFrame | None, t: Thresholds) -> list[dict]:
    if rep is None or not len(rep) or t.representativeness_p_min <= 0:
        return []
    rows = []
    for attribute, g in rep.dropna(subset=["p_value"]).groupby("attribute", sort=False):
        p = float(g["p_value"].iloc[0])
        worst = g.dropna(subset=["ratio"]).sort_values("ratio").iloc[0]
        rows.append(
            check_row(
                None,
                f"representativeness_{attribute}",
                "data",
                t.representativeness_p_min,
                p,
                p >= t.representativeness_p_min,
                f"chi-square {g['chi2'].iloc[0]:.2f} on {int(g['df'].iloc[0])} df, "
                f"p = {p:.3g}; least represented: {worst['group_name']} at "
                f"{worst['ratio']:.2f} x its intended share",
            )
        )
    return rows


def _drift_checks(drift: pd.DataFrame | None, t: Thresholds) -> list[dict]:
    """One check per kind of feature: how many drifted against the reference run."""
    if drift is None or not len(drift):
        return []
    rows = []
    for kind, g in drift.groupby("kind", sort=False):
        hit = g[g["drifted"].astype(bool)]
        listed = ", ".join(
            f"{r.feature}{f' ({r.model})' if r.model else ''}: effect "
            f"{r.effect:.3g}, p = {r.p_value:.2g}"
            for r in hit.itertuples()
        )
        rows.append(
            check_row(
                None,
                f"drift_{kind}",
                "drift",
                float(t.drift_features_max),
                float(len(hit)),
                len(hit) <= t.drift_features_max,
                f"{len(hit)} of {len(g)} {kind} features drifted against run "
                f"{g['reference'].iloc[0]}" + (f": {listed}" if listed else ""),
            )
        )
    return rows


def _net_benefit_check(
    curves: pd.DataFrame | None, model: str, output: str, t: Thresholds, has_outcomes: bool
) -> list[dict]:
    """Clinical utility over the declared range of thresholds: the share of the decision
    curve's thresholds in ``net_benefit_range`` where acting on the score beats treating
    everyone and no one with 95% confidence (:func:`audit.decisions.curves.useful_thresholds`);
    it passes when that is all of them. Not judged when no range is declared."""
    if not t.net_benefit_range:
        return []
    low, high = t.net_benefit_range
    name = f"{output}_net_benefit"
    h = t.net_benefit_horizon
    span = f"{low:.0%} to {high:.0%} at {years(h)}"
    sel = (
        None
        if curves is None or not len(curves)
        else curves[
            (curves["model"] == model)
            & (curves["model_id"] == output)
            & ((curves["horizon"] - h).abs() < 1e-9)
        ]
    )
    if sel is None or sel.empty:
        why = (
            "the cohort has no outcomes"
            if not has_outcomes
            else f"no decision curve at {years(h)} (add it to survival.decision_horizons; "
            "else the follow-up does not reach it or the score could not be modelled: "
            "see the survival notes)"
        )
        return [check_row(model, name, "survival", 1.0, None, False, why)]
    grid = sorted(float(v) for v in sel["threshold"].unique())
    judged = [v for v in grid if low - 1e-9 <= v <= high + 1e-9]
    if not judged:
        return [
            check_row(
                model,
                name,
                "survival",
                1.0,
                None,
                False,
                f"no decision threshold of the curve lies in {span}",
            )
        ]
    useful = [v for v in useful_thresholds(sel) if v in judged]
    missed = [v for v in judged if v not in useful]
    return [
        check_row(
            model,
            name,
            "survival",
            1.0,
            len(useful) / len(judged),
            not missed,
            f"beats treating everyone and no one (95% CIs) at {len(useful)} of "
            f"{len(judged)} thresholds in {span}"
            + (f"; not at {threshold_runs(missed, grid)}" if missed else ""),
        )
    ]


def _net_benefit_subgroup_check(
    subgroups: pd.DataFrame | None, model: str, output: str, t: Thresholds
) -> list[dict]:
    """No group harmed over the declared range of thresholds: a group of adequate size is
    harmed at a threshold when acting on the score does worse there than both treating
    everyone and treating no one, beyond the simultaneous 95% band over the attribute's
    groups and thresholds (:mod:`audit.decisions.subgroups`). Not judged when no range is
    declared, or when no subgroup curves were computed (fairness off)."""
    if not t.net_benefit_range or subgroups is None:
        return []
    low, high = t.net_benefit_range
    name = f"{output}_net_benefit_subgroups"
    h = t.net_benefit_horizon
    span = f"{low:.0%} to {high:.0%} at {years(h)}"
    sel = (
        subgroups[
            (subgroups["model"] == model)
            & (subgroups["model_id"] == output)
            & ((subgroups["horizon"] - h).abs() < 1e-9)
            & (subgroups["threshold"] >= low - 1e-9)
            & (subgroups["threshold"] <= high + 1e-9)
        ]
        if len(subgroups)
        else subgroups
    )
    if not len(sel):
        return [
            check_row(
                model,
                name,
                "fairness",
                0.0,
                None,
                False,
                f"no subgroup decision curve at {span} (the horizon is not in "
                "survival.decision_horizons, the follow-up does not reach it, the score "
                "could not be modelled, or no threshold of the curve lies in the range)",
            )
        ]
    grid = sorted(float(v) for v in subgroups["threshold"].unique())
    judged = sel[sel["status"] != "too_small"]
    small = sel[sel["status"] == "too_small"].drop_duplicates(["attribute", "group_name"])
    harmed = []
    for (attribute, group), g in judged[judged["status"] == "harmful"].groupby(
        ["attribute", "group_name"], sort=True
    ):
        harmed.append(
            f"{attribute} = {group} at "
            f"{threshold_runs(sorted(float(v) for v in g['threshold']), grid)}"
        )
    n_groups = judged.drop_duplicates(["attribute", "group_name"]).shape[0]
    details = (
        f"harmed (worse than treating everyone and no one, simultaneous 95% bands) "
        f"in {len(harmed)} of {n_groups} groups at {span}: " + "; ".join(harmed)
        if harmed
        else f"none of {n_groups} group{'' if n_groups == 1 else 's'} harmed at {span} "
        "(simultaneous 95% bands)"
    )
    if len(small):
        details += "; too small to judge: " + ", ".join(
            f"{r.attribute} = {r.group_name} ({r.n} subjects, {r.events} deaths)"
            for r in small.itertuples()
        )
    if not n_groups:
        return [check_row(model, name, "fairness", 0.0, None, False, details)]
    return [check_row(model, name, "fairness", 0.0, float(len(harmed)), not harmed, details)]


@dataclass(frozen=True)
class Evidence:
    """What the checks judge: the run's models and counts, its thresholds, and its result
    tables by name (a table that is None or absent: the checks that read it are skipped)."""

    models: list[dict]
    thresholds: Thresholds
    n_manifest_rows: int = 0
    n_quarantined: int = 0
    has_outcomes: bool = False
    fairness_metrics: list[str] | None = None
    # the subgroups the fairness audit judges (attributes and intersections): a confirmed
    # slice that is exactly one of them is left to it
    declared_groups: list[list[str]] | None = None
    tables: Mapping[str, pd.DataFrame | None] = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame | None:
        return self.tables.get(name)


@dataclass(frozen=True)
class Check:
    name: str
    scope: str  # "run": once per run; "model": once per audited model
    reads: tuple[str, ...]
    fn: Callable


CHECKS: list[Check] = []


def register_check(name: str, *, scope: str = "model", reads: tuple[str, ...] = ()):
    """Register a check (as perturbations and models are registered): ``fn(evidence)`` for a
    ``run`` check, ``fn(evidence, model)`` for a ``model`` check, returning verdict rows.
    ``reads``: the result tables it judges (the verdict stage reads those from the store).
    Checks run in the order they were registered; adding one touches this module alone."""
    if scope not in ("run", "model"):
        raise ValueError(f"check {name!r}: scope is run or model, not {scope!r}")

    def add(fn: Callable) -> Callable:
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS.append(Check(name, scope, tuple(reads), fn))
        return fn

    return add


def list_checks() -> list[str]:
    return [c.name for c in CHECKS]


def tables_read() -> list[str]:
    """Every result table some registered check reads."""
    return sorted({t for c in CHECKS for t in c.reads})


def _not_fitted(ev: Evidence) -> str:
    return (
        "the cohort has no outcomes"
        if not ev.has_outcomes
        else "the Cox model was not fitted (too few events, or a score with a single "
        "value: see the survival notes)"
    )


NO_AGE = "no FaceAge predictions with a chronological age"
NO_OUTCOMES = "the cohort has no outcomes"


@register_check("quarantine_fraction", scope="run", reads=("cohort_rows",))
def _quarantine(ev: Evidence) -> list[dict]:
    rows = ev.table("cohort_rows")
    return [_quarantine_row(ev.n_quarantined, ev.n_manifest_rows, ev.thresholds, rows)]


def _quarantine_row(
    n_quarantined: int, n_manifest_rows: int, t: Thresholds, rows: pd.DataFrame | None = None
) -> dict:
    """The share of manifest rows set aside, against its maximum (audit and validation
    runs alike), naming the groups that lost the largest share (``rows``: the run's
    ``cohort_rows``)."""
    frac = n_quarantined / n_manifest_rows if n_manifest_rows else 0.0
    most = most_excluded(rows) if rows is not None and len(rows) else ""
    return check_row(
        None,
        "quarantine_fraction",
        "data",
        t.max_quarantine_fraction,
        frac,
        frac <= t.max_quarantine_fraction,
        f"{n_quarantined} of {n_manifest_rows} rows quarantined (at most "
        f"{t.max_quarantine_fraction:.0%} allowed)" + (f"; most excluded: {most}" if most else ""),
    )


@register_check("face_pipeline", scope="run", reads=("face_pipeline",))
def _face_pipeline(ev: Evidence) -> list[dict]:
    return face_pipeline_checks(ev.table("face_pipeline"), ev.thresholds)


def face_pipeline_checks(table: pd.DataFrame | None, t: Thresholds) -> list[dict]:
    """The groups the face detector fails more often than tolerated (raw photos): a group
    whose simultaneous band of the difference to the overall rate lies above the tolerance
    is excluded from every later statistic more than the rest."""
    if table is None or not len(table):
        return []
    flagged = table[table["status"] == "flagged"]
    overall = table[table["attribute"] == "all"].set_index("metric")["value"]
    listed = "; ".join(
        f"{r.metric} {r.value:.0%} in {r.attribute} = {r.group_name} (overall "
        f"{overall.get(r.metric, float('nan')):.0%}; difference band {r.diff_ci_low:+.0%} to "
        f"{r.diff_ci_high:+.0%})"
        for r in flagged.sort_values("diff_to_overall", ascending=False).itertuples()
    )
    rates = ", ".join(
        f"{m.replace('_', ' ')} {overall[m]:.1%}"
        for m in ("detection_failure", "multi_face", "low_confidence")
        if m in overall and np.isfinite(overall[m])
    )
    return [
        check_row(
            None,
            "face_pipeline",
            "data",
            float(t.face_pipeline_flagged_max),
            float(len(flagged)),
            len(flagged) <= t.face_pipeline_flagged_max,
            f"detector {table['detector'].iloc[0]}: {rates}; {len(flagged)} group(s) "
            f"failed more often than tolerated" + (f": {listed}" if listed else ""),
        )
    ]


@register_check("representativeness", scope="run", reads=("representativeness",))
def _representativeness(ev: Evidence) -> list[dict]:
    return _representativeness_checks(ev.table("representativeness"), ev.thresholds)


@register_check("drift", scope="run", reads=("drift",))
def _drift(ev: Evidence) -> list[dict]:
    return _drift_checks(ev.table("drift"), ev.thresholds)


@register_check("faceage_accuracy", reads=("accuracy",))
def _faceage_accuracy(ev: Evidence, m: dict) -> list[dict]:
    if "faceage" not in m["outputs"]:
        return []
    t, acc, name = ev.thresholds, ev.table("accuracy"), m["name"]
    return [
        _accuracy_check(
            acc,
            name,
            "faceage_mae",
            "faceage",
            "mae",
            t.faceage_mae_max,
            False,
            "MAE (years)",
            NO_AGE,
        ),
        _accuracy_check(
            acc,
            name,
            "faceage_abs_mean_error",
            "faceage",
            "mean_error",
            t.faceage_abs_mean_error_max,
            False,
            "mean signed error (years)",
            NO_AGE,
            absolute=True,
        ),
        _accuracy_check(
            acc,
            name,
            "faceage_pearson_r",
            "faceage",
            "pearson_r",
            t.faceage_pearson_min,
            True,
            "Pearson r",
            NO_AGE,
        ),
    ]


@register_check("faceage_adjusted_hr_per_decade", reads=("survival_terms", "survival_models"))
def _faceage_hr(ev: Evidence, m: dict) -> list[dict]:
    if "faceage" not in m["outputs"]:
        return []
    t = ev.thresholds
    return [
        _hr_check(
            ev.table("survival_terms"),
            m["name"],
            "faceage_adjusted_hr_per_decade",
            ["faceage_per_decade__age_sex", "faceage_per_decade__age"],
            "faceage_decade",
            t.faceage_adjusted_hr_lower_min,
            "HR per decade",
            _not_fitted(ev),
            t,
            ev.table("survival_models"),
        )
    ]


@register_check("risk_c_index", reads=("accuracy",))
def _risk_c(ev: Evidence, m: dict) -> list[dict]:
    if "risk" not in m["outputs"]:
        return []
    return [
        _accuracy_check(
            ev.table("accuracy"),
            m["name"],
            "risk_c_index",
            "risk",
            "c_index",
            ev.thresholds.risk_cindex_min,
            True,
            "Harrell's C",
            NO_OUTCOMES,
        )
    ]


@register_check("risk_q4_vs_q1_hr", reads=("survival_terms", "survival_models"))
def _risk_hr(ev: Evidence, m: dict) -> list[dict]:
    if "risk" not in m["outputs"]:
        return []
    t = ev.thresholds
    return [
        _hr_check(
            ev.table("survival_terms"),
            m["name"],
            "risk_q4_vs_q1_hr",
            ["risk_quartiles__age_sex", "risk_quartiles__unadjusted"],
            "risk[Q4]",
            t.risk_q4_vs_q1_hr_lower_min,
            "Q4 vs Q1 HR",
            _not_fitted(ev),
            t,
            ev.table("survival_models"),
        )
    ]


@register_check("net_benefit", reads=("decision_curves", "decision_subgroups"))
def _net_benefit(ev: Evidence, m: dict) -> list[dict]:
    rows = []
    for output in ("faceage", "risk"):
        if output in m["outputs"]:
            rows.extend(
                _net_benefit_check(
                    ev.table("decision_curves"), m["name"], output, ev.thresholds, ev.has_outcomes
                )
            )
            if ev.has_outcomes:
                rows.extend(
                    _net_benefit_subgroup_check(
                        ev.table("decision_subgroups"), m["name"], output, ev.thresholds
                    )
                )
    return rows


@register_check("fairness", reads=("fairness",))
def _fairness(ev: Evidence, m: dict) -> list[dict]:
    fairness = ev.table("fairness")
    if fairness is None:
        return []
    metrics = ev.fairness_metrics or FairnessConfig().verdict_metrics
    return [
        _fairness_check(fairness, m["name"], output, metrics, ev.thresholds)
        for output in m["outputs"]
    ]


@register_check("robustness", reads=("robustness",))
def _robustness(ev: Evidence, m: dict) -> list[dict]:
    if not m.get("needs_images", True):
        return []
    return [
        row
        for output in m["outputs"]
        for row in _robustness_checks(ev.table("robustness"), m["name"], output, ev.thresholds)
    ]


@register_check("paired", reads=("paired",))
def _paired(ev: Evidence, m: dict) -> list[dict]:
    table = ev.table("paired")
    if table is None or not len(table) or not (table["model"] == m["name"]).any():
        return []  # no paired study analysed for this model
    return [
        row
        for output in m["outputs"]
        for row in paired_checks(table, m["name"], output, ev.thresholds)
    ]


def paired_checks(table: pd.DataFrame, model: str, output: str, t: Thresholds) -> list[dict]:
    """Equivalence on real repeated photos: the comparisons (of ``paired_judged``, else all)
    that are ``not equivalent`` overall, then in any subgroup, against
    ``paired_not_equivalent_max``; an ``inconclusive`` comparison (too few pairs, or a CI
    across the margin) makes a check that does not fail inconclusive."""
    sel = table[(table["model"] == model) & (table["output"] == output)]
    if t.paired_judged:
        sel = sel[sel["condition"].isin(t.paired_judged)]
    rows = []
    for scope, suffix in (("overall", ""), ("subgroups", "_subgroups")):
        name = f"paired_{output}{suffix}"
        part = sel[(sel["attribute"] == "all") == (scope == "overall")]
        if not len(part):
            why = "no comparison judged" if scope == "overall" else "no subgroup rows"
            rows.append(
                check_row(model, name, "paired", t.paired_not_equivalent_max, None, False, why)
            )
            continue
        bad = part[part["equivalence"] == "not equivalent"]
        unsure = part[part["equivalence"] == "inconclusive"]
        where = (
            (lambda r: "")
            if scope == "overall"
            else (lambda r: f" ({r['attribute']} = {r['group_name']})")
        )
        unit = "y" if output == "faceage" else " SD"
        listed = [
            f"{r['comparison']}{where(r)}: {r['equivalence']} (shift {r['mean_shift']:+.2f}{unit}, "
            f"{r['reason']})"
            for _, r in pd.concat([bad, unsure]).iterrows()
        ][:6]
        ok = len(bad) <= t.paired_not_equivalent_max
        details = (
            f"{len(part) - len(bad) - len(unsure)} of {len(part)} equivalent, {len(bad)} not, "
            f"{len(unsure)} inconclusive" + ("; " + "; ".join(listed) if listed else "")
        )
        rows.append(
            check_row(
                model,
                name,
                "paired",
                float(t.paired_not_equivalent_max),
                float(len(bad)),
                ok,
                details,
                inconclusive=ok and len(unsure) > 0,
            )
        )
    return rows


@register_check("slices", reads=("slices",))
def _slices(ev: Evidence, m: dict) -> list[dict]:
    table = ev.table("slices")
    if table is None:
        return []  # slice discovery turned off
    declared = ev.declared_groups
    if declared is None:
        declared = FairnessConfig().declared_groups()
    return [
        slices_check(table, m["name"], output, declared, ev.thresholds) for output in m["outputs"]
    ]


def slices_check(
    table: pd.DataFrame, model: str, output: str, declared: list[list[str]], t: Thresholds
) -> dict:
    """Confirmed failure slices of an output (of the losses in ``slices_judged``) that are
    new findings (:func:`audit.metrics.slices.standing`: not a declared subgroup, not a
    narrowing of a shorter confirmed slice) against ``slices_confirmed_max``; a signed
    loss's slice on a feature of ``slices_health_features`` (what a face-age model is meant
    to read) is reported, not counted."""
    name = f"slices_{output}"
    sel = table[(table["model"] == model) & (table["output"] == output)] if len(table) else table
    if not len(sel):
        return check_row(
            model,
            name,
            "slices",
            t.slices_confirmed_max,
            None,
            False,
            "no slice tested (too few subjects for the minimum slice size in each half, "
            "or no loss for this output)",
        )
    sel = judged(sel, declared, t.slices_judged, t.slices_health_features)
    judged_rows = sel[sel["judged"]]
    losses = [name for name in t.slices_judged if name in set(sel["loss"])]
    found = judged_rows[judged_rows["standing"] == FINDING]
    listed = [
        f"{r['slice']} ({r['loss']}: {r['effect']:+.2f} {r['unit']}, 95% CI "
        f"{r['ci_low']:+.2f} to {r['ci_high']:+.2f}, n={int(r['n_confirm'])})"
        for _, r in found.iterrows()
    ][:5]
    others = int((sel["standing"] != NOT_CONFIRMED).sum()) - len(found)
    details = (
        f"{len(found)} confirmed slice(s) of {', '.join(losses) or 'no judged loss'} "
        f"among {len(judged_rows)} judged of {len(sel)} tested"
        + (": " + "; ".join(listed) if listed else "")
        + (
            f"; {others} other confirmed slice(s) reported (declared subgroups, narrowings, "
            "health features, losses not judged)"
            if others
            else ""
        )
    )
    ok = len(found) <= t.slices_confirmed_max
    return check_row(
        model, name, "slices", float(t.slices_confirmed_max), float(len(found)), ok, details
    )


def evaluate(evidence: Evidence, only: Collection[str] | None = None) -> pd.DataFrame:
    """Every registered check of a run (or those named in ``only``): the ``run`` checks,
    then each model's checks, in the order they were registered. Returns the ``verdicts``
    rows."""
    chosen = [c for c in CHECKS if only is None or c.name in only]
    rows = []
    for check in (c for c in chosen if c.scope == "run"):
        rows.extend(check.fn(evidence))
    for m in evidence.models:
        for check in (c for c in chosen if c.scope == "model"):
            rows.extend(check.fn(evidence, m))
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def validation_checks(
    results: pd.DataFrame,
    n_manifest_rows: int,
    n_quarantined: int,
    thresholds: Thresholds,
    rows: pd.DataFrame | None = None,
    face_pipeline: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The checks of a validation run: the quarantined share (by group, from the run's
    ``cohort_rows``), no failed error check, and the face detector's failures by group."""
    failed = results[(~results["success"].astype(bool)) & (results["severity"] != "warning")]
    names = ", ".join(
        f"{r.suite}.{r.expectation}" + (f"({r.column_name})" if r.column_name else "")
        for r in failed.itertuples()
    )
    rows = [
        _quarantine_row(n_quarantined, n_manifest_rows, thresholds, rows),
        check_row(
            None,
            "validation_errors",
            "data",
            0.0,
            float(len(failed)),
            len(failed) == 0,
            f"{len(failed)} error or critical check(s) failed" + (f": {names}" if names else ""),
        ),
        *face_pipeline_checks(face_pipeline, thresholds),
    ]
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def overall(verdicts: pd.DataFrame) -> str:
    """``fail`` when any check failed or was inconclusive, else ``pass``."""
    return "fail" if verdicts["status"].isin(["fail", "inconclusive"]).any() else "pass"
