"""The TRIPOD+AI checklist map of a run: where the report answers each item, and why not.

TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) is the reporting guideline for studies
that develop or evaluate a clinical prediction model, regression or machine learning: 27
items, several with parts (1 to 27c). An audit run is an *evaluation* study of an existing
model, so each item is judged as it applies to evaluation. Topics below are short
paraphrases; the BMJ paper holds the wording.

Each item gets a status, decided from what this run actually holds:

- ``answered``: the report (or the model card, the manifest, the CSV exports) answers it,
  with a link to where;
- ``partly``: the report gives what an audit can know, and says what the study team must add;
- ``not answered``: only the study team can answer it (ethics, funding, ...), or this run
  lacks the data (no outcomes, no reference cohort): the note says which;
- ``not applicable``: the item does not apply to an evaluation like this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.decisions.curves import years

ANSWERED, PARTLY, NOT_ANSWERED, NOT_APPLICABLE = (
    "answered",
    "partly",
    "not answered",
    "not applicable",
)

ITEMS = [
    (
        "1",
        "Title",
        "Title",
        "identifies a development or evaluation study, its target population and outcome",
    ),
    ("2", "Abstract", "Abstract", "structured summary (TRIPOD+AI for Abstracts)"),
    ("3a", "Introduction", "Background", "healthcare context and rationale; existing models"),
    (
        "3b",
        "Introduction",
        "Background",
        "target population, intended purpose in the care pathway, intended users",
    ),
    (
        "3c",
        "Introduction",
        "Background",
        "known health inequalities between sociodemographic groups",
    ),
    ("4", "Introduction", "Objectives", "study objectives, development and/or evaluation"),
    ("5a", "Methods", "Data", "data sources, rationale and representativeness"),
    ("5b", "Methods", "Data", "dates of accrual and end of follow-up"),
    ("6a", "Methods", "Participants", "study setting; number and location of centres"),
    ("6b", "Methods", "Participants", "eligibility criteria"),
    ("6c", "Methods", "Participants", "treatments received and how they were handled"),
    ("7", "Methods", "Data preparation", "pre-processing and quality checks, alike across groups?"),
    ("8a", "Methods", "Outcome", "outcome definition, time horizon, how and when assessed"),
    ("8b", "Methods", "Outcome", "qualifications of outcome assessors when judgement is needed"),
    ("8c", "Methods", "Outcome", "blinding of outcome assessment"),
    ("9a", "Methods", "Predictors", "choice of initial predictors and any pre-selection"),
    ("9b", "Methods", "Predictors", "definition of predictors, how and when measured"),
    (
        "9c",
        "Methods",
        "Predictors",
        "qualifications of predictor assessors when judgement is needed",
    ),
    ("10", "Methods", "Sample size", "how the study size was arrived at and why it suffices"),
    ("11", "Methods", "Missing data", "how missing data were handled; reasons for omitting data"),
    ("12a", "Methods", "Analytical methods", "how the data were used; partitioning"),
    ("12b", "Methods", "Analytical methods", "handling of predictors (functional form, scaling)"),
    (
        "12c",
        "Methods",
        "Analytical methods",
        "type of model, building steps, tuning, internal validation",
    ),
    ("12d", "Methods", "Analytical methods", "heterogeneity across clusters (e.g. hospitals)"),
    (
        "12e",
        "Methods",
        "Analytical methods",
        "performance measures and plots, and model comparisons",
    ),
    (
        "12f",
        "Methods",
        "Analytical methods",
        "model updating (e.g. recalibration) arising from the evaluation",
    ),
    ("12g", "Methods", "Analytical methods", "how the model's predictions were calculated"),
    ("13", "Methods", "Class imbalance", "class-imbalance methods and recalibration"),
    ("14", "Methods", "Fairness", "approaches used to address fairness, and why"),
    ("15", "Methods", "Model output", "the model's output and any classification thresholds"),
    (
        "16",
        "Methods",
        "Training versus evaluation",
        "differences between development and evaluation data",
    ),
    ("17", "Methods", "Ethical approval", "ethics committee and consent"),
    ("18a", "Open science", "Funding", "funding and the funders' role"),
    ("18b", "Open science", "Conflicts of interest", "conflicts of interest"),
    ("18c", "Open science", "Protocol", "where the protocol is, or that there is none"),
    ("18d", "Open science", "Registration", "registration, or that there is none"),
    ("18e", "Open science", "Data sharing", "availability of the study data"),
    ("18f", "Open science", "Code sharing", "availability of the analytical code"),
    (
        "19",
        "Patient and public involvement",
        "Patient and public involvement",
        "involvement, or none",
    ),
    (
        "20a",
        "Results",
        "Participants",
        "flow of participants; with and without the outcome; follow-up",
    ),
    (
        "20b",
        "Results",
        "Participants",
        "characteristics overall and by setting; missing data; group differences",
    ),
    (
        "20c",
        "Results",
        "Participants",
        "for evaluation: predictors and outcome compared with the development data",
    ),
    ("21", "Results", "Model development", "participants and events in each analysis"),
    (
        "22",
        "Results",
        "Model specification",
        "the full model, to predict for new individuals; access restrictions",
    ),
    (
        "23a",
        "Results",
        "Model performance",
        "performance with confidence intervals, also for key subgroups",
    ),
    ("23b", "Results", "Model performance", "heterogeneity of performance across clusters"),
    ("24", "Results", "Model updating", "results of any model updating"),
    ("25", "Discussion", "Interpretation", "overall interpretation, including fairness"),
    (
        "26",
        "Discussion",
        "Limitations",
        "limitations and their effect on bias, uncertainty, generalisability",
    ),
    (
        "27a",
        "Discussion",
        "Usability",
        "how poor-quality or missing inputs should be handled in use",
    ),
    ("27b", "Discussion", "Usability", "user interaction with inputs and expertise needed"),
    ("27c", "Discussion", "Usability", "next steps for research on applicability"),
]
TEAM = "Only the study team can answer this; the audit has no record of it."


@dataclass(frozen=True)
class _Facts:
    """What the checklist's answers depend on, read once from the run page's context."""

    run: dict
    config: dict
    declared: list
    has: dict
    outcomes: dict | None
    sites: list
    reference: str | None
    covariates: list
    ctx: dict

    @classmethod
    def of(cls, ctx: dict, t: dict) -> "_Facts":
        run, config = ctx["run"], ctx["config"]
        declared = [m.get("card") or {} for m in ctx["models"]]
        has = {name: not t[name].empty for name in t}
        outcomes = ctx["outcomes"]
        sites = ctx["evaluation_sites"]
        reference = ctx["drift"]["reference"] if ctx["drift"] else None
        covariates = sorted(
            {
                term.split("[")[0]
                for term in t["survival_terms"]["term"]
                if not term.startswith(("risk", "faceage", "age_gap"))
            }
        )
        return cls(run, config, declared, has, outcomes, sites, reference, covariates, ctx)

    def declared_any(self, key: str) -> bool:
        """Whether any model's spec declares ``key`` under ``card:``."""
        return any(d.get(key) for d in self.declared)


