"""The model card of a run: one card per audited model, from DuckDB alone.

Sections follow Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019), as a
regulator reads them: model details and intended use as the model spec declares them
(``card:``), the evaluation data (this run's cohort), metrics with their confidence
intervals, subgroup performance, robustness, and limitations. Limitations are derived from
the run's own results (failed checks, flagged or too-small subgroups, under-represented
groups, proportional-hazards violations, drift, too few events) and added to whatever the
developer declared; a card never claims what the run did not measure.
"""

from __future__ import annotations

import pandas as pd

from audit.data.exclusions import most_excluded
from audit.pipeline.verdict import sig3
from audit.report.decisions import decision_summaries, nested_summaries, subgroup_summaries
from audit.report.records import records as _rows

# model-card keys the spec may declare, in the order a card shows them
DECLARED = [
    ("version", "Version"),
    ("developers", "Developed by"),
    ("license", "Licence"),
    ("intended_use", "Intended use"),
    ("users", "Intended users"),
    ("out_of_scope", "Out-of-scope uses"),
    ("population", "Intended population"),
    ("training_data", "Training data (as declared)"),
    ("references", "References"),
    ("contact", "Contact"),
]
HEADLINE_TERMS = {  # (model_id prefix, term) of the hazard ratios a card shows
    "faceage": [("faceage_per_decade", "faceage_decade")],
    "risk": [("risk_per_sd", "risk_sd"), ("risk_quartiles", "risk[Q4]")],
}
# External validation needs about 100 events at least (Collins, Ogundimu & Altman,
# Stat Med 2016; Vergouwe et al., J Clin Epidemiol 2005).
MIN_VALIDATION_EVENTS = 100


def model_cards(ctx: dict, t: dict[str, pd.DataFrame]) -> list[dict]:
    """One card per model of the run. ``ctx`` is the run page's context, ``t`` its tables."""
    config = ctx["config"]
    verdict_metrics = (config.get("fairness") or {}).get("verdict_metrics") or []
    judged_max = int((config.get("robustness") or {}).get("judged_max_severity", 3))
    evaluation = _evaluation_data(ctx, t)
    return [_card(m, ctx, t, evaluation, verdict_metrics, judged_max) for m in ctx["models"]]


DECISION_KEYS = ("score", "when", "n", "events", "useful", "useful_over_age", "summary")


def _card(m: dict, ctx: dict, t: dict, evaluation: dict, verdict_metrics, judged_max) -> dict:
    """One model's card: what it declares, and what this run measured of it."""
    name = m["name"]
    declared = m.get("card") or {}
    outputs = m.get("outputs") or []
    acc = t["accuracy"][t["accuracy"]["model"] == name]
    fair = t["fairness"][t["fairness"]["model"] == name]
    metrics = t["survival_metrics"][
        (t["survival_metrics"]["model"] == name)
        & t["survival_metrics"]["model_id"].isin(outputs)
        & t["survival_metrics"]["metric"].isin(["uno_c", "auc", "brier", "integrated_brier"])
    ]
    subgroup = fair[
        fair["metric"].isin(verdict_metrics)
        & (fair["attribute"] != "all")
        & ~fair["attribute"].str.contains(" x ")
    ]
    card = {
        "name": name,
        "kind": m.get("kind"),
        "arch": m.get("arch"),
        "outputs": outputs,
        "spec_sha256": m.get("spec_sha256"),
        "checkpoint_sha256": m.get("checkpoint_sha256"),
        "input_size": m.get("input_size"),
        "normalize": m.get("normalize"),
        "declared": [
            {"key": k, "label": label, "value": declared[k]}
            for k, label in DECLARED
            if declared.get(k) not in (None, "", [])
        ],
        "declared_other": {
            k: v for k, v in declared.items() if k not in dict(DECLARED) and k != "limitations"
        },
        "evaluation": evaluation,
        "metrics": _rows(acc[acc["attribute"] == "all"]),
        "hazard_ratios": _headline_hazard_ratios(name, outputs, t),
        "survival_metrics": _rows(metrics),
        "decision_curves": [
            {k: d[k] for k in DECISION_KEYS} for d in decision_summaries(t["decision_curves"], name)
        ],
        "added_utility": _added_utility(ctx, t["decision_curves"], name),
        "utility_subgroups": _utility_subgroups(t["decision_subgroups"], name),
        "subgroups": _rows(subgroup.sort_values(["output", "metric", "attribute"], kind="stable")),
        "robustness": _robustness_summary(t["robustness"], name, judged_max),
        "saliency": _saliency_summary(t["saliency"], name),
        "checks": _rows(t["verdicts"][t["verdicts"]["model"] == name]),
        "limitations": limitations(ctx, t, m),
    }
    paired = _paired_summary(t.get("paired"), name)
    if paired:  # (a card without a paired study keeps the keys it always had)
        card["paired"] = paired
    slices = _slices_summary(ctx.get("slices"), name)
    if slices is not None:  # (likewise a card of a run without slice discovery)
        card["slices"] = slices
    return card


