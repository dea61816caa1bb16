"""The statistics stages: accuracy, fairness (with survival within subgroups, paired model
comparisons and representativeness) and survival (Cox models, metrics, the Face Aging Rate
and incremental value), each over every model and in one transaction."""

from __future__ import annotations

import gc
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from audit.metrics.accuracy import faceage_accuracy, risk_accuracy
from audit.metrics.fairness import faceage_fairness, paired_comparisons, risk_fairness
from audit.metrics.representativeness import representativeness
from audit.pipeline import progress
from audit.stages.context import RunContext, one_per_subject, wide_predictions
from audit.survival.analysis import (
    METRIC_COLUMNS,
    MODEL_COLUMNS,
    PARTS,
    TERM_COLUMNS,
    survival_analysis,
)
from audit.survival.incremental import incremental_value
from audit.survival.longitudinal import far_models
from audit.survival.subgroups import survival_subgroups


@dataclass(frozen=True)
class Piece:
    """One independent computation of a statistics stage: ``fn(*args)`` returns a
    :class:`PieceResult`. Pieces read nothing from the run (their frames travel with them)
    and write nothing, so they run anywhere: here, or as tasks on the flow's Dask workers.
    ``cost`` is its expected computing time in relative units (the workers take the
    largest first; only the order matters)."""

    stage: str
    label: str
    fn: Callable[..., PieceResult]
    args: tuple = ()
    cost: float = 0.0


# Seconds each kind of piece computed per 100,000 subjects of the demo world on the
# reference machine (benchmarks/RESULTS.md, "Registry scale"): a piece's cost is its kind's
# figure times its subjects, so that the workers take the longest pieces first.
COST = {
    "accuracy faceage": 5.0,
    "accuracy risk": 3.0,
    "representativeness": 0.5,
    "fairness faceage": 8.0,
    "fairness risk": 17.0,
    "survival within groups": 6.0,
    "paired comparisons": 12.0,
    "base": 2.0,
    "faceage_models": 12.0,
    "faceage_score": 10.0,
    "risk_models": 14.0,
    "risk_score": 11.0,
    "face aging rate": 6.0,
    "incremental value": 15.0,
}


def _cost(kind: str, subjects: int) -> float:
    return COST[kind] * subjects / 100_000