CARD = ("model card", "model_card.html")


def page(anchor: str, label: str) -> tuple[str, str]:
    """A link to a section of the run page."""
    return (label, f"index.html#{anchor}")


def _title_abstract(f: _Facts) -> dict:
    """Items of the title and abstract section."""
    a: dict[str, tuple[str, list, str]] = {}
    a["1"] = (
        PARTLY,
        [page("top", "report title")],
        "The report title names the audit (an evaluation) and the cohort; a paper's title "
        "must also name the outcome and the target population.",
    )
    a["2"] = (
        PARTLY,
        [page("verdict", "verdict")],
        "The verdict opens the report as a summary of results against pre-set thresholds; "
        "a TRIPOD+AI abstract also needs objectives, methods and conclusions.",
    )
    return a


def _introduction(f: _Facts) -> dict:
    """Items of the introduction section."""
    has = f.has
    a: dict[str, tuple[str, list, str]] = {}
    a["3a"] = (
        (
            PARTLY,
            [CARD],
            "The model card gives the declared intended use; the clinical "
            "rationale and existing models are the study team's to state.",
        )
        if f.declared_any("intended_use")
        else (NOT_ANSWERED, [], "No intended use is declared in the model spec (card:). " + TEAM)
    )
    n_target = sum(
        bool(x)
        for x in (
            f.declared_any("intended_use") or f.declared_any("population"),
            f.declared_any("users"),
            has["representativeness"],
        )
    )
    a["3b"] = (
        (ANSWERED if n_target == 3 else PARTLY if n_target else NOT_ANSWERED),
        [CARD, page("composition", "intended-use population")],
        "From the model card (intended use, population, users) and the configured "
        "intended-use population."
        + (
            ""
            if n_target == 3
            else " Missing: "
            + ", ".join(
                x
                for x, ok in (
                    (
                        "intended use or population",
                        f.declared_any("intended_use") or f.declared_any("population"),
                    ),
                    ("intended users (card: users)", f.declared_any("users")),
                    (
                        "[fairness.intended_population] in the audit config",
                        has["representativeness"],
                    ),
                )
                if not ok
            )
            + "."
        ),
    )
    a["3c"] = (
        (
            PARTLY,
            [page("fairness", "fairness")],
            "The audit measures performance gaps between groups; known health inequalities "
            "in the population come from the literature, which the study team must cite.",
        )
        if has["fairness"]
        else (NOT_ANSWERED, [], "Fairness was not assessed in this run. " + TEAM)
    )
    a["4"] = (
        ANSWERED,
        [page("verdict", "verdict checks"), page("trail", "audit configuration")],
        "An evaluation of existing models: each check, with its threshold fixed in the "
        "audit configuration before the run.",
    )
    return a


