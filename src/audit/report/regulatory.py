"""Machine-readable regulatory outputs beside each run and each combined audit.

- **CHAI applied model card** (``chai/<model>.json``): the Coalition for Health AI's Applied
  Model Card (v0.2; reused by the HL7 AI Transparency on FHIR guide), one per model, as JSON
  with the elements of CHAI's published XML schema (``schemas/`` holds our JSON rendering of
  it; every card is validated against it before it is written). What the audit measured
  fills the key metrics (each result's value, CI, n and population as ``ValueJson``), the
  warnings (the run's limitations, flagged subgroups) and the testing data; what only the
  developer can say (release, funding, risk level) is taken from the model spec's ``card:``
  where declared, else says plainly that it was not declared.
- **EU AI Act Art. 15(3) accuracy sheet** (``eu_ai_act_accuracy.json``): the levels of
  accuracy and the accuracy metrics to declare in the instructions for use, each with its
  95% CI, the method of the CI, the population it holds for (cohort or sites, subjects,
  deaths, composition), the subgroups for which it was found not to hold, and the verdict's
  threshold where one judges it.
- **TRIPOD+AI map of the pooled evaluation** (a combined audit's ``tripod_ai.json``): the
  items a multi-site evaluation answers (centres, heterogeneity across clusters, pooled
  performance with CIs), and where.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

import pandas as pd

from audit.pipeline.combine import POOLED, judged_quantities
from audit.report.records import records
from audit.report.tripod import ANSWERED, ITEMS, NOT_ANSWERED, NOT_APPLICABLE, PARTLY, TEAM

CHAI_SCHEMA_FILE = Path(__file__).parent / "schemas" / "chai_applied_model_card_v0.2.schema.json"
CHAI_VERSION = "v0.2"
NOT_DECLARED = "Not declared in the model spec (faceage-audit reports only what it measured)."
EU_ARTICLE = "Regulation (EU) 2024/1689 (AI Act), Article 15(3)"
METRIC_TEXT = {
    "mae": "mean absolute error of FaceAge against chronological age (years)",
    "mean_error": "mean signed error of FaceAge against chronological age (years)",
    "pearson_r": "Pearson correlation of FaceAge with chronological age",
    "within_5y": "share of photos with FaceAge within 5 years of chronological age",
    "c_index": "Harrell's concordance of the score with survival",
}


@cache
def chai_schema() -> dict:
    return json.loads(CHAI_SCHEMA_FILE.read_text())


def chai_problems(doc: dict) -> list[str]:
    """Where ``doc`` breaks the CHAI applied model card schema (empty: valid)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(chai_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(card)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def safe_name(name: str) -> str:
    """A model name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def _num(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def _value_json(**kw) -> str:
    return json.dumps(
        {k: v for k, v in kw.items() if v is not None},
        sort_keys=True,
        default=lambda o: o.item() if hasattr(o, "item") else str(o),
    )


def _key_metric(goal, results, interpretation, test_type, data, validation) -> dict:
    if not results:
        results = [{"Label": "not measured", "ValueJson": _value_json(note="not measured")}]
    return {
        "MetricGoal": goal,
        "Results": {"MetricResult": results},
        "Interpretation": interpretation,
        "TestType": test_type,
        "TestingDataDescription": data,
        "ValidationProcessAndJustification": validation,
    }


def _card(
    *, name, declared, kind, outputs, summary, limitations, biases, efficacy, fairness, safety,
    test_type, data, validation, maintenance,
) -> dict:  # fmt: skip
    """A CHAI applied model card from what an audit knows and what the spec declares."""

    def d(key):
        value = declared.get(key)
        if isinstance(value, list):
            value = "; ".join(map(str, value))
        return str(value) if value not in (None, "") else NOT_DECLARED

    refs = declared.get("references")
    return {
        "BasicInfo": {
            "ModelName": name,
            "ModelDeveloper": d("developers"),
            "DeveloperContact": d("contact"),
        },
        "ReleaseInfo": {
            "ReleaseStage": d("release_stage"),
            "ReleaseDate": d("release_date"),
            "ReleaseVersion": d("version"),
            "GlobalAvailability": d("availability"),
        },
        "ModelSummary": {
            "Summary": summary,
            "Keywords": {"Keyword": ["face photograph", *outputs, "external evaluation"]},
        },
        "UsesAndDirections": {
            "IntendedUseAndWorkflow": d("intended_use"),
            "PrimaryIntendedUsers": d("users"),
            "HowToUse": d("how_to_use"),
            "TargetedPatientPopulation": d("population"),
            "CautionedOutOfScopeSettings": d("out_of_scope"),
        },
        "Warnings": {
            "KnownRisksAndLimitations": "\n".join(f"- {x}" for x in limitations)
            or "None found by this audit.",
            "KnownBiasesOrEthicalConsiderations": biases,
            "ClinicalRiskLevel": d("clinical_risk_level"),
        },
        "TrustIngredients": {
            "AISystemFacts": {
                "OutcomesAndOutputs": ", ".join(
                    {
                        "faceage": "FaceAge (biological age, years)",
                        "risk": "mortality risk score",
                    }.get(o, o)
                    for o in outputs
                ),
                "ModelType": kind,
                "InputDataSource": "face photographs (aligned crops) and the cohort's "
                "clinical table (age, sex, race, outcomes)",
                "OutputAndInputDataTypes": "input: an RGB face photograph; output: "
                + ", ".join(outputs),
                "DevelopmentDataCharacterization": d("training_data"),
                "BiasMitigationApproaches": d("bias_mitigation"),
                "OngoingMaintenance": maintenance,
            },
            "TransparencyInformation": {
                "FundingSource": d("funding"),
                "StakeholdersConsulted": d("stakeholders"),
            },
        },
        "KeyMetrics": {
            "UsefulnessUsabilityEfficacy": _key_metric(
                "Accuracy of FaceAge against chronological age; discrimination and the "
                "adjusted hazard ratio of each output for survival.",
                efficacy,
                "Each result is the estimate with its 95% CI and the population it "
                "holds for (ValueJson).",
                test_type,
                data,
                validation,
            ),
            "FairnessEquity": _key_metric(
                "No subgroup served worse beyond the configured tolerance.",
                fairness,
                "Subgroup results with their difference to the overall or reference group.",
                test_type,
                data,
                validation,
            ),
            "SafetyReliability": _key_metric(
                "Calibration, robustness to image perturbations and consistency across sites.",
                safety,
                "Shares of photos moved beyond tolerance; calibration; site outliers.",
                test_type,
                data,
                validation,
            ),
        },  # fmt: skip
        "Resources": {
            "EvaluationReferences": "faceage-audit report and verdict.json of this run",
            "PeerReviewedPublications": (
                "; ".join(map(str, refs)) if isinstance(refs, list) else str(refs)
            )
            if refs
            else NOT_DECLARED,
            "PatientConsentOrDisclosure": d("consent"),
        },
        "Bibliography": "",
    }


# ----------------------------------------------------------------------- an audit run


def _population(evaluation: dict) -> dict:
    comp = evaluation.get("composition") or {}
    return {
        "cohort": evaluation.get("cohort"),
        "subjects": evaluation.get("subjects"),
        "photos": evaluation.get("photos"),
        "synthetic": evaluation.get("synthetic"),
        "composition": comp if isinstance(comp, (dict, list)) else None,
    }


def run_outputs(cards: list[dict], run: dict, models: list[dict]) -> dict[str, dict]:
    """A run's regulatory files by name: ``chai/<model>.json`` and
    ``eu_ai_act_accuracy.json`` (each CHAI card checked against the schema)."""
    declared = {m["name"]: m.get("card") or {} for m in models}
    files, sheet = {}, []
    for c in cards:
        ev = c["evaluation"]
        data = f"{ev['cohort']}: {ev['subjects']} subjects, {ev['photos']} photos" + (
            " (synthetic: the demo world)" if ev["synthetic"] else ""
        )
        efficacy = [
            {
                "Label": f"{r['output']} {r['metric']}",
                "ValueJson": _value_json(
                    value=_num(r["value"]),
                    ci_low=_num(r["ci_low"]),
                    ci_high=_num(r["ci_high"]),
                    n=r["n"],
                    ci="95% subject bootstrap",
                ),
            }  # fmt: skip
            for r in c["metrics"]
        ] + [
            {
                "Label": f"HR {r['term']} ({r['adjustment']})",
                "ValueJson": _value_json(
                    value=_num(r["hr"]),
                    ci_low=_num(r["hr_low"]),
                    ci_high=_num(r["hr_high"]),
                    n=r["n"],
                    deaths=r["events"],
                    ci="95% Wald",
                ),
            }  # fmt: skip
            for r in c["hazard_ratios"]
        ]
        flagged = [r for r in c["subgroups"] if r["status"] == "flagged"]
        fairness = [
            {
                "Label": f"{r['output']} {r['metric']} {r['attribute']} = {r['group_name']}",
                "ValueJson": _value_json(
                    value=_num(r["value"]),
                    ci_low=_num(r["ci_low"]),
                    ci_high=_num(r["ci_high"]),
                    difference_to_overall=_num(r["diff_to_overall"]),
                    status=r["status"],
                    n=r["n"],
                ),
            }  # fmt: skip
            for r in c["subgroups"]
        ]
        safety = [
            {
                "Label": f"{r['output']} {r['perturbation']} severity {r['severity']}",
                "ValueJson": _value_json(
                    share_over_tolerance=_num(r["frac_over_tolerance"]),
                    mean_abs_shift=_num(r["mean_abs_shift"]),
                    n=r["n"],
                ),
            }  # fmt: skip
            for r in ((c["robustness"] or {}).get("worst") or [])
        ] + [
            {
                "Label": f"{r['model_id']} {r['metric']}"
                + (f" at {r['horizon']:g} years" if _num(r["horizon"]) is not None else ""),
                "ValueJson": _value_json(
                    value=_num(r["value"]), ci_low=_num(r["ci_low"]), ci_high=_num(r["ci_high"])
                ),
            }
            for r in c["survival_metrics"]
        ]
        card = _card(
            name=c["name"],
            declared=declared.get(c["name"], {}),
            kind=f"{c['kind']}" + (f" ({c['arch']})" if c.get("arch") else ""),
            outputs=c["outputs"],
            summary=f"{c['name']}: {', '.join(c['outputs'])} from a face photograph, audited by "
            f"faceage-audit on {ev['cohort']} (run {run['run_id']}, verdict {run['verdict']}).",
            limitations=c["limitations"],
            biases=(
                "Subgroups served worse beyond tolerance: "
                + "; ".join(f"{r['metric']} {r['attribute']} = {r['group_name']}" for r in flagged)
                if flagged
                else "No subgroup was flagged by this audit's fairness metrics."
            ),
            efficacy=efficacy,
            fairness=fairness,
            safety=safety,
            test_type="External evaluation on one cohort (faceage-audit run)",
            data=data,
            validation="Subject-bootstrap CIs; Cox models checked for convergence and "
            "proportional hazards; the verdict's thresholds in the run's config.",
            maintenance="Monitored with faceage-audit: drift against a reference run and "
            "performance estimated before outcomes arrive.",
        )
        problems = chai_problems(card)
        if problems:  # our own output breaking the schema is a bug, not a data failure
            raise ValueError(f"CHAI card of {c['name']} breaks its schema: {problems[:3]}")
        files[f"chai/{safe_name(c['name'])}.json"] = card
        sheet.append(
            {
                "model": c["name"],
                "population": _population(ev),
                "metrics": [
                    {
                        "output": r["output"],
                        "metric": r["metric"],
                        "description": METRIC_TEXT.get(r["metric"], r["metric"]),
                        "value": _num(r["value"]),
                        "ci_low": _num(r["ci_low"]),
                        "ci_high": _num(r["ci_high"]),
                        "ci": "95%, subject bootstrap (percentile)",
                        "n": r["n"],
                        **_judged(c["checks"], r["output"], r["metric"]),
                        "does_not_hold_for": [
                            f"{s['attribute']} = {s['group_name']} ({s['metric']})"
                            for s in flagged
                            if s["output"] == r["output"]
                        ],
                    }
                    for r in c["metrics"]
                ],
            }
        )
    files["eu_ai_act_accuracy.json"] = {
        "regulation": EU_ARTICLE,
        "run_id": run["run_id"],
        "verdict": run["verdict"],
        "models": sheet,
    }
    return files


CHECK_OF = {
    ("faceage", "mae"): "faceage_mae",
    ("faceage", "mean_error"): "faceage_abs_mean_error",
    ("faceage", "pearson_r"): "faceage_pearson_r",
    ("risk", "c_index"): "risk_c_index",
}


def _judged(checks: list[dict], output: str, metric: str) -> dict:
    name = CHECK_OF.get((output, metric))
    row = next((c for c in checks if c["check_name"] == name), None)
    if row is None:
        return {}
    return {"threshold": _num(row["threshold"]), "check": name, "result": row["status"]}


# ----------------------------------------------------------------- a combined audit


def combined_outputs(
    run: dict, models: list[dict], tables: dict, tripod: list[dict] | None = None
) -> dict[str, dict]:
    """A combined audit's regulatory files: a CHAI card per model from the pooled
    estimates, the Art. 15(3) sheet of pooled metrics, and the pooled TRIPOD+AI map
    (``tripod``: the map the page already built, else built here)."""
    pooled, sites = tables["combined_pooled"], tables["combined_sites"]
    verdicts = tables["verdicts"]
    used = sites[sites["status"] == POOLED]
    population = {
        "sites": [
            {"site": r["site"], "subjects": r["subjects"], "synthetic": r["synthetic"]}
            for r in records(used)
        ],
        "subjects": int(used["subjects"].fillna(0).sum()),
    }
    data = (
        f"{len(used)} sites ({', '.join(used['site'])}), {population['subjects']} subjects; "
        "each audited its own cohort and sent only signed aggregates"
        + (" (synthetic: the demo world)" if used["synthetic"].fillna(False).any() else "")
    )
    files, sheet = {}, []
    ok = pooled[pooled["status"] == POOLED]
    for m in models:
        name = m["name"]
        mine = ok[(ok["model"] == name) & (ok["attribute"] == "all")]
        checks = records(verdicts[verdicts["model"] == name])
        overall = mine[
            mine["output"].isin(["faceage", "risk"]) & ~mine["quantity"].str.contains(":")
        ]
        hrs = [
            r
            for output, quantity in judged_quantities(pooled, name)
            if quantity.startswith("log_hr:")
            for r in records(mine[(mine["output"] == output) & (mine["quantity"] == quantity)])
        ]

        def pooled_json(r, transform=lambda x: x):
            return _value_json(
                value=_num(transform(r["estimate"])), ci_low=_num(transform(r["ci_low"])),
                ci_high=_num(transform(r["ci_high"])),
                prediction_low=_num(transform(r["pred_low"])),
                prediction_high=_num(transform(r["pred_high"])), sites=int(r["k"]), n=r["n"],
                deaths=r["events"], i2=_num(r["i2"]), ci="95% random effects, Hartung-Knapp",
            )  # fmt: skip

        efficacy = [
            {"Label": f"{r['output']} {r['quantity']} (pooled)", "ValueJson": pooled_json(r)}
            for r in records(overall)
        ] + [
            {"Label": f"HR {r['quantity'][7:]} ({r['output']}, pooled)",
             "ValueJson": pooled_json(r, lambda x: None if x is None else math.exp(x))}
            for r in hrs
        ]  # fmt: skip
        diffs = pooled[
            (pooled["model"] == name) & pooled["quantity"].str.startswith("difference:")
            & pooled["status"].isin(["ok", "flagged"])
        ]  # fmt: skip
        flagged = diffs[diffs["status"] == "flagged"]
        fairness = [
            {
                "Label": f"{r['output']} {r['quantity'][11:]} {r['attribute']} = "
                f"{r['group_name']} vs {r['reference_group']} (pooled difference)",
                "ValueJson": _value_json(
                    value=_num(r["estimate"]),
                    band_low=_num(r["band_low"]),
                    band_high=_num(r["band_high"]),
                    i2=_num(r["i2"]),
                    sites=int(r["k"]),
                    status=r["status"],
                ),
            }  # fmt: skip
            for r in records(diffs)
        ]
        consistency = next((c for c in checks if c["check_name"] == "site_consistency"), None)
        safety = (
            [
                {
                    "Label": "sites outside what the others predict (judged quantities)",
                    "ValueJson": _value_json(
                        value=_num(consistency["value"]),
                        result=consistency["status"],
                        details=consistency["details"],
                    ),
                }  # fmt: skip
            ]
            if consistency
            else []
        )
        card = _card(
            name=name, declared={}, kind=str(m.get("kind")), outputs=m.get("outputs") or [],
            summary=f"{name}: pooled across {len(used)} sites by faceage-audit's combined audit "
            f"(run {run['run_id']}, verdict {run['verdict']}).",
            limitations=[
                f"{c['check_name']}: {c['details']}" for c in checks
                if c["status"] in ("fail", "inconclusive")
            ],
            biases=(
                "Pooled subgroup differences beyond tolerance: "
                + "; ".join(f"{r.attribute} = {r.group_name}" for r in flagged.itertuples())
                if len(flagged) else "No pooled subgroup difference lies beyond tolerance."
            ),
            efficacy=efficacy, fairness=fairness, safety=safety,
            test_type="Multi-site external evaluation: random-effects meta-analysis of each "
            "site's audit", data=data,
            validation="Each site's bundle verified (Ed25519); random effects with REML or "
            "DerSimonian-Laird tau^2 and Hartung-Knapp CIs; studentized deleted residuals.",
            maintenance="Re-run the combined audit as sites send new bundles.",
        )  # fmt: skip
        problems = chai_problems(card)
        if problems:
            raise ValueError(f"CHAI card of {name} breaks its schema: {problems[:3]}")
        files[f"chai/{safe_name(name)}.json"] = card
        sheet.append(
            {
                "model": name,
                "population": population,
                "metrics": [
                    {
                        "output": r["output"],
                        "metric": r["quantity"],
                        "description": METRIC_TEXT.get(r["quantity"], r["quantity"]),
                        "value": _num(r["estimate"]),
                        "ci_low": _num(r["ci_low"]),
                        "ci_high": _num(r["ci_high"]),
                        "ci": "95%, random effects with Hartung-Knapp",
                        "prediction_interval": [_num(r["pred_low"]), _num(r["pred_high"])],
                        "i2": _num(r["i2"]),
                        "sites": int(r["k"]),
                        "n": r["n"],
                        **_judged(checks, r["output"], r["quantity"]),
                        "does_not_hold_for": [
                            f"{d.attribute} = {d.group_name} ({d.quantity[11:]})"
                            for d in flagged.itertuples()
                            if d.output == r["output"]
                        ],
                        "sites_that_stand_out": r["flagged_sites"],
                    }
                    for r in records(overall)
                ],
            }
        )
    files["eu_ai_act_accuracy.json"] = {
        "regulation": EU_ARTICLE,
        "run_id": run["run_id"],
        "verdict": run["verdict"],
        "models": sheet,
    }
    files["tripod_ai.json"] = {
        "run_id": run["run_id"],
        "guideline": "TRIPOD+AI (Collins et al., BMJ 2024;385:e078378)",
        "study_type": "multi-site external evaluation (pooled)",
        "items": tripod if tripod is not None else pooled_tripod(run, used, pooled, verdicts),
    }
    return files


SITE_MAPS = (
    "Each site's own TRIPOD+AI map (tripod_ai.json of its run) answers this for its cohort; "
    "the combined audit holds only the sites' aggregates."
)


def pooled_tripod(run: dict, used: pd.DataFrame, pooled: pd.DataFrame, verdicts) -> list[dict]:
    """The TRIPOD+AI items as a pooled, multi-site evaluation answers them."""
    k = len(used)
    here = lambda anchor, label: [{"label": label, "href": f"index.html#{anchor}"}]  # noqa: E731
    n_pooled = int((pooled["status"] == POOLED).sum())
    answers = {
        "1": (PARTLY, here("top", "page title"), f"Combined audit of {k} sites; the study "
              "team's report needs its own title."),
        "4": (PARTLY, here("verdict", "verdict"), "Objective: to evaluate the models across "
              "sites by pooling each site's audit; the team states the study's own aims."),
        "5a": (ANSWERED, here("sites", "sites"), f"{k} sites, each a faceage-audit run on its "
               "own cohort, named by its label, with its composition."),
        "6a": (ANSWERED, here("sites", "sites"),
               f"{k} centre{'' if k == 1 else 's'}: {', '.join(used['site'])}."),
        "10": (PARTLY, here("judged", "judged quantities"), "Subjects and deaths behind every "
               "pooled estimate are shown; the sample size rationale is the team's."),
        "12a": (ANSWERED, here("method", "method"), "Each site evaluated the model on all its "
                "included subjects; only aggregates left the sites; no partitioning."),
        "12d": (ANSWERED, here("method", "method"), "Random-effects meta-analysis across sites: "
                "tau^2, I^2, prediction interval for a new site, deleted residuals."),
        "12e": (ANSWERED, here("judged", "forest plots"), "Pooled accuracy, discrimination, "
                "hazard ratios and subgroup differences, with forest plots."),
        "14": (ANSWERED, here("differences", "subgroup differences"), "Subgroup differences "
               "pooled across sites with Bonferroni bands against tolerances."),
        "18f": (ANSWERED, here("trail", "audit trail"), f"faceage-audit {run['code_version']}."),
        "20b": (ANSWERED, here("sites", "composition"), "Composition by sex, race and age band "
                "for each site (small counts withheld at the site)."),
        "21": (ANSWERED, here("pooled", "pooled estimates"), "Sites, subjects and deaths in "
               f"each of the {n_pooled} pooled analyses."),
        "23a": (ANSWERED, here("pooled", "pooled estimates"), "Pooled estimates with 95% CIs, "
                "and pooled subgroup differences."),
        "23b": (ANSWERED, here("judged", "judged quantities"), "Heterogeneity across sites "
                "(I^2, tau^2, prediction interval) and the sites that stand out."),
        "26": (PARTLY, here("verdict", "verdict"), "The failed checks and the sites that stand "
               "out are shown; the team weighs them."),
    }  # fmt: skip
    team = {"17", "18a", "18b", "18c", "18d", "19"}
    rows = []
    for item, section, topic, text in ITEMS:
        if item in answers:
            status, where, note = answers[item]
        elif item in team:
            status, where, note = NOT_ANSWERED, [], TEAM
        elif item in ("12f", "24"):
            status, where, note = NOT_APPLICABLE, [], "No model updating in a combined audit."
        else:
            status, where, note = NOT_ANSWERED, [], SITE_MAPS
        rows.append(
            {"item": item, "section": section, "topic": topic, "text": text, "status": status,
             "where": where, "note": note}
        )  # fmt: skip
    return rows
