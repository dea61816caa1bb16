"""The audit's stages as plain functions over a :class:`RunContext`.

Each stage computes with the library modules (cohort, models, accuracy, survival, verdict,
report) and hands its rows to :meth:`Store.write_stage`, one transaction per stage. The
Prefect flow in ``flows/audit.py`` wraps each function in one task; tests call them
directly. Stages never import each other's internals and never import ``flows``.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from audit import progress
from audit.config import AuditConfig
from audit.errors import InputError
from audit.store import Store

@dataclass
class RunContext:
    """What the stages of one run share."""

    store: Store
    run_id: str
    out_dir: Path
    config: AuditConfig
    cohort: object  # audit.cohort.Cohort
    models: list  # ModelAdapter
    predictions: dict = field(default_factory=dict)  # model name -> tidy frame
    notes: dict = field(default_factory=dict)  # stage -> list of notes for the report
    reference: str | None = None  # run_id the drift stage compares against

    def __post_init__(self) -> None:
        self._mark = datetime.now(timezone.utc)

    def note(self, stage: str, text: str) -> None:
        self.notes.setdefault(stage, []).append(text)

    def write(self, stage: str, tables: dict, note: str | None = None) -> int:
        """Write a stage's tables in one transaction, timed from the previous write."""
        n = self.store.write_stage(self.run_id, stage, tables, note=note, started=self._mark)
        self._mark = datetime.now(timezone.utc)
        return n


def start(cohort_dir: str | Path, model_specs: list[str], out_dir: str | Path,
          config: AuditConfig, flow: str = "audit", reference: str | None = None) -> RunContext:
    """Load the cohort and models, open the store and insert the ``running`` run row."""
    from audit.cohort import load_cohort
    from audit.hashing import HashCache
    from audit.models import create_model

    out_dir = Path(out_dir)
    models = [create_model(spec) for spec in model_specs]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise InputError(f"two --model specs share a name: {names}; give each a `name`")
    with progress.step("load cohort"):
        cohort = load_cohort(cohort_dir, hash_cache=HashCache.default())
    store = Store(out_dir / "audit.duckdb")
    identities = [_identity(m) for m in models]
    run_id = store.start_run(
        flow=flow, cohort_name=cohort.name, cohort_sha256=cohort.sha256,
        manifest_sha256=cohort.manifest_sha256, models=identities,
        config_json=config.canonical_json(), config_sha256=config.sha256(),
        synthetic=cohort.spec.synthetic, cohort_path=str(Path(cohort_dir).resolve()))
    return RunContext(store=store, run_id=run_id, out_dir=out_dir, config=config,
                      cohort=cohort, models=models, reference=reference)


def _load_results(c) -> pd.DataFrame:
    """What reading the manifest found, as ``validation_results`` rows (suite ``load``)."""
    q = c.quarantine
    rows = [{"suite": "load", "expectation": "expect_manifest_readable", "column_name": None,
             "severity": "critical", "success": True, "unexpected_count": 0,
             "details": json.dumps({"file": str(c.manifest_path), "manifest_rows": c.n_manifest_rows})}]
    by_col = q.groupby("column_name").size() if len(q) else pd.Series(dtype=int)
    for col, count in by_col.items():
        reasons = q.loc[q["column_name"] == col, "reason"].head(3).tolist()
        rows.append({"suite": "load", "expectation": "expect_values_to_parse", "column_name": col,
                     "severity": "error", "success": False, "unexpected_count": int(count),
                     "details": json.dumps({"examples": reasons, "rows":
                                            q.loc[q["column_name"] == col, "row_number"]
                                            .head(20).astype(int).tolist()})})
    if not len(q):
        rows.append({"suite": "load", "expectation": "expect_values_to_parse", "column_name": None,
                     "severity": "error", "success": True, "unexpected_count": 0,
                     "details": "{}"})
    return pd.DataFrame(rows)


def validate_stage(ctx: RunContext) -> int:
    """Validate the cohort (Great Expectations suites) and write what it found.

    One transaction holds the cohort's rows (``included`` false for every quarantined
    row), the suites' results, the per-image table, detections and the quarantine. A
    critical failure is written too, then stops the run before any model sees the data.
    """
    from audit.validation import validate_cohort

    c = ctx.cohort
    report = validate_cohort(c, progress=lambda items, total: progress.bar(
        items, total, "checking images"))
    quarantine = pd.concat([c.quarantine, report.quarantine], ignore_index=True)
    bad_ids = set(report.quarantine["photo_id"])
    good = c.frame
    cols = ["photo_id", "subject_id", "age", "sex", "race", "cancer_type", "site", "camera",
            "time", "event"]
    rows = good.reindex(columns=cols).copy()
    rows["included"] = ~good["photo_id"].isin(bad_ids).to_numpy()
    rows["row_number"] = good["_row"].values
    dropped = pd.DataFrame({"photo_id": c.quarantine["photo_id"],
                            "row_number": c.quarantine["row_number"], "included": False})
    frame = pd.concat([rows, dropped], ignore_index=True) if len(dropped) else rows
    for col in ["photo_id", "subject_id", "sex", "race", "cancer_type", "site", "camera"]:
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    tables = {"cohort_rows": frame,
              "validation_results": pd.concat([_load_results(c), report.results],
                                              ignore_index=True),
              "quarantine": quarantine}
    props = report.image_properties
    if props is not None and len(props):
        tables["image_properties"] = props.drop(columns=["subject_id", "_row", "_boxes"],
                                                errors="ignore")
        boxes = [{"photo_id": pid, "x": f["x"], "y": f["y"], "w": f["w"], "h": f["h"],
                  "confidence": f["confidence"], "landmarks": json.dumps(f["landmarks"])}
                 for pid, faces in zip(props["photo_id"], props["_boxes"])
                 if isinstance(faces, list) for f in faces]
        if boxes:
            tables["detections"] = pd.DataFrame(boxes)
    c.frame = good[~good["photo_id"].isin(bad_ids)].reset_index(drop=True)
    note = (f"{len(c.frame)} of {c.n_manifest_rows} rows go on; {len(quarantine)} quarantine "
            f"record(s); {report.errors} failed error check(s)")
    n = ctx.write("validate", tables, note=note)
    if report.critical or c.frame.empty:
        problems = report.critical or [f"{c.manifest_path}: no usable rows are left"]
        first = quarantine.iloc[0] if len(quarantine) else None
        example = (f" (first quarantined: {first['reason']})" if first is not None else "")
        raise InputError("; ".join(problems) + example)
    return n