def _methods(f: _Facts) -> dict:
    """Items of the methods section."""
    return {
        **_source_and_participants(f),
        **_outcome_and_predictors(f),
        **_sample_size_and_missing(f),
        **_analytical_methods(f),
        **_imbalance_fairness_output(f),
    }


def _source_and_participants(f: _Facts) -> dict:
    """Items 5 to 7: source of data, participants, data preparation."""
    run, has, sites, covariates = f.run, f.has, f.sites, f.covariates
    a: dict[str, tuple[str, list, str]] = {}
    a["5a"] = (
        (ANSWERED if has["representativeness"] else PARTLY),
        [page("composition", "cohort composition"), CARD],
        f"Cohort {run['cohort_name']!s} (SHA-256 in the audit trail)"
        + (
            "; representativeness tested against the intended-use population."
            if has["representativeness"]
            else "; representativeness not tested (no intended-use population configured)."
        ),
    )
    a["5b"] = (
        NOT_ANSWERED,
        [],
        "The audit does not read accrual or follow-up dates; state them "
        "in cohort.yaml's description or in the paper.",
    )
    a["6a"] = (
        (ANSWERED if sites else PARTLY),
        [page("composition", "cohort composition")],
        (
            f"{len(sites)} site(s): {', '.join(sites[:8])}."
            if sites
            else "The cohort has no site column; cohort.yaml names the site."
        )
        + " The care setting (primary, secondary, ...) is the study team's to state.",
    )
    a["6b"] = (
        PARTLY,
        [page("validation", "data validation")],
        "Rows excluded by the audit's data checks are listed with their reasons; the "
        "study's clinical eligibility criteria are the team's to state.",
    )
    treat = [c for c in covariates if "treat" in c.lower()]
    a["6c"] = (
        (
            PARTLY,
            [page("survival", "survival (stratified fits)")],
            "Treatment enters the adjusted survival models as " + ", ".join(treat) + ".",
        )
        if treat
        else (NOT_ANSWERED, [], "The cohort carries no treatment variable.")
    )
    a["7"] = (
        ANSWERED,
        [page("validation", "data validation")],
        "Great Expectations suites, quarantine with reasons, face detection and alignment; "
        "the exclusion share by group is shown to check that checks fall alike on groups.",
    )
    return a


