"""The statistics stages: accuracy, fairness (with survival within subgroups, paired model
comparisons and representativeness) and survival (Cox models, metrics, the Face Aging Rate
and incremental value), each over every model and in one transaction."""

from __future__ import annotations

import pandas as pd

from audit.metrics.accuracy import faceage_accuracy, risk_accuracy
from audit.metrics.fairness import faceage_fairness, paired_comparisons, risk_fairness
from audit.metrics.representativeness import representativeness
from audit.pipeline import progress
from audit.stages.context import RunContext, one_per_subject, wide_predictions
from audit.survival.analysis import METRIC_COLUMNS, MODEL_COLUMNS, TERM_COLUMNS, survival_analysis
from audit.survival.incremental import incremental_value
from audit.survival.longitudinal import far_models
from audit.survival.subgroups import survival_subgroups


def accuracy_stage(ctx: RunContext) -> int:
    """Accuracy of each model output with subject-level bootstrap CIs."""
    parts = []
    for model in progress.track(ctx.models, "accuracy"):
        wide = wide_predictions(ctx, model)
        if "faceage" in model.outputs:
            if "age" in wide.columns:
                parts.append(faceage_accuracy(wide, model.name, ctx.config.accuracy))
            else:
                ctx.note(
                    "accuracy", f"{model.name}: no chronological age, FaceAge error not computed"
                )
        if "risk" in model.outputs:
            if ctx.cohort.has_outcomes:
                subjects = one_per_subject(ctx, wide)
                note_c_resamples(ctx, "accuracy", len(subjects))
                parts.append(
                    risk_accuracy(
                        subjects,
                        model.name,
                        ctx.config.accuracy,
                        ctx.config.survival,
                    )
                )
            else:
                ctx.note("accuracy", f"{model.name}: no outcomes, risk C-index not computed")
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return ctx.write(
        "accuracy", {"accuracy": frame}, note="; ".join(ctx.notes.get("accuracy", [])) or None
    )


def fairness_stage(ctx: RunContext) -> int:
    """Subgroup fairness of every model output, survival within subgroups, paired model
    comparisons and the cohort's representativeness, in one transaction."""
    cfg = ctx.config.fairness
    if not cfg.enabled:
        ctx.note("fairness", "fairness not run: turned off in the audit config")
        return ctx.write("fairness", {}, note=ctx.notes["fairness"][0])
    cuts = ctx.config.accuracy.age_bands
    min_events = ctx.config.survival.min_events
    tables: dict[str, list] = {
        k: []
        for k in (
            "fairness",
            "survival_subgroups",
            "survival_tests",
            "representativeness",
            "comparisons",
        )
    }
    if cfg.intended_population:
        tables["representativeness"].append(
            representativeness(ctx.cohort.subjects(), cfg.intended_population, cuts)
        )
    else:
        ctx.note(
            "fairness",
            "no intended-use population in the config "
            "(fairness.intended_population): representativeness not tested",
        )
    by_output: dict[str, dict] = {"faceage": {}, "risk": {}}
    linear_from = ctx.config.survival.c_linear_threshold()
    for model in progress.track(ctx.models, "fairness"):
        wide = wide_predictions(ctx, model)
        subjects = one_per_subject(ctx, wide)
        if "faceage" in model.outputs and "age" in wide.columns:
            tables["fairness"].append(faceage_fairness(wide, model.name, cfg, cuts))
            by_output["faceage"][model.name] = wide
        if "risk" in model.outputs and ctx.cohort.has_outcomes:
            said: list[str] = []
            note_c_resamples(ctx, "fairness", len(subjects))
            tables["fairness"].append(
                risk_fairness(
                    subjects, model.name, cfg, cuts, min_events, notes=said, linear_from=linear_from
                )
            )
            for note in said:
                ctx.note("fairness", note)
            by_output["risk"][model.name] = subjects
        if ctx.cohort.has_outcomes:
            rows, tests = survival_subgroups(
                subjects, model.name, model.outputs, cfg, min_events, cuts
            )
            tables["survival_subgroups"].append(rows)
            tables["survival_tests"].append(tests)
    for output, frames in by_output.items():
        if len(frames) >= 2:
            tables["comparisons"].append(
                paired_comparisons(frames, output, cfg, cuts, min_events, linear_from=linear_from)
            )
    merged = {
        k: pd.concat([f for f in v if len(f)], ignore_index=True)
        for k, v in tables.items()
        if any(len(f) for f in v)
    }
    fair = merged.get("fairness")
    if fair is not None:
        flagged = fair[fair["status"] == "flagged"]
        ctx.note(
            "fairness",
            f"{len(fair)} subgroup rows, {len(flagged)} flagged "
            f"({(flagged['metric'].isin(cfg.verdict_metrics)).sum()} on the "
            "verdict's metrics)",
        )
    return ctx.write("fairness", merged, note="; ".join(ctx.notes.get("fairness", [])) or None)