def validation_verdict(ctx: RunContext) -> str:
    """The verdict of a validation run: ``fail`` when an error-severity check failed."""
    from audit.verdict import overall, validation_checks

    results = ctx.store.table("validation_results", ctx.run_id)
    q = ctx.store.query("SELECT count(DISTINCT photo_id) FROM quarantine WHERE run_id = ?",
                        [ctx.run_id]).iloc[0, 0]
    verdicts = validation_checks(results, ctx.cohort.n_manifest_rows, int(q),
                                 ctx.config.thresholds)
    ctx.write("verdict", {"verdicts": verdicts})
    return overall(verdicts)


@dataclass
class Shard:
    """A slice of the cohort for one image model, to predict on another process or machine."""

    model_spec: object  # ModelSpec
    cohort: object  # Cohort restricted to the shard's rows
    cached: tuple | None
    index: int


_WORKER_MODELS: dict[str, object] = {}


def plan_shards(ctx: RunContext, n_shards: int) -> list[Shard]:
    """Split every image model's photos into ``n_shards`` contiguous shards.

    The cache is consulted here, once, so a shard carries what it need not compute.
    """
    import dataclasses

    shards = []
    frame = ctx.cohort.frame
    bounds = np.linspace(0, len(frame), max(1, n_shards) + 1).astype(int)
    for model in ctx.models:
        if not hasattr(model, "cache_key"):
            continue
        key = model.cache_key(ctx.cohort)
        cached = ctx.store.cached_predictions(key, list(ctx.cohort.image_sha256.values()))
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            if b > a:
                part = dataclasses.replace(ctx.cohort, frame=frame.iloc[a:b].reset_index(drop=True))
                shards.append(Shard(model.spec, part, cached, i))
    return shards


def _kill_shard_once(index: int) -> None:
    """Crash the worker process on a shard's first attempt, when a test asks
    (``FACEAGE_AUDIT_KILL_SHARD=INDEX:MARKER_FILE``): the marker makes the retry succeed."""
    import os

    spec = os.environ.get("FACEAGE_AUDIT_KILL_SHARD")
    if not spec:
        return
    wanted, marker = spec.split(":", 1)
    if int(wanted) == index and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
        os._exit(1)


def run_shard(shard: Shard):
    """Predict one shard; the model is loaded once per worker process and reused."""
    import os
    import socket

    _kill_shard_once(shard.index)
    model = _worker_model(shard.model_spec)

    result = model.predict(shard.cohort, cached=shard.cached, progress=lambda items, total: items)
    result.worker = f"{socket.gethostname()}:{os.getpid()}"
    return result


def _merge(parts: list) -> object:
    """One Predictions from a model's shard results (in shard order)."""
    from audit.models.registry import Predictions

    def cat(name):
        frames = [getattr(p, name) for p in parts if getattr(p, name) is not None
                  and len(getattr(p, name))]
        return pd.concat(frames, ignore_index=True) if frames else None

    computed = sum(p.n_computed for p in parts)
    from_cache = sum(p.n_cached for p in parts)
    workers = sorted({p.worker for p in parts if p.worker})
    return Predictions(frame=cat("frame"), embeddings=cat("embeddings"),
                       quarantine=cat("quarantine"), cache_values=cat("cache_values"),
                       cache_vectors=cat("cache_vectors"),
                       n_cached=from_cache, n_computed=computed,
                       notes=[f"{len(parts)} shards on {len(workers)} worker process(es) "
                              f"({', '.join(workers)}); {from_cache} photos from the prediction "
                              f"cache, {computed} computed"])


def predict_stage(ctx: RunContext, shard_results: list | None = None) -> int:
    """Predictions of every model (clean pass: perturbation ``none``, severity 0).

    ``shard_results``: ``(shard, Predictions)`` pairs computed elsewhere (the Dask runner);
    image models then take their predictions from there and only this process writes.
    """
    by_model: dict[str, list] = {}
    for shard, result in sorted(shard_results or [], key=lambda pair: pair[0].index):
        by_model.setdefault(shard.model_spec.name, []).append(result)
    total, quarantined, embeddings, checks, caches = [], [], [], [], []
    for model in ctx.models:
        if model.needs_images and not ctx.cohort.has_images:
            raise InputError(f"{ctx.cohort.root}: model {model.name!r} needs images, and the "
                             "cohort has no image_path column")
        if hasattr(model, "cache_key"):  # image models: reuse what the cache already has
            key = model.cache_key(ctx.cohort)
            if model.name in by_model:
                preds = _merge(by_model[model.name])
            else:
                cached = ctx.store.cached_predictions(key, list(ctx.cohort.image_sha256.values()))
                preds = model.predict(ctx.cohort, cached=cached)
            if preds.cache_values is not None and len(preds.cache_values):
                caches.append(("prediction_cache", preds.cache_values.assign(model_key=key)))
            if preds.cache_vectors is not None and len(preds.cache_vectors):
                caches.append(("embedding_cache", preds.cache_vectors.assign(model_key=key)))
        else:
            preds = model.predict(ctx.cohort)
        already = set(preds.quarantine["photo_id"]) if preds.quarantine is not None else set()
        checked, failed = _check_predictions(ctx, model, preds.frame, already)
        ctx.predictions[model.name] = preds.frame[~preds.frame["photo_id"].isin(failed)]
        total.append(preds.frame)
        checks.append(checked.results)
        if len(checked.quarantine):
            quarantined.append(checked.quarantine)
        if preds.quarantine is not None and len(preds.quarantine):
            quarantined.append(preds.quarantine)
        if preds.embeddings is not None and len(preds.embeddings):
            embeddings.append(preds.embeddings)
        for n in preds.notes:
            ctx.note("predictions", f"{model.name}: {n}")
    tables = {"predictions": pd.concat(total, ignore_index=True)}
    if quarantined:
        tables["quarantine"] = pd.concat(quarantined, ignore_index=True)
    if embeddings:
        tables["embeddings"] = pd.concat(embeddings, ignore_index=True)
    tables["validation_results"] = pd.concat(checks, ignore_index=True)
    for name in ("prediction_cache", "embedding_cache"):
        parts = [frame for table, frame in caches if table == name]
        if parts:
            tables[name] = pd.concat(parts, ignore_index=True)
    return ctx.write("predictions", tables,
                     note="; ".join(ctx.notes.get("predictions", [])) or None)