def _outcome_and_predictors(f: _Facts) -> dict:
    """Items 8 and 9: outcome and predictors."""
    config, has, outcomes, covariates = f.config, f.has, f.outcomes, f.covariates
    a: dict[str, tuple[str, list, str]] = {}
    if outcomes:
        horizons = (config.get("survival") or {}).get("horizons")
        a["8a"] = (
            ANSWERED,
            [page("survival", "survival")],
            "All-cause death (event) and follow-up time; FaceAge against chronological "
            "age at the photo." + (f" Horizons: {horizons} years." if horizons else ""),
        )
    else:
        a["8a"] = (
            (PARTLY if has["accuracy"] else NOT_ANSWERED),
            [page("accuracy", "accuracy")],
            "Only chronological age (for FaceAge) is an outcome here: the cohort has no "
            "follow-up (time, event).",
        )
    a["8b"] = (NOT_APPLICABLE, [], "Death and chronological age need no subjective judgement.")
    a["8c"] = (NOT_ANSWERED, [], "Whether outcomes were recorded blind to the photos. " + TEAM)
    a["9a"] = (
        ANSWERED,
        [page("survival", "survival"), CARD],
        "The predictors are the audited models' outputs (FaceAge, risk score)"
        + (f"; clinical covariates: {', '.join(covariates)}." if covariates else "."),
    )
    a["9b"] = (
        PARTLY,
        [CARD, page("trail", "models in the audit trail")],
        "Each model's input size, normalisation and checkpoint SHA-256 are in the model "
        "card; when each photo was taken relative to baseline is the team's to state.",
    )
    a["9c"] = (
        NOT_APPLICABLE,
        [],
        "The predictors are computed by the models, not judged by people.",
    )
    return a


def _sample_size_and_missing(f: _Facts) -> dict:
    """Items 10 and 11: sample size and missing data."""
    outcomes, ctx = f.outcomes, f.ctx
    a: dict[str, tuple[str, list, str]] = {}
    if outcomes:
        enough = outcomes["events"] >= 100
        a["10"] = (
            (ANSWERED if enough else PARTLY),
            [page("composition", "cohort composition")],
            f"{outcomes['subjects']} subjects, {outcomes['events']} deaths; evaluation "
            f"needs about 100 events or more (Collins et al. 2016): "
            + ("met." if enough else "not met, so survival estimates are imprecise.")
            + " The cohort's size was set by the study, not by a calculation here.",
        )
    else:
        a["10"] = (
            PARTLY,
            [page("composition", "cohort composition")],
            f"{ctx['n_included']} photos; no outcomes, so no events to count.",
        )
    a["11"] = (
        ANSWERED,
        [page("validation", "quarantine"), page("survival", "survival notes")],
        "Rows missing required values are quarantined with their reason; survival "
        "models are complete-case and say how many rows each dropped.",
    )
    return a


def _analytical_methods(f: _Facts) -> dict:
    """Item 12: analytical methods."""
    run, config, sites = f.run, f.config, f.sites
    a: dict[str, tuple[str, list, str]] = {}
    folds = (config.get("survival") or {}).get("folds")
    a["12a"] = (
        ANSWERED,
        [page("survival", "survival")],
        "The whole cohort is evaluation data (no partition); calibration probabilities "
        "are cross-fitted" + (f" over {folds} folds." if folds else "."),
    )
    a["12b"] = (
        ANSWERED,
        [page("survival", "survival")],
        "FaceAge per decade, risk per SD and by cohort quartile, adjusted for age and sex "
        "(and clinical covariates where declared).",
    )
    a["12c"] = (
        PARTLY,
        [CARD, page("survival", "survival")],
        "The audited models are evaluated, not developed: their development is in the "
        "training data the card declares. Cox models (lifelines, Efron ties) are fitted "
        "here to measure prognostic value.",
    )
    a["12d"] = (
        (
            ANSWERED,
            [page("fairness", "fairness by site")],
            "Performance by site, with simultaneous bands; hazard ratios and clinical "
            "utility within each site.",
        )
        if len(sites) > 1
        else (NOT_APPLICABLE, [], "One site only: no clusters.")
    )
    a["12e"] = (
        ANSWERED,
        [page("accuracy", "accuracy"), page("survival", "survival")],
        "MAE, mean error, Pearson r, within 5 years; Harrell's and Uno's C, time-dependent "
        "AUC, Brier and integrated Brier scores, calibration by decile, Kaplan-Meier "
        "curves, nested-model likelihood-ratio tests; clinical utility by decision "
        "curves (net benefit against treating all, none, and chronological age, and "
        "the net benefit each face model adds to the clinical model); "
        "paired model comparisons.",
    )
    a["12f"] = (NOT_APPLICABLE, [], "The audit does not update or recalibrate the models.")
    a["12g"] = (
        ANSWERED,
        [CARD, page("trail", "models in the audit trail")],
        "Model specs and checkpoint SHA-256; predictions computed by faceage-audit "
        f"{run['code_version']} on the aligned crops (kind 'predictions': supplied in "
        "the cohort table).",
    )
    return a