SLICE_KEYS = ("output", "loss", "slice", "unit", "n_confirm", "effect", "ci_low", "ci_high")
SLICE_KEYS += ("standing", "counted")


def _slices_summary(view: dict | None, name: str) -> dict | None:
    """The slices searched for this model and the confirmed ones (from the page's view)."""
    blocks = [b for b in (view or {}).get("blocks", []) if b["model"] == name]
    if not blocks:
        return None
    return {
        "tested": sum(len(b["confirmed"]) + len(b["tested"]) for b in blocks),
        "confirmed": [{k: r[k] for k in SLICE_KEYS} for b in blocks for r in b["confirmed"]],
    }


PAIRED_KEYS = ("output", "comparison", "n_pairs", "unit", "mean_shift", "mean_shift_low")
PAIRED_KEYS += ("mean_shift_high", "loa_low", "loa_high", "icc", "equivalence", "tolerance")


def _paired_summary(paired: pd.DataFrame | None, name: str) -> list[dict]:
    """The conditions tested on real repeated photos and their outcome (overall rows)."""
    if paired is None or not len(paired):
        return []
    rows = paired[(paired["model"] == name) & (paired["attribute"] == "all")]
    return [{k: r[k] for k in PAIRED_KEYS} for r in _rows(rows)]


def _headline_hazard_ratios(name: str, outputs: list, t: dict) -> list[dict]:
    """The headline hazard ratio of each output under each adjustment, with n and deaths."""
    terms = t["survival_terms"][t["survival_terms"]["model"] == name]
    models = t["survival_models"][t["survival_models"]["model"] == name]
    hrs = []
    for output in outputs:
        for prefix, term in HEADLINE_TERMS.get(output, []):
            sel = terms[
                terms["model_id"].str.startswith(prefix + "__")
                & ~terms["model_id"].str.contains("__strata_")
                & (terms["term"] == term)
            ]
            for r in _rows(sel):
                fit = models[models["model_id"] == r["model_id"]]
                r["adjustment"] = r["model_id"].split("__", 1)[1]
                r["n"] = int(fit["n"].iloc[0]) if len(fit) else None
                r["events"] = int(fit["events"].iloc[0]) if len(fit) else None
                hrs.append(r)
    return hrs


def _robustness_summary(rob: pd.DataFrame, name: str, judged_max: int) -> dict | None:
    """How many judged perturbation levels passed, and the five worst."""
    rob = rob[rob["model"] == name]
    judged = rob[(rob["attribute"] == "all") & (rob["severity"] <= judged_max)]
    if not len(judged):
        return None
    worst = judged.sort_values(["frac_over_tolerance", "mean_abs_shift"], ascending=False)
    return {
        "judged": int(judged["passed"].notna().sum()),
        "failed": int((judged["passed"] == False).sum()),  # noqa: E712
        "judged_max": judged_max,
        "worst": _rows(worst.head(5)),
    }


def _added_utility(ctx: dict, curves: pd.DataFrame, name: str) -> list[dict]:
    """The nested-model steps that add this model's output to the clinical model: where the
    gain in net benefit over the step before is above 0 with 95% confidence."""
    label = (ctx.get("incremental") or {}).get("label")
    if not label:
        return []
    return [
        {
            "when": d["when"],
            "step": s["label"],
            "added": s["added"],
            "n": d["n"],
            "events": d["events"],
            "gain": s["gain"],
        }
        for d in nested_summaries(curves, label)
        for s in d["steps"]
        if s["added_by"] == name
    ]