def _check_predictions(ctx: RunContext, model, frame: pd.DataFrame, already: set):
    """The predictions suite on one model's clean predictions, for the photos the model did
    not already set aside (``already``); returns (result, ids that failed)."""
    from audit.validation import validate_predictions

    clean = frame[frame["perturbation"] == "none"]
    wide = clean.pivot_table(index="photo_id", columns="output", values="value",
                             aggfunc="first").reset_index()
    rows = ctx.cohort.frame[["photo_id", "_row"]]
    rows = rows[~rows["photo_id"].isin(already)]
    wide = rows.merge(wide, on="photo_id", how="left")
    override = ((ctx.cohort.root / ctx.cohort.spec.expectations)
                if ctx.cohort.spec.expectations else None)
    result = validate_predictions(wide, model.name, str(ctx.cohort.manifest_path), override)
    return result, set(result.quarantine["photo_id"])


def _wide(ctx: RunContext, model) -> pd.DataFrame:
    """The cohort's good rows with this model's clean predictions as columns."""
    preds = ctx.predictions[model.name]
    clean = preds[preds["perturbation"] == "none"]
    wide = clean.pivot_table(index="photo_id", columns="output", values="value", aggfunc="first")
    base = ctx.cohort.frame.drop(columns=[c for c in ("faceage", "risk")
                                          if c in ctx.cohort.frame.columns])
    return base.merge(wide, left_on="photo_id", right_index=True, how="inner")


def _one_per_subject(ctx: RunContext, frame: pd.DataFrame) -> pd.DataFrame:
    first = ctx.cohort.subjects()["photo_id"]
    return frame[frame["photo_id"].isin(set(first))].reset_index(drop=True)


def accuracy_stage(ctx: RunContext) -> int:
    """Accuracy of each model output with subject-level bootstrap CIs."""
    from audit.accuracy import faceage_accuracy, risk_accuracy

    parts = []
    for model in progress.track(ctx.models, "accuracy"):
        wide = _wide(ctx, model)
        if "faceage" in model.outputs:
            if "age" in wide.columns:
                parts.append(faceage_accuracy(wide, model.name, ctx.config.accuracy))
            else:
                ctx.note("accuracy", f"{model.name}: no chronological age, FaceAge error not computed")
        if "risk" in model.outputs:
            if ctx.cohort.has_outcomes:
                parts.append(risk_accuracy(_one_per_subject(ctx, wide), model.name,
                                           ctx.config.accuracy, ctx.config.survival))
            else:
                ctx.note("accuracy", f"{model.name}: no outcomes, risk C-index not computed")
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return ctx.write("accuracy", {"accuracy": frame},
                                 note="; ".join(ctx.notes.get("accuracy", [])) or None)


def fairness_stage(ctx: RunContext) -> int:
    """Subgroup fairness of every model output, survival within subgroups, paired model
    comparisons and the cohort's representativeness, in one transaction."""
    from audit.fairness import faceage_fairness, paired_comparisons, risk_fairness
    from audit.representativeness import representativeness
    from audit.survival_fairness import survival_subgroups

    cfg = ctx.config.fairness
    if not cfg.enabled:
        ctx.note("fairness", "fairness not run: turned off in the audit config")
        return ctx.write("fairness", {}, note=ctx.notes["fairness"][0])
    cuts = ctx.config.accuracy.age_bands
    min_events = ctx.config.survival.min_events
    tables: dict[str, list] = {k: [] for k in ("fairness", "survival_subgroups",
                                               "survival_tests", "representativeness",
                                               "comparisons")}
    if cfg.intended_population:
        tables["representativeness"].append(
            representativeness(ctx.cohort.subjects(), cfg.intended_population, cuts))
    else:
        ctx.note("fairness", "no intended-use population in the config "
                             "(fairness.intended_population): representativeness not tested")
    by_output: dict[str, dict] = {"faceage": {}, "risk": {}}
    for model in progress.track(ctx.models, "fairness"):
        wide = _wide(ctx, model)
        subjects = _one_per_subject(ctx, wide)
        if "faceage" in model.outputs and "age" in wide.columns:
            tables["fairness"].append(faceage_fairness(wide, model.name, cfg, cuts))
            by_output["faceage"][model.name] = wide
        if "risk" in model.outputs and ctx.cohort.has_outcomes:
            tables["fairness"].append(risk_fairness(subjects, model.name, cfg, cuts, min_events))
            by_output["risk"][model.name] = subjects
        if ctx.cohort.has_outcomes:
            rows, tests = survival_subgroups(subjects, model.name, model.outputs, cfg,
                                             min_events, cuts)
            tables["survival_subgroups"].append(rows)
            tables["survival_tests"].append(tests)
    for output, frames in by_output.items():
        if len(frames) >= 2:
            tables["comparisons"].append(paired_comparisons(frames, output, cfg, cuts, min_events))
    merged = {k: pd.concat([f for f in v if len(f)], ignore_index=True)
              for k, v in tables.items() if any(len(f) for f in v)}
    fair = merged.get("fairness")
    if fair is not None:
        flagged = fair[fair["status"] == "flagged"]
        ctx.note("fairness", f"{len(fair)} subgroup rows, {len(flagged)} flagged "
                             f"({(flagged['metric'].isin(cfg.verdict_metrics)).sum()} on the "
                             "verdict's metrics)")
    return ctx.write("fairness", merged, note="; ".join(ctx.notes.get("fairness", [])) or None)