def _imbalance_fairness_output(f: _Facts) -> dict:
    """Items 13 to 15: class imbalance, fairness and model output."""
    config, has = f.config, f.has
    a: dict[str, tuple[str, list, str]] = {}
    a["13"] = (
        NOT_APPLICABLE,
        [],
        "The outputs are continuous (age, risk score); no class-imbalance methods are used.",
    )
    a["14"] = (
        (
            ANSWERED,
            [page("fairness", "fairness")],
            "Subgroup metrics (fairlearn MetricFrame), bootstrap CIs, simultaneous bands "
            "against a tolerance, age-adjusted errors, subgroup hazard ratios, and "
            "clinical utility within subgroups (groups a score's decision rule harms).",
        )
        if has["fairness"]
        else (NOT_ANSWERED, [], "Fairness was not assessed in this run.")
    )
    if has.get("slices"):
        status, links, text = a["14"]
        a["14"] = (
            ANSWERED if status == ANSWERED else PARTLY,
            links + [page("slices", "slices")],
            text + " Beyond the declared subgroups: combinations of conditions where a model "
            "fails, searched on half the subjects and confirmed on the other half.",
        )
    judged = (config.get("thresholds") or {}).get("net_benefit_range") or []
    a["15"] = (
        ANSWERED,
        [CARD, page("survival", "survival")],
        "FaceAge in years; risk as a continuous score (higher is worse), grouped into "
        "quartiles of this cohort for display. Decision curves give the net benefit "
        "of acting on each score's cross-fitted risk of death over a range of "
        "threshold probabilities"
        + (
            f"; the verdict judges thresholds {judged[0]:.0%} to {judged[1]:.0%} at "
            f"{years((config.get('thresholds') or {}).get('net_benefit_horizon', 1.0))}."
            if len(judged) == 2
            else "; no threshold is declared for the verdict."
        ),
    )
    return a


def _open_science(f: _Facts) -> dict:
    """Items of the open science section."""
    run, reference = f.run, f.reference
    a: dict[str, tuple[str, list, str]] = {}
    if reference:
        a["16"] = (
            ANSWERED,
            [page("drift", "drift"), CARD],
            f"Distributions compared with reference run {reference}; declared training "
            "data in the model card.",
        )
    elif f.declared_any("training_data"):
        a["16"] = (
            PARTLY,
            [CARD],
            "The model card sets the declared training data beside this "
            "cohort; run with --reference to compare distributions.",
        )
    else:
        a["16"] = (NOT_ANSWERED, [], "No training data declared and no reference cohort given.")
    for item in ("17", "18a", "18b", "18d", "19", "27c"):
        a[item] = (NOT_ANSWERED, [], TEAM)
    a["18c"] = (
        PARTLY,
        [page("trail", "audit configuration")],
        "The audit configuration (thresholds fixed before the run, SHA-256 in the "
        "manifest) is the analysis plan; a study protocol is the team's.",
    )
    a["18e"] = (
        NOT_ANSWERED,
        [("CSV exports", "data/")],
        "Photos and ids stay on site; aggregate results are in the CSV exports. Sharing "
        "the data is the team's decision.",
    )
    a["18f"] = (
        ANSWERED,
        [("run manifest", "manifest.json"), page("trail", "audit trail")],
        f"faceage-audit {run['code_version']}, the environment and the configuration, "
        "hashed and signed in the run manifest.",
    )
    return a