def survival_stage(ctx: RunContext) -> int:
    """First survival models of each model's outputs (one photo per subject)."""
    tables: dict[str, list] = {}
    for model in progress.track(ctx.models, "survival"):
        subjects = one_per_subject(ctx, wide_predictions(ctx, model))
        note_c_resamples(ctx, "survival", len(subjects))
        fair = ctx.config.fairness
        result = survival_analysis(
            subjects,
            model.name,
            model.outputs,
            ctx.cohort.spec.covariates,
            ctx.config.survival,
            ctx.config.accuracy.age_bands,
            decision_groups=fair.survival_attributes if fair.enabled else None,
            min_group_size=fair.min_group_size,
        )
        for note in result.notes:
            ctx.note("survival", f"{model.name}: {note}" if len(ctx.models) > 1 else note)
        for name, frame in result.tables().items():
            tables.setdefault(name, []).append(frame)
        if "faceage" in model.outputs and ctx.cohort.has_outcomes:
            _face_aging_rate(ctx, model, tables)
    if ctx.config.survival.incremental and ctx.cohort.has_outcomes:
        for name, frame in _incremental(ctx).items():
            tables.setdefault(name, []).append(frame)
    # all-NA columns (e.g. the calibration columns of Kaplan-Meier rows) are left to the
    # database's NULL: INSERT BY NAME fills what a frame lacks
    merged = {
        k: pd.concat([f.dropna(axis=1, how="all") for f in v if len(f)] or v[:1], ignore_index=True)
        for k, v in tables.items()
    }
    return ctx.write("survival", merged, note=" ".join(ctx.notes.get("survival", [])) or None)


def note_c_resamples(ctx: RunContext, stage: str, subjects: int) -> None:
    """Name the C intervals' method in the stage's note when some of its resamples are
    linearised (once a stage; the exact resamples are the documented default)."""
    surv = ctx.config.survival
    threshold = surv.c_linear_threshold()
    if threshold is None or subjects < threshold:
        return
    if any("C resamples" in n for n in ctx.notes.get(stage, [])):
        return
    where = (
        f"in every analysed set (the cohort, a subgroup) of at least {threshold:,} subjects "
        f"([survival] c_resamples = auto; the cohort: {subjects:,}), exact in smaller ones"
        if surv.c_resamples == "auto"
        else "in every analysed set ([survival] c_resamples = linear)"
    )
    ctx.note(
        stage,
        "Harrell's and Uno's C resamples linearised: each bootstrap resample's C is its "
        "first-order expansion in the subject weights (empirical influence values; the "
        f"infinitesimal jackknife), {where}",
    )


def _face_aging_rate(ctx: RunContext, model, tables: dict) -> None:
    """Face Aging Rate from serial photos (every photo of the subject, not only the first)."""
    photos = wide_predictions(ctx, model)
    if "photo_date" not in photos.columns or not photos["subject_id"].duplicated().any():
        return
    models, terms, metrics, notes = far_models(
        photos, model.name, ctx.config.survival, min_subjects=ctx.config.fairness.min_group_size
    )
    for note in notes:
        ctx.note("survival", f"{model.name}: {note}" if len(ctx.models) > 1 else note)
    for name, rows, cols in (
        ("survival_models", models, MODEL_COLUMNS),
        ("survival_terms", terms, TERM_COLUMNS),
        ("survival_metrics", metrics, METRIC_COLUMNS),
    ):
        if rows:
            tables.setdefault(name, []).append(pd.DataFrame(rows, columns=cols))


def _incremental(ctx: RunContext) -> dict:
    """Clinical model vs + FaceAge (the first model with it) vs + the risk score (the first
    model with it), on the subjects both predicted."""
    face = next((m for m in ctx.models if "faceage" in m.outputs), None)
    risk = next((m for m in ctx.models if "risk" in m.outputs), None)
    if face is None and risk is None:
        return {}
    base = None
    for m, column in ((face, "faceage"), (risk, "risk")):
        if m is None:
            continue
        wide = one_per_subject(ctx, wide_predictions(ctx, m))
        if base is None:
            base = wide.drop(
                columns=[c for c in ("faceage", "risk") if c != column and c in wide.columns]
            )
        else:
            base = base.merge(wide[["photo_id", column]], on="photo_id", how="inner")
    if (
        base is None
        or base["event"].isna().all()
        or base["event"].sum() < ctx.config.survival.min_events
    ):
        return {}
    try:
        result = incremental_value(
            base,
            ctx.cohort.spec.covariates,
            faceage_model=face.name if face else None,
            risk_model=risk.name if risk else None,
            n_boot=ctx.config.survival.n_boot,
            seed=ctx.config.survival.seed,
            penalizer=ctx.config.survival.penalizer,
            decision_horizons=ctx.config.survival.decision_horizons,
            decision_thresholds=ctx.config.survival.decision_thresholds,
            folds=ctx.config.survival.folds,
            linear_from=ctx.config.survival.c_linear_threshold(),
        )
    except Exception as exc:  # a fit that fails is reported, the stage goes on
        ctx.note("survival", f"incremental value not computed: {type(exc).__name__}: {exc}")
        return {}
    for note in result.pop("notes"):
        ctx.note("survival", note)
    return result