def survival_stage(ctx: RunContext) -> int:
    """First survival models of each model's outputs (one photo per subject)."""
    from audit.survival import survival_analysis

    tables: dict[str, list] = {}
    for model in progress.track(ctx.models, "survival"):
        subjects = _one_per_subject(ctx, _wide(ctx, model))
        result = survival_analysis(subjects, model.name, model.outputs,
                                   ctx.cohort.spec.covariates, ctx.config.survival,
                                   ctx.config.accuracy.age_bands)
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
    merged = {k: pd.concat([f.dropna(axis=1, how="all") for f in v if len(f)] or v[:1],
                           ignore_index=True) for k, v in tables.items()}
    return ctx.write("survival", merged,
                                 note=" ".join(ctx.notes.get("survival", [])) or None)


def _face_aging_rate(ctx: RunContext, model, tables: dict) -> None:
    """Face Aging Rate from serial photos (every photo of the subject, not only the first)."""
    from audit.longitudinal import far_models
    from audit.survival import MODEL_COLUMNS, METRIC_COLUMNS, TERM_COLUMNS

    photos = _wide(ctx, model)
    if "photo_date" not in photos.columns or not photos["subject_id"].duplicated().any():
        return
    models, terms, metrics, notes = far_models(
        photos, model.name, ctx.config.survival,
        np.random.default_rng(ctx.config.survival.seed),
        min_subjects=ctx.config.fairness.min_group_size)
    for note in notes:
        ctx.note("survival", f"{model.name}: {note}" if len(ctx.models) > 1 else note)
    for name, rows, cols in (("survival_models", models, MODEL_COLUMNS),
                             ("survival_terms", terms, TERM_COLUMNS),
                             ("survival_metrics", metrics, METRIC_COLUMNS)):
        if rows:
            tables.setdefault(name, []).append(pd.DataFrame(rows, columns=cols))


def _incremental(ctx: RunContext) -> dict:
    """Clinical model vs + FaceAge (the first model with it) vs + the risk score (the first
    model with it), on the subjects both predicted."""
    from audit.incremental import incremental_value

    face = next((m for m in ctx.models if "faceage" in m.outputs), None)
    risk = next((m for m in ctx.models if "risk" in m.outputs), None)
    if face is None and risk is None:
        return {}
    base = None
    for m, column in ((face, "faceage"), (risk, "risk")):
        if m is None:
            continue
        wide = _one_per_subject(ctx, _wide(ctx, m))
        if base is None:
            base = wide.drop(columns=[c for c in ("faceage", "risk") if c != column
                                      and c in wide.columns])
        else:
            base = base.merge(wide[["photo_id", column]], on="photo_id", how="inner")
    if base is None or base["event"].isna().all() or base["event"].sum() < ctx.config.survival.min_events:
        return {}
    try:
        result = incremental_value(base, ctx.cohort.spec.covariates,
                                   faceage_model=face.name if face else None,
                                   risk_model=risk.name if risk else None,
                                   n_boot=ctx.config.survival.n_boot,
                                   seed=ctx.config.survival.seed,
                                   penalizer=ctx.config.survival.penalizer)
    except Exception as exc:  # a fit that fails is reported, the stage goes on
        ctx.note("survival", f"incremental value not computed: {type(exc).__name__}: {exc}")
        return {}
    for note in result.pop("notes"):
        ctx.note("survival", note)
    return result


def _identity(model) -> dict:
    """What the run records of a model: name, kind, digests, card, outputs and, for image
    models, the spec with the checkpoint's absolute path (so that a report rendered on site
    with --show-faces can run it on a few photos again)."""
    ident = dict(model.identity(), outputs=model.outputs)
    if getattr(model, "checkpoint", None) is not None:
        spec = model.spec.model_dump(mode="json")
        spec["checkpoint"] = str(Path(model.checkpoint).resolve())
        ident["spec"] = spec
    return ident


def _image_models(ctx: RunContext) -> list:
    return [m for m in ctx.models if m.needs_images and hasattr(m, "cache_key")]


@dataclass
class RobustnessSetup:
    """What the robustness stage runs: the sampled photos, the plan, the face layout and
    what the prediction cache already holds (by model name)."""

    models: list
    subjects: pd.DataFrame
    sample: pd.DataFrame
    plan: list
    layout: object
    cached: dict


@dataclass
class RobustnessShard:
    """A slice of the robustness sample for every image model, to run on another process."""

    model_specs: list  # ModelSpec
    cohort: object  # Cohort
    rows: pd.DataFrame
    plan: list
    layout: object
    seed: int
    cached: dict
    batch_size: int | None
    index: int