def _results(f: _Facts) -> dict:
    """Items of the results section."""
    has, outcomes, sites, reference, ctx = f.has, f.outcomes, f.sites, f.reference, f.ctx
    a: dict[str, tuple[str, list, str]] = {}
    a["20a"] = (
        ANSWERED,
        [page("validation", "data validation"), page("composition", "cohort")],
        f"{ctx['n_rows']} manifest rows, {ctx['n_included']} included"
        + (
            f"; {outcomes['subjects']} subjects, {outcomes['events']} deaths, median "
            f"follow-up {outcomes['median_followup']:.2f}."
            if outcomes
            else "."
        ),
    )
    a["20b"] = (
        ANSWERED,
        [page("composition", "cohort composition")],
        "Age, sex, race, cancer type and site; exclusions by reason and by group.",
    )
    a["20c"] = (
        (ANSWERED, [page("drift", "drift")], f"Against reference run {reference}.")
        if reference
        else (NOT_ANSWERED, [], "No reference cohort was given (run with --reference DIR|RUN_ID).")
    )
    a["21"] = (
        ANSWERED,
        [page("accuracy", "accuracy"), page("survival", "survival")],
        "Every estimate carries its photos, subjects and events.",
    )
    a["22"] = (
        (ANSWERED if f.declared_any("license") else PARTLY),
        [CARD, page("trail", "models in the audit trail")],
        "Model specs and checkpoint SHA-256 identify the exact models"
        + (
            "; access terms in the model card."
            if f.declared_any("license")
            else "; access and re-use terms are not declared (card: license)."
        ),
    )
    a["23a"] = (
        (
            ANSWERED,
            [page("accuracy", "accuracy"), page("fairness", "fairness")],
            "Every metric with a 95% CI, overall and by subgroup.",
        )
        if has["accuracy"]
        else (NOT_ANSWERED, [], "No performance could be computed.")
    )
    a["23b"] = (
        (ANSWERED, [page("fairness", "fairness by site")], "By site.")
        if len(sites) > 1
        else (NOT_APPLICABLE, [], "One site only.")
    )
    a["24"] = (NOT_APPLICABLE, [], "No model updating.")
    return a


def _discussion(f: _Facts) -> dict:
    """Items of the discussion section."""
    has = f.has
    a: dict[str, tuple[str, list, str]] = {}
    a["25"] = (
        PARTLY,
        [page("verdict", "verdict")],
        "The verdict interprets results against pre-set thresholds, fairness included; "
        "relating them to previous studies is the team's.",
    )
    a["26"] = (ANSWERED, [CARD], "The model card's limitations, derived from this run's results.")
    a["27a"] = (
        (
            ANSWERED,
            [page("validation", "data validation"), page("robustness", "robustness")],
            "Input checks with quarantine, and how outputs move under image perturbations.",
        )
        if has["robustness"]
        else (
            PARTLY,
            [page("validation", "data validation")],
            "Input checks with quarantine; robustness to image quality was not run.",
        )
    )
    if has.get("paired"):
        status, links, text = a["27a"]
        a["27a"] = (
            status,
            links + [page("paired", "real repeated photos")],
            text + " On real repeated photos of the same people (make-up, surgery, glasses, "
            "light, pose, retakes): agreement and equivalence within the tolerance.",
        )
    a["27b"] = (
        (ANSWERED, [CARD], "Intended users as declared in the model card.")
        if f.declared_any("users")
        else (NOT_ANSWERED, [], TEAM)
    )
    return a


def checklist(ctx: dict, t: dict, cards: list[dict]) -> list[dict]:
    """The checklist map for one run: one row per TRIPOD+AI item (52 rows, items 1 to 27c)."""
    facts = _Facts.of(ctx, t)
    a = {
        **_title_abstract(facts),
        **_introduction(facts),
        **_methods(facts),
        **_open_science(facts),
        **_results(facts),
        **_discussion(facts),
    }
    rows = []
    for item, section, topic, text in ITEMS:
        status, where, note = a[item]
        rows.append(
            {
                "item": item,
                "section": section,
                "topic": topic,
                "text": text,
                "status": status,
                "where": [{"label": lbl, "href": href} for lbl, href in where],
                "note": note,
            }
        )
    return rows