def _utility_subgroups(rows: pd.DataFrame, name: str) -> list[dict]:
    """Per score and horizon: where the score is useful overall, and the groups harmed
    there (:mod:`audit.decisions.subgroups`)."""
    return [
        {
            "score": d["score"],
            "when": d["when"],
            "overall_useful": d["overall_useful"],
            "harmed": "; ".join(
                f"{x['attribute']} = {x['group_name']} at {x['harmed_where_useful']}"
                for x in d["flagged"]
            ),
            "judged": sum(not x["too_small"] for x in d["groups"]),
            "too_small": sum(x["too_small"] for x in d["groups"]),
        }
        for d in subgroup_summaries(rows[rows["model"] == name])
    ]


def _saliency_summary(shares: pd.DataFrame, name: str) -> list[dict]:
    """Per output and method, the regions the attribution favours most for their size
    (ranked by enrichment: share over the region's share of the pixels)."""
    out = []
    sel = shares[(shares["model"] == name) & (shares["attribute"] == "all")]
    for (output, method), g in sel.groupby(["output", "method"], sort=False):
        key = "enrichment" if "enrichment" in g and g["enrichment"].notna().any() else "share"
        g = g.sort_values(key, ascending=False)
        out.append(
            {
                "output": output,
                "method": method,
                "n": int(g["n"].iloc[0]),
                "top": [
                    {
                        "region": r["region"],
                        "share": r["share"],
                        "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"],
                        "enrichment": r.get("enrichment"),
                        "enrichment_low": r.get("enrichment_low"),
                        "enrichment_high": r.get("enrichment_high"),
                    }
                    for r in _rows(g.head(3))
                ],
            }
        )
    return out


def _evaluation_data(ctx: dict, t: dict[str, pd.DataFrame]) -> dict:
    run = ctx["run"]
    rows = t["cohort_rows"]
    included = rows[rows["included"]]
    sites = sorted(str(s) for s in included["site"].dropna().unique()) if "site" in included else []
    return {
        "cohort": run["cohort_name"],
        "cohort_sha256": run["cohort_sha256"],
        "synthetic": bool(run["synthetic"]),
        "photos": ctx["n_included"],
        "manifest_rows": ctx["n_rows"],
        "subjects": int(included["subject_id"].nunique()),
        "outcomes": ctx["outcomes"],
        "age": ctx["age"],
        "sites": sites,
        "composition": ctx["composition"],
        "run_date": run["started_at"],
    }


def limitations(ctx: dict, t: dict[str, pd.DataFrame], model: dict) -> list[str]:
    """What a reader must know before relying on this model's results, from this run."""
    name, run, config = model["name"], ctx["run"], ctx["config"]
    declared = (model.get("card") or {}).get("limitations")
    out: list[str] = []
    if isinstance(declared, str):
        out.append(f"Declared by the developer: {declared}")
    elif isinstance(declared, list):
        out.extend(f"Declared by the developer: {d}" for d in declared)
    if run["synthetic"]:
        out.append(
            "Evaluated on synthetic data only (the demo world): these numbers say "
            "nothing about performance on real patients."
        )
    if not (model.get("card") or {}).get("training_data"):
        out.append(
            "The model spec declares no training data, so overlap between the training "
            "and evaluation populations cannot be judged."
        )
    if model.get("kind") == "predictions":
        out.append(
            "Predictions were supplied in the cohort table: the model itself was not run "
            "here, so its inputs and robustness could not be checked."
        )
    out.extend(_finding_limitations(name, t, config))
    out.extend(_evidence_limitations(name, ctx, t, model))
    return out