def robustness_setup(ctx: RunContext) -> RobustnessSetup | str:
    """The run's robustness sample and plan (deterministic for the config's seed), or the
    reason it does not run."""
    from audit.cohort import age_band
    from audit.perturbations import default_plan, face_layout
    from audit.robustness import CLEAN, perturbation_key, stratified_sample

    cfg = ctx.config.robustness
    models = _image_models(ctx)
    reason = ("turned off in the audit config" if not cfg.enabled else
              "the cohort carries predictions, not photos" if not ctx.cohort.has_images else
              "no model reads images" if not models else None)
    if reason:
        return reason
    subjects = ctx.cohort.subjects()
    usable = set.intersection(*(set(ctx.predictions[m.name]["photo_id"]) for m in models))
    subjects = subjects[subjects["photo_id"].isin(usable)].reset_index(drop=True)
    if "age" in subjects.columns:
        subjects["age_band"] = age_band(subjects["age"], ctx.config.accuracy.age_bands)
    sample = stratified_sample(subjects, cfg.sample_subjects, cfg.strata,
                               np.random.default_rng(cfg.seed)).reset_index(drop=True)
    layout = face_layout(cfg.face_layout or ctx.cohort.spec.face_layout
                         or ("arcface" if ctx.cohort.spec.cropped else "aligned"))
    plan = default_plan(cfg.perturbations or None, cfg.severities)
    keys = [perturbation_key(name, cfg.seed, layout)
            for name in [CLEAN] + sorted({name for name, _ in plan})]
    shas = sample["image_path"].map(ctx.cohort.image_sha256).tolist()
    cached = {m.name: ctx.store.cached_values(m.cache_key(ctx.cohort), shas, keys)
              for m in models}
    return RobustnessSetup(models, subjects, sample, plan, layout, cached)


def plan_robustness_shards(ctx: RunContext, n_shards: int) -> list[RobustnessShard]:
    """The robustness sample in ``n_shards`` contiguous slices, each for all image models
    (so that a worker decodes each of its photos once)."""
    import dataclasses

    setup = robustness_setup(ctx)
    if isinstance(setup, str):
        return []
    cfg = ctx.config.robustness
    sample = setup.sample
    bounds = np.linspace(0, len(sample), max(1, n_shards) + 1).astype(int)
    shards = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b <= a:
            continue
        rows = sample.iloc[a:b].reset_index(drop=True)
        part = dataclasses.replace(ctx.cohort, frame=ctx.cohort.frame[
            ctx.cohort.frame["photo_id"].isin(set(rows["photo_id"]))].reset_index(drop=True))
        shas = set(rows["image_path"].map(ctx.cohort.image_sha256))
        cached = {k: v[v["image_sha256"].isin(shas)] for k, v in setup.cached.items()}
        shards.append(RobustnessShard([m.spec for m in setup.models], part, rows, setup.plan,
                                      setup.layout, cfg.seed, cached, cfg.batch_size, i))
    return shards


def _worker_model(spec):
    """A model built once per worker process and reused by every shard it runs."""
    from audit.models import create_model

    key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    model = _WORKER_MODELS.get(key)
    if model is None:
        model = _WORKER_MODELS[key] = create_model(spec)
    return model


def run_robustness_shard(shard: RobustnessShard) -> dict:
    """One robustness shard on a (Dask) worker: ``{model name: SuiteResult}``."""
    import os
    import socket

    from audit.robustness import run_suite

    models = [_worker_model(spec) for spec in shard.model_specs]
    results = run_suite(models, shard.cohort, shard.rows, shard.plan, layout=shard.layout,
                        seed=shard.seed, cached=shard.cached, batch_size=shard.batch_size)
    for r in results.values():
        r.worker = f"{socket.gethostname()}:{os.getpid()}"
    return results


def _merge_suites(parts: list[dict]) -> dict:
    """One SuiteResult per model from the shards' results (in shard order)."""
    from audit.robustness import SuiteResult

    merged = {}
    for name in parts[0]:
        rs = [p[name] for p in parts]
        merged[name] = SuiteResult(
            frame=pd.concat([r.frame for r in rs], ignore_index=True),
            cache_values=pd.concat([r.cache_values for r in rs], ignore_index=True),
            n_computed=sum(r.n_computed for r in rs), n_cached=sum(r.n_cached for r in rs),
            seconds=sum(r.seconds for r in rs), shared_with=rs[0].shared_with,
            device=rs[0].device, worker=", ".join(sorted({r.worker for r in rs if r.worker})))
    return merged


def robustness_stage(ctx: RunContext, shard_results: list | None = None) -> int:
    """Graded perturbations on a stratified sample of subjects (one photo each): perturbed
    predictions, their cache rows and the ``robustness`` metrics, in one transaction.

    ``shard_results``: ``(shard, {model: SuiteResult})`` pairs computed elsewhere (the Dask
    runner); only this process writes.
    """
    from audit.robustness import CLEAN, robustness_table, run_suite

    cfg = ctx.config.robustness
    setup = robustness_setup(ctx)
    if isinstance(setup, str):
        ctx.note("robustness", f"robustness not run: {setup}")
        return ctx.write("robustness", {}, note=ctx.notes["robustness"][0])
    sample = setup.sample
    ctx.note("robustness", f"{len(sample)} of {len(setup.subjects)} subjects (stratified by "
                           f"{', '.join(cfg.strata)}), {len(setup.plan)} perturbation levels")
    if shard_results:
        parts = [r for _, r in sorted(shard_results, key=lambda pair: pair[0].index)]
        results = _merge_suites(parts)
        ctx.note("robustness", f"{len(parts)} shards on worker process(es) "
                               f"{next(iter(results.values())).worker}")
    else:
        results = run_suite(setup.models, ctx.cohort, sample, setup.plan, layout=setup.layout,
                            seed=cfg.seed, cached=setup.cached, batch_size=cfg.batch_size,
                            progress=lambda items, total: progress.bar(items, total, "robustness"))
    attributes = sample[["photo_id"] + [c for c in cfg.groups if c in sample.columns]]
    tables: dict[str, list] = {"robustness": [], "predictions": [], "prediction_cache": []}
    for model in setup.models:
        result = results[model.name]
        tables["robustness"].append(robustness_table(result.frame, attributes, cfg,
                                                     ctx.config.thresholds))
        tables["predictions"].append(result.frame[result.frame["perturbation"] != CLEAN])
        if len(result.cache_values):
            tables["prediction_cache"].append(
                result.cache_values.assign(model_key=model.cache_key(ctx.cohort)))
        ctx.note("robustness", f"{model.name}: {len(sample)} photos x {len(setup.plan) + 1} "
                               f"passes ({len(setup.plan)} perturbation levels and the clean "
                               f"one): {result.n_computed} computed, {result.n_cached} from "
                               "the prediction cache")
    for r in {tuple(r.shared_with): r for r in results.values()}.values():
        ctx.note("robustness", f"each photo decoded once for {' and '.join(r.shared_with)}, "
                               f"the perturbed run took {r.seconds:.1f} s on {r.device}")
    merged = {k: pd.concat(v, ignore_index=True) for k, v in tables.items() if v}
    return ctx.write("robustness", merged, note="; ".join(ctx.notes["robustness"]))