@dataclass
class PieceResult:
    """A piece's rows (table name -> frame), its notes for the stage's note, the process that
    computed it (``host:pid``) and how long that took (seconds)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ran_on: str = ""
    seconds: float = 0.0


# A piece that computed this long (seconds) is followed by a full garbage collection: the
# reference cycles it leaves keep some of its arrays until the collector's next run, and at
# scale those are large (the fairness stage's peak at 100,000 subjects 0.85 GB with them,
# 0.70 GB without: benchmarks/RESULTS.md, "Registry scale"). A collection takes 0.1 to
# 0.3 s in a process with the libraries loaded, too much after every small piece.
COLLECT_AFTER_S = 2.0


def run_piece(piece: Piece) -> PieceResult:
    """Compute one piece (the fan-out's task function)."""
    start = time.perf_counter()
    result = piece.fn(*piece.args)
    if time.perf_counter() - start > COLLECT_AFTER_S:
        gc.collect()
    result.ran_on, result.seconds = _here(), time.perf_counter() - start
    return result


def _here() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def statistics_pieces(ctx: RunContext, stage: str) -> list[Piece]:
    """The independent pieces of ``stage`` (``accuracy``, ``fairness`` or ``survival``): each
    model and output's table, each output's paired comparisons, each part of each model's
    survival analysis, the Face Aging Rate and the incremental value. What the run's own
    state decides (no age, no outcomes, fairness turned off) is noted here."""
    return {"accuracy": _accuracy_pieces, "fairness": _fairness_pieces}.get(
        stage, _survival_pieces
    )(ctx)


def _merged(ctx: RunContext, stage: str, pieces, results) -> dict[str, pd.DataFrame]:
    """The pieces' rows, table by table in the order of the pieces, and their notes: those
    of ``results`` (the fan-out's), else of ``pieces`` computed here (planned here when
    None)."""
    if results is None:
        if pieces is None:
            pieces = statistics_pieces(ctx, stage)
        results = [(p, run_piece(p)) for p in progress.track(pieces, stage)]
    elsewhere = sorted({r.ran_on for _, r in results} - {_here()})
    if elsewhere:  # the flow spread them over its Dask workers
        busy = sum(r.seconds for _, r in results)
        ctx.note(
            stage,
            f"{len(results)} pieces on worker process(es) {', '.join(elsewhere)} "
            f"({busy:.1f} s of computing).",
        )
    tables: dict[str, list] = {}
    for piece, result in results:
        for note in result.notes:
            ctx.note(stage, note)
        for name, frame in result.tables.items():
            tables.setdefault(name, []).append(frame)
    # all-NA columns (e.g. the calibration columns of Kaplan-Meier rows) are left to the
    # database's NULL: INSERT BY NAME fills what a frame lacks
    return {
        k: pd.concat([f.dropna(axis=1, how="all") for f in v if len(f)] or v[:1], ignore_index=True)
        for k, v in tables.items()
    }


def accuracy_stage(
    ctx: RunContext, pieces: list[Piece] | None = None, results: list | None = None
) -> int:
    """Accuracy of each model output with subject-level bootstrap CIs: the rows of the
    stage's pieces (``results``: those of a fan-out; else ``pieces`` computed here, planned
    here when None)."""
    merged = _merged(ctx, "accuracy", pieces, results)
    frame = merged.get("accuracy", pd.DataFrame())
    return ctx.write(
        "accuracy", {"accuracy": frame}, note="; ".join(ctx.notes.get("accuracy", [])) or None
    )


def _accuracy_pieces(ctx: RunContext) -> list[Piece]:
    pieces = []
    for model in ctx.models:
        wide = wide_predictions(ctx, model)
        if "faceage" in model.outputs:
            if "age" in wide.columns:
                pieces.append(
                    _table(
                        "accuracy",
                        model,
                        "faceage",
                        faceage_accuracy,
                        wide,
                        model.name,
                        ctx.config.accuracy,
                    )
                )
            else:
                ctx.note(
                    "accuracy", f"{model.name}: no chronological age, FaceAge error not computed"
                )
        if "risk" in model.outputs:
            if ctx.cohort.has_outcomes:
                subjects = one_per_subject(ctx, wide)
                note_resamples(ctx, "accuracy", len(subjects))
                pieces.append(
                    _table(
                        "accuracy",
                        model,
                        "risk",
                        risk_accuracy,
                        subjects,
                        model.name,
                        ctx.config.accuracy,
                        ctx.config.survival,
                    )
                )
            else:
                ctx.note("accuracy", f"{model.name}: no outcomes, risk C-index not computed")
    return pieces


def _table(stage: str, model, what: str, fn: Callable, frame, *args) -> Piece:
    """A piece whose function returns the rows of the stage's own table."""
    cost = _cost(f"{stage} {what}", len(frame))
    return Piece(stage, f"{model.name}: {what}", _one_table, (stage, fn, frame, *args), cost)


def _one_table(table: str, fn: Callable, *args) -> PieceResult:
    return PieceResult({table: fn(*args)})


def fairness_stage(
    ctx: RunContext, pieces: list[Piece] | None = None, results: list | None = None
) -> int:
    """Subgroup fairness of every model output, survival within subgroups, paired model
    comparisons and the cohort's representativeness, in one transaction."""
    cfg = ctx.config.fairness
    if not cfg.enabled:
        if not ctx.notes.get("fairness"):
            ctx.note("fairness", "fairness not run: turned off in the audit config")
        return ctx.write("fairness", {}, note=ctx.notes["fairness"][0])
    merged = {k: v for k, v in _merged(ctx, "fairness", pieces, results).items() if len(v)}
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


def _fairness_pieces(ctx: RunContext) -> list[Piece]:
    cfg = ctx.config.fairness
    if not cfg.enabled:
        return []
    cuts = ctx.config.accuracy.age_bands
    min_events = ctx.config.survival.min_events
    linear_from = ctx.config.survival.linear_threshold()
    pieces = []
    if cfg.intended_population:
        pieces.append(
            Piece(
                "fairness",
                "representativeness",
                _one_table,
                (
                    "representativeness",
                    representativeness,
                    ctx.cohort.subjects(),
                    cfg.intended_population,
                    cuts,
                ),
                _cost("representativeness", len(ctx.cohort.analysed)),
            )
        )
    else:
        ctx.note(
            "fairness",
            "no intended-use population in the config "
            "(fairness.intended_population): representativeness not tested",
        )
    by_output: dict[str, dict] = {"faceage": {}, "risk": {}}
    for model in ctx.models:
        wide = wide_predictions(ctx, model)
        subjects = one_per_subject(ctx, wide)
        if "faceage" in model.outputs and "age" in wide.columns:
            pieces.append(
                _table("fairness", model, "faceage", faceage_fairness, wide, model.name, cfg, cuts)
            )
            by_output["faceage"][model.name] = wide
        if "risk" in model.outputs and ctx.cohort.has_outcomes:
            note_resamples(ctx, "fairness", len(subjects))
            pieces.append(
                Piece(
                    "fairness",
                    f"{model.name}: risk",
                    _risk_fairness,
                    (subjects, model.name, cfg, cuts, min_events, linear_from),
                    _cost("fairness risk", len(subjects)),
                )
            )
            by_output["risk"][model.name] = subjects
        if ctx.cohort.has_outcomes:  # one piece an attribute: their rows in the same order
            for attribute in cfg.survival_attributes:
                one = cfg.model_copy(update={"survival_attributes": [attribute]})
                pieces.append(
                    Piece(
                        "fairness",
                        f"{model.name}: survival within {attribute} groups",
                        _subgroups,
                        (subjects, model.name, model.outputs, one, min_events, cuts),
                        _cost("survival within groups", len(subjects)),
                    )
                )
    for output, frames in by_output.items():
        if len(frames) >= 2:
            pieces.append(
                Piece(
                    "fairness",
                    f"paired comparisons: {output}",
                    _one_table,
                    (
                        "comparisons",
                        paired_comparisons,
                        frames,
                        output,
                        cfg,
                        cuts,
                        min_events,
                        linear_from,
                    ),
                    _cost("paired comparisons", sum(len(f) for f in frames.values())),
                )
            )
    return pieces


def _risk_fairness(subjects, model, cfg, cuts, min_events, linear_from) -> PieceResult:
    said: list[str] = []
    frame = risk_fairness(
        subjects, model, cfg, cuts, min_events, notes=said, linear_from=linear_from
    )
    return PieceResult({"fairness": frame}, said)


def _subgroups(subjects, model, outputs, cfg, min_events, cuts) -> PieceResult:
    rows, tests = survival_subgroups(subjects, model, outputs, cfg, min_events, cuts)
    return PieceResult({"survival_subgroups": rows, "survival_tests": tests})


def survival_stage(
    ctx: RunContext, pieces: list[Piece] | None = None, results: list | None = None
) -> int:
    """First survival models of each model's outputs (one photo per subject), the Face
    Aging Rate and the incremental value."""
    merged = _merged(ctx, "survival", pieces, results)
    return ctx.write("survival", merged, note=" ".join(ctx.notes.get("survival", [])) or None)


def _survival_pieces(ctx: RunContext) -> list[Piece]:
    pieces = []
    fair = ctx.config.fairness
    prefix = len(ctx.models) > 1
    for model in ctx.models:
        photos = wide_predictions(ctx, model)
        subjects = one_per_subject(ctx, photos)
        note_resamples(ctx, "survival", len(subjects))
        for part in PARTS:
            pieces.append(
                Piece(
                    "survival",
                    f"{model.name}: {part}",
                    _survival_part,
                    (
                        subjects,
                        model.name,
                        model.outputs,
                        ctx.cohort.spec.covariates,
                        ctx.config.survival,
                        ctx.config.accuracy.age_bands,
                        fair.survival_attributes if fair.enabled else None,
                        fair.min_group_size,
                        part,
                        prefix,
                    ),
                    _cost(part, len(subjects)),
                )
            )
        if "faceage" in model.outputs and ctx.cohort.has_outcomes:
            if "photo_date" in photos.columns and photos["subject_id"].duplicated().any():
                pieces.append(
                    Piece(
                        "survival",
                        f"{model.name}: face aging rate",
                        _face_aging_rate,
                        (photos, model.name, ctx.config.survival, fair.min_group_size, prefix),
                        _cost("face aging rate", len(photos)),
                    )
                )
    if ctx.config.survival.incremental and ctx.cohort.has_outcomes:
        found = _incremental_subjects(ctx)
        if found is not None:
            base, face, risk = found
            pieces.append(
                Piece(
                    "survival",
                    "incremental value",
                    _incremental,
                    (base, ctx.cohort.spec.covariates, face, risk, ctx.config.survival),
                    _cost("incremental value", len(base)),
                )
            )
    return pieces


def _survival_part(
    subjects, model, outputs, covariates, config, cuts, groups, min_size, part, prefix
) -> PieceResult:
    result = survival_analysis(
        subjects,
        model,
        outputs,
        covariates,
        config,
        cuts,
        decision_groups=groups,
        min_group_size=min_size,
        part=part,
    )
    notes = [f"{model}: {n}" if prefix else n for n in result.notes]
    return PieceResult(result.tables(), notes)


def note_resamples(ctx: RunContext, stage: str, subjects: int) -> None:
    """Name the intervals' method in the stage's note when some of its resamples are
    linearised (once a stage; the exact resamples are the documented default)."""
    surv = ctx.config.survival
    threshold = surv.linear_threshold()
    if threshold is None or subjects < threshold:
        return
    if any("resamples linearised" in n for n in ctx.notes.get(stage, [])):
        return
    where = (
        f"in every analysed set (the cohort, a subgroup) of at least {threshold:,} subjects "
        f"([survival] resamples = auto; the cohort: {subjects:,}), exact in smaller ones"
        if surv.resamples == "auto"
        else "in every analysed set ([survival] resamples = linear)"
    )
    what = "C and net-benefit" if stage == "survival" else "C"
    ctx.note(
        stage,
        f"{what} resamples linearised: each bootstrap resample's value is its first-order "
        "expansion in the subject weights (empirical influence values; the infinitesimal "
        f"jackknife), {where}.",
    )


def _face_aging_rate(photos, model, config, min_subjects, prefix) -> PieceResult:
    """Face Aging Rate from serial photos (every photo of the subject, not only the first)."""
    models, terms, metrics, notes = far_models(photos, model, config, min_subjects=min_subjects)
    tables = {
        name: pd.DataFrame(rows, columns=cols)
        for name, rows, cols in (
            ("survival_models", models, MODEL_COLUMNS),
            ("survival_terms", terms, TERM_COLUMNS),
            ("survival_metrics", metrics, METRIC_COLUMNS),
        )
        if rows
    }
    return PieceResult(tables, [f"{model}: {n}" if prefix else n for n in notes])


def _incremental_subjects(ctx: RunContext) -> tuple | None:
    """The subjects of the incremental value: the first model with FaceAge and the first
    with a risk score, on the subjects both predicted, and the two models' names; None when
    there is nothing to test."""
    face = next((m for m in ctx.models if "faceage" in m.outputs), None)
    risk = next((m for m in ctx.models if "risk" in m.outputs), None)
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
        return None
    return base, face.name if face else None, risk.name if risk else None


def _incremental(base, covariates, face: str | None, risk: str | None, config) -> PieceResult:
    """Clinical model vs + FaceAge vs + the risk score; a failure is a note, not a stop."""
    try:
        result = incremental_value(
            base,
            covariates,
            faceage_model=face,
            risk_model=risk,
            n_boot=config.n_boot,
            seed=config.seed,
            penalizer=config.penalizer,
            decision_horizons=config.decision_horizons,
            decision_thresholds=config.decision_thresholds,
            folds=config.folds,
            linear_from=config.linear_threshold(),
        )
    except Exception as exc:  # a fit that fails is reported, the stage goes on
        return PieceResult({}, [f"incremental value not computed: {type(exc).__name__}: {exc}"])
    notes = result.pop("notes")
    return PieceResult(result, notes)