def _finding_limitations(name: str, t: dict[str, pd.DataFrame], config: dict) -> list[str]:
    """What this run found against the model: failed or inconclusive checks, flagged
    and harmed groups, groups too small to judge, under-represented groups."""
    out: list[str] = []
    for r in _rows(
        t["verdicts"][
            (t["verdicts"]["model"] == name)
            & (t["verdicts"]["status"].isin(["fail", "inconclusive"]))
        ]
    ):
        what = "Failed" if r["status"] == "fail" else "Inconclusive"
        out.append(f"{what} check {r['check_name']}: {r['details']}")
    fair = t["fairness"][t["fairness"]["model"] == name]
    for r in _rows(fair[fair["status"] == "flagged"]):
        out.append(
            f"{r['output']} {r['metric']} differs in {r['attribute']} = {r['group_name']}: "
            f"{r['value']:.3g} against {sig3(r['value'] - r['diff_to_overall'])} overall "
            f"(difference band {r['diff_ci_low']:.3g} to {r['diff_ci_high']:.3g})."
        )
    for d in subgroup_summaries(t["decision_subgroups"][t["decision_subgroups"]["model"] == name]):
        for x in d["flagged"]:
            out.append(
                f"Acting on the {d['score']} (death within {d['when']}) harms "
                f"{x['attribute']} = {x['group_name']} at thresholds "
                f"{x['harmed_where_useful']}, where it helps the cohort as a whole: in "
                "that group it does worse than treating everyone or no one "
                "(simultaneous 95% bands)."
            )
    small = fair[(fair["status"] == "too_small") & ~fair["attribute"].str.contains(" x ")]
    if len(small):
        groups = sorted({f"{a} = {g}" for a, g in zip(small["attribute"], small["group_name"])})
        min_n = (config.get("fairness") or {}).get("min_group_size", 20)
        out.append(
            f"Too few subjects (under {min_n}) to judge performance in: "
            f"{', '.join(groups[:12])}{' and more' if len(groups) > 12 else ''}."
        )
    rep = t["representativeness"]
    under = rep[(rep["ratio"].notna()) & (rep["ratio"] < 0.5)]
    for r in _rows(under):
        out.append(
            f"{r['attribute']} = {r['group_name']} is under-represented: "
            f"{100 * r['share']:.1f}% of subjects against {100 * r['intended_share']:.1f}% "
            "of the intended-use population."
        )
    if rep.empty:
        out.append(
            "No intended-use population was configured, so representativeness was not tested."
        )
    return out


def _evidence_limitations(
    name: str, ctx: dict, t: dict[str, pd.DataFrame], model: dict
) -> list[str]:
    """Where the evidence itself is thin: proportional hazards, deaths, sites,
    robustness not run, saliency that fails its sanity check, drift."""
    out: list[str] = []
    ph = t["survival_models"][
        (t["survival_models"]["model"] == name)
        & (t["survival_models"]["ph_test_min_p"] < 0.05)
        & ~t["survival_models"]["model_id"].str.contains("__strata_")
    ]
    if len(ph):
        out.append(
            "The proportional-hazards assumption looks violated (Schoenfeld p < 0.05) in "
            f"{', '.join(ph['model_id'].tolist()[:6])}; the stratified fits in the survival "
            "section are the remedy."
        )
    outcomes = ctx["outcomes"]
    if outcomes is None:
        out.append("The cohort has no outcomes (time, event): prognostic value was not evaluated.")
    elif outcomes["events"] < MIN_VALIDATION_EVENTS:
        out.append(
            f"Only {outcomes['events']} deaths: external validation needs about "
            f"{MIN_VALIDATION_EVENTS} events or more for precise estimates (Collins et al. "
            "2016), so the survival estimates are imprecise."
        )
    excluded = ctx["n_rows"] - ctx["n_included"]
    if excluded:
        most = most_excluded(t["cohort_rows"])
        out.append(
            f"{excluded} of {ctx['n_rows']} manifest rows ({excluded / ctx['n_rows']:.0%}) were "
            "excluded by the data checks before any model ran (unreadable photos, no single "
            "face found, missing or impossible values); the results describe the rest"
            + (f". The largest shares excluded: {most}" if most else "")
            + "."
        )
    if len(ctx["evaluation_sites"]) <= 1:
        out.append("One site only: transportability to other sites was not assessed.")
    rob = t["robustness"][t["robustness"]["model"] == name]
    if rob.empty and model.get("kind") != "predictions":
        out.append("Robustness to image perturbations was not assessed in this run.")
    sanity = t["saliency_checks"]
    if len(sanity):
        bad = sanity[
            (sanity["check_name"] == "randomized_weights_spearman")
            & (sanity["model"] == name)
            & (sanity["passed"] == False)  # noqa: E712  (elementwise: None is not False)
        ]
        for r in _rows(bad):
            out.append(
                f"Its {r['method']} saliency map barely changes when the weights are "
                f"randomised (Spearman {r['value']:.2f}): that method shows the image "
                "more than the model; read its maps with caution."
            )
    drift = t["drift"]
    moved = drift[drift["drifted"] & (drift["model"].isna() | (drift["model"] == name))]
    if len(moved):
        out.append(
            f"{len(moved)} feature(s) drifted against reference run "
            f"{drift['reference'].iloc[0]}: {', '.join(moved['feature'].astype(str).tolist()[:8])}."
        )
    return out