def saliency_stage(ctx: RunContext) -> int:
    """Where each image model looks (:mod:`audit.saliency`): attribution maps on a sample
    (``sample_per_group`` photos per group, one per subject), kept only as cohort and
    subgroup means over at least ``min_faces`` photos, region shares with bootstrap CIs,
    comparisons between models, and the randomised-weights sanity check; one transaction."""
    import time

    import torch

    from audit import saliency as sal
    from audit.cohort import age_band
    from audit.inference import best_device, iter_decoded, to_unit
    from audit.perturbations import face_layout

    cfg = ctx.config.saliency
    models = _image_models(ctx)
    reason = ("off (the default: it costs more forward passes than the robustness suite); "
              "turn it on with [saliency] enabled = true or --saliency" if not cfg.enabled else
              "the cohort carries predictions, not photos" if not ctx.cohort.has_images else
              "no model reads images" if not models else None)
    if reason:
        return ctx.write("saliency", {}, note=f"saliency not run: {reason}")
    subjects = ctx.cohort.subjects()
    usable = set.intersection(*(set(ctx.predictions[m.name]["photo_id"]) for m in models))
    subjects = subjects[subjects["photo_id"].isin(usable)].reset_index(drop=True)
    if "age" in subjects.columns:
        subjects["age_band"] = age_band(subjects["age"], ctx.config.accuracy.age_bands)
    rng = np.random.default_rng(cfg.seed)
    sample = sal.group_sample(subjects, cfg.sample_per_group, cfg.groups, rng)
    sample = sample.reset_index(drop=True)
    layout = face_layout(cfg.face_layout or ctx.config.robustness.face_layout
                         or ctx.cohort.spec.face_layout
                         or ("arcface" if ctx.cohort.spec.cropped else "aligned"))
    methods = sal.configured_methods(cfg.methods or sal.list_attributions(), window=cfg.window,
                                     stride=cfg.stride, ig_steps=cfg.ig_steps)
    device = best_device()
    batch = cfg.batch_size or (64 if device.startswith("cuda") else 16)
    paths = [ctx.cohort.image_file(p) for p in sample["image_path"]]
    groups = sample[[g for g in cfg.groups if g in sample.columns]]
    ctx.note("saliency", f"{len(sample)} photos of {len(subjects)} subjects ({cfg.sample_per_group}"
                         f" per group of {', '.join(groups.columns) or 'the cohort'}), region "
                         f"template of face layout {cfg.face_layout or ctx.cohort.spec.face_layout or 'default'}")
    sets: list[sal.MapSet] = []
    maps_rows: list[dict] = []
    targets_all: dict[tuple[str, str], sal.Target] = {}
    for size in sorted({m.input_size for m in models}):
        targets = [t for m in models if m.input_size == size
                   for t in sal.model_targets(m, device)]
        targets_all.update({(t.model, t.output): t for t in targets})
        failed = np.zeros(len(paths), dtype=bool)
        face_sum = np.zeros((size, size, 3))

        def batches():
            for idx, images, errs in iter_decoded(paths, size, device=device, batch_size=batch,
                                                  align=not ctx.cohort.spec.cropped):
                bad = np.array([bool(e) for e in errs], dtype=bool)
                failed[np.asarray(idx)[bad]] = True
                good = torch.from_numpy(~bad).to(images.device)
                face_sum[:] += images[good].double().sum(0).cpu().numpy()
                yield idx.numpy(), to_unit(images)

        result = sal.attribute_maps(targets, methods, progress.bar(
            batches(), (len(paths) + batch - 1) // batch, f"saliency ({size} px)"))
        template = sal.region_template(layout, size)
        n_ok = int((~failed).sum())
        if n_ok >= cfg.min_faces:  # the average face of the sample: the maps' backdrop
            maps_rows.append({"model": None, "output": None, "method": "mean_face",
                              "attribute": "all", "group_name": "all", "n": n_ok,
                              "height": size, "width": size,
                              "map": (face_sum / n_ok).astype(np.float32).ravel().tolist()})
        maps_rows.append({"model": None, "output": None, "method": "region_template",
                          "attribute": "all", "group_name": ",".join(sal.REGIONS), "n": 0,
                          "height": size, "width": size,
                          "map": template.astype(np.float32).ravel().tolist()})
        for (model, output, method), (parts, seconds) in result.items():
            order = np.concatenate([i for i, _ in parts])
            maps = np.concatenate([m for _, m in parts])[np.argsort(order, kind="stable")]
            keep = ~failed
            sets.append(sal.MapSet(model, output, method, sal.normalise(maps[keep]),
                                   sample["photo_id"].to_numpy()[keep],
                                   sample["subject_id"].to_numpy()[keep], seconds,
                                   {"template": template, "keep": keep}))
    timings: dict[tuple[str, str], list[str]] = {}
    for ms in sets:
        timings.setdefault((ms.model, ms.output), []).append(f"{ms.method} {ms.seconds:.1f} s")
    for (model, output), parts in timings.items():
        ctx.note("saliency", f"{model} {output}: {', '.join(parts)} on {device}")
    shares, checks = [], []
    for ms in sets:
        s_rows, m_rows = sal.cohort_rows(ms, groups[ms.extra["keep"]].reset_index(drop=True),
                                         ms.extra["template"], min_faces=cfg.min_faces,
                                         n_boot=cfg.n_boot, ci_level=cfg.ci_level, rng=rng)
        shares += s_rows
        maps_rows += m_rows
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            if a.method == b.method and (a.model, a.output) != (b.model, b.output) \
                    and a.maps.shape[1:] == b.maps.shape[1:]:
                checks += sal.compare(a, b, a.extra["template"], n_boot=cfg.n_boot,
                                      ci_level=cfg.ci_level, fraction=cfg.top_fraction, rng=rng)
    start = time.perf_counter()
    decoded: dict[tuple, object] = {}
    randomised: dict[tuple[str, str], sal.Target] = {}
    for ms in sets:
        target = targets_all[(ms.model, ms.output)]
        if not target.differentiable:
            ctx.note("saliency", f"{ms.model} {ms.output} {ms.method}: no randomised-weights "
                                 "check (it needs the model's weights in torch)")
            continue
        k = min(cfg.sanity_photos, len(ms.maps))
        first = np.flatnonzero(ms.extra["keep"])[:k]  # the photos of ms.maps[:k]
        key = (target.size, tuple(first))
        if key not in decoded:  # once per input size, not once per method
            decoded[key] = _decode_sample([paths[i] for i in first], target.size, device,
                                          not ctx.cohort.spec.cropped)
        x = decoded[key]
        if (ms.model, ms.output) not in randomised:
            randomised[(ms.model, ms.output)] = sal.randomized_target(target, seed=cfg.seed)
        random = randomised[(ms.model, ms.output)]
        rand_maps = sal.normalise(np.asarray(methods[ms.method](random, x), dtype=np.float64))
        rho = sal.spearman_maps(ms.maps[:k].mean(axis=0), rand_maps.mean(axis=0))
        checks.append({"check_name": "randomized_weights_spearman", "model": ms.model,
                       "output": ms.output, "method": ms.method, "other_model": None,
                       "other_output": None, "value": rho, "ci_low": None, "ci_high": None,
                       "threshold": cfg.sanity_spearman_max,
                       "passed": bool(rho < cfg.sanity_spearman_max), "n": k,
                       "details": f"cohort map of {k} photos against the same model with every "
                                  "weight redrawn (Adebayo et al. 2018)"})
    ctx.note("saliency", f"randomised-weights checks: {time.perf_counter() - start:.1f} s")
    failed_checks = [c for c in checks if c["passed"] is False]
    for c in failed_checks:
        ctx.note("saliency", f"{c['model']} {c['output']} {c['method']}: its map barely changes "
                             f"when the weights are randomised (Spearman {c['value']:.2f}), so "
                             "read it with caution")
    tables = {"saliency": pd.DataFrame(shares), "saliency_maps": pd.DataFrame(maps_rows),
              "saliency_checks": pd.DataFrame(checks)}
    return ctx.write("saliency", tables, note="; ".join(ctx.notes["saliency"]))


def _decode_sample(paths: list, size: int, device: str, align: bool):
    """The first photos of the saliency sample as one [0, 1] batch on ``device``."""
    import torch

    from audit.inference import iter_decoded, to_unit

    parts = [to_unit(images) for _, images, _ in iter_decoded(
        paths, size, device=device, batch_size=len(paths) or 1, workers=0, align=align)]
    return torch.cat(parts)


def _run_frame(store: Store, run_id: str, models: list[str]) -> pd.DataFrame:
    """One row per included photo of a run: its standard columns, image properties and each
    model's clean predictions (``<model>:<output>``)."""
    rows = store.table("cohort_rows", run_id)
    rows = rows[rows["included"].astype(bool)].drop(columns=["included"])
    props = store.table("image_properties", run_id)
    if len(props):
        from audit.drift import IMAGE_NUMERIC

        keep = ["photo_id"] + [c for c in IMAGE_NUMERIC if c in props.columns]
        rows = rows.merge(props[keep], on="photo_id", how="left")
    # the clean pass only (a run also stores its perturbed predictions)
    preds = store.query("SELECT photo_id, model, output, value FROM predictions "
                        "WHERE run_id = ? AND perturbation = 'none'", [run_id])
    preds = preds[preds["model"].isin(models)]
    if len(preds):
        wide = preds.assign(col=preds["model"] + ":" + preds["output"]).pivot_table(
            index="photo_id", columns="col", values="value", aggfunc="first")
        rows = rows.merge(wide, left_on="photo_id", right_index=True, how="left")
    return rows


def _covariate_features(ctx: RunContext, ref: str, reference: pd.DataFrame,
                        current: pd.DataFrame) -> dict:
    """The cohort's clinical covariates as metadata features: read from this cohort and from
    the reference run's cohort folder (when it is still there; the store keeps only the
    standard columns)."""
    from audit.cohort import load_cohort
    from audit.hashing import HashCache

    covs = ctx.cohort.spec.covariates
    if not covs:
        return {}
    path = ctx.store.run(ref).get("cohort_path")
    try:
        ref_cohort = load_cohort(path, hash_cache=HashCache.default())
    except Exception as exc:  # moved or gone: say so, compare the rest
        ctx.note("drift", f"covariates not compared: the reference cohort folder {path} "
                          f"cannot be read ({type(exc).__name__})")
        return {}
    names = [c.name for c in covs if c.name in ref_cohort.frame.columns]
    if not names:
        return {}
    ref_cov = ref_cohort.frame[["photo_id"] + names]
    cur_cov = ctx.cohort.frame[["photo_id"] + names]
    out = {c.name: (c.name, "metadata", "num" if c.type == "numeric" else "cat", None)
           for c in covs if c.name in names}
    out["_frames"] = (reference.merge(ref_cov, on="photo_id", how="left"),
                      current.merge(cur_cov, on="photo_id", how="left"))
    return out


def drift_stage(ctx: RunContext) -> int:
    """The cohort against the reference run (``--reference``): metadata, image properties,
    predictions, embeddings and model quality; evidently's HTML kept as an artifact."""
    from audit.drift import (
        IMAGE_NUMERIC, METADATA_CATEGORICAL, METADATA_NUMERIC, decide, embedding_drift,
        feature_drift, quality_change,
    )
    from audit.hashing import sha256_file

    cfg = ctx.config.drift
    ref = ctx.reference
    if ref is None:
        ctx.note("drift", "no reference given (--reference): drift not measured")
        return ctx.write("drift", {}, note=ctx.notes["drift"][0])
    if ref == ctx.run_id or ctx.store.run(ref)["status"] != "finished":
        raise InputError(f"--reference {ref}: not a finished earlier run in {ctx.store.path}")
    names = [m.name for m in ctx.models]
    reference, current = _run_frame(ctx.store, ref, names), _run_frame(ctx.store, ctx.run_id, names)
    covariates = _covariate_features(ctx, ref, reference, current)
    if covariates:
        reference, current = covariates.pop("_frames")
    features = ([(c, "metadata", "num", None) for c in METADATA_NUMERIC]
                + list(covariates.values())
                + [(c, "metadata", "cat", None) for c in METADATA_CATEGORICAL]
                + [(c, "images", "num", None) for c in IMAGE_NUMERIC]
                + [(f"{m.name}:{o}", "predictions", "num", m.name) for m in ctx.models
                   for o in m.outputs])
    rows, snapshot = feature_drift(reference, current, features)
    for model in ctx.models:
        vectors = [ctx.store.query("SELECT vector FROM embeddings WHERE run_id = ? AND model = ?",
                                   [r, model.name])["vector"] for r in (ref, ctx.run_id)]
        if all(len(v) > 10 for v in vectors):
            rows.append(embedding_drift(np.stack(vectors[0].to_numpy()),
                                        np.stack(vectors[1].to_numpy()), model.name, cfg))
    rows.extend(quality_change(ctx.store.table("accuracy", ref),
                               ctx.store.table("accuracy", ctx.run_id)))
    frame = decide(rows, cfg).assign(reference=ref)
    frame["feature"] = frame["feature"].str.split(":").str[-1].where(
        frame["kind"] == "predictions", frame["feature"])
    tables = {"drift": frame}
    if snapshot is not None and cfg.html:
        path = ctx.out_dir / "runs" / ctx.run_id / "drift.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))
        tables["artifacts"] = pd.DataFrame([{"kind": "evidently_html",
                                             "path": str(path.relative_to(ctx.out_dir)),
                                             "sha256": sha256_file(path)}])
    drifted = frame[frame["drifted"]]
    ctx.note("drift", f"against run {ref}: {len(frame)} features, {len(drifted)} drifted"
             + (f" ({', '.join(drifted['feature'])})" if len(drifted) else ""))
    return ctx.write("drift", tables, note="; ".join(ctx.notes["drift"]))


def verdict_stage(ctx: RunContext) -> str:
    """Checks against the config's thresholds, read back from this run's tables."""
    from audit.verdict import evaluate, overall

    q = ctx.store.query("SELECT count(DISTINCT photo_id) FROM quarantine WHERE run_id = ?",
                        [ctx.run_id]).iloc[0, 0]
    verdicts = evaluate(
        models=[{"name": m.name, "outputs": m.outputs, "needs_images": m.needs_images}
                for m in ctx.models],
        n_manifest_rows=ctx.cohort.n_manifest_rows, n_quarantined=int(q),
        accuracy=ctx.store.table("accuracy", ctx.run_id),
        survival_terms=ctx.store.table("survival_terms", ctx.run_id),
        robustness=ctx.store.table("robustness", ctx.run_id),
        fairness=ctx.store.table("fairness", ctx.run_id),
        drift=ctx.store.table("drift", ctx.run_id),
        representativeness=ctx.store.table("representativeness", ctx.run_id),
        fairness_metrics=ctx.config.fairness.verdict_metrics,
        has_outcomes=ctx.cohort.has_outcomes, thresholds=ctx.config.thresholds)
    ctx.write("verdict", {"verdicts": verdicts})
    return overall(verdicts)


def publish_stage(ctx: RunContext, verdict: str) -> Path:
    """Render the run's page, verdict.json and the index over runs; record them as artifacts."""
    from audit.report import render_run, render_index

    from audit.dossier import build_manifest
    from audit.hashing import sha256_file

    paths = render_run(ctx.store, ctx.run_id, ctx.out_dir, final_verdict=verdict)
    earlier = ctx.store.table("artifacts", ctx.run_id)[["kind", "path", "sha256"]]
    manifest = build_manifest(ctx.store.run(ctx.run_id), ctx.cohort, ctx.models, ctx.out_dir,
                              pd.concat([earlier, paths]).to_dict("records"))
    paths = pd.concat([paths, pd.DataFrame([{
        "kind": "run_manifest", "path": str(manifest.relative_to(ctx.out_dir)),
        "sha256": sha256_file(manifest)}])], ignore_index=True)
    ctx.write("publish", {"artifacts": paths})
    ctx.store.finish_run(ctx.run_id, verdict)
    render_index(ctx.store, ctx.out_dir)
    return ctx.out_dir / "runs" / ctx.run_id / "index.html"


@contextlib.contextmanager
def running(ctx: RunContext):
    """Heartbeat while the block runs; on any error mark the run ``failed`` and re-raise."""
    with ctx.store.heartbeating(ctx.run_id):
        try:
            yield
        except BaseException as exc:
            fail(ctx, exc)
            raise


def fail(ctx: RunContext, exc: BaseException) -> None:
    """Mark the run ``failed`` with its reason (the stages' rows stay whole or absent)."""
    detail = str(exc) if isinstance(exc, InputError) else "".join(
        traceback.format_exception_only(type(exc), exc)).strip()
    ctx.store.fail_run(ctx.run_id, detail)
