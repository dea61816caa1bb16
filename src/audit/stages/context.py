"""What the stages of one run share: the :class:`RunContext`, how a run starts and fails,
and the views of the cohort that several stages read (one model's predictions as columns,
one photo per subject, the image models, a face layout, the subjects every image model
predicted)."""

from __future__ import annotations

import contextlib
import json
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from audit.data.cohort import age_band, load_cohort
from audit.data.hashing import HashCache
from audit.errors import InputError
from audit.models import create_model
from audit.models.parity import check_reference
from audit.pipeline import progress
from audit.pipeline.config import AuditConfig
from audit.pipeline.store import Store
from audit.stats.groups import canonical_rows


@dataclass
class RunContext:
    """What the stages of one run share."""

    store: Store
    run_id: str
    out_dir: Path
    config: AuditConfig
    cohort: object  # audit.data.cohort.Cohort
    models: list  # ModelAdapter
    predictions: dict = field(default_factory=dict)  # model name -> tidy frame
    notes: dict = field(default_factory=dict)  # stage -> list of notes for the report
    reference: str | None = None  # run_id the drift stage compares against
    throughput: dict = field(default_factory=dict)  # model name -> photos/s measured here
    shared: dict | None = None  # frames the statistics stages share (see shared_frames)

    def __post_init__(self) -> None:
        self._mark = datetime.now(timezone.utc)

    def note(self, stage: str, text: str) -> None:
        self.notes.setdefault(stage, []).append(text)

    def write(self, stage: str, tables: dict, note: str | None = None) -> int:
        """Write a stage's tables in one transaction, timed from the previous write."""
        n = self.store.write_stage(self.run_id, stage, tables, note=note, started=self._mark)
        self._mark = datetime.now(timezone.utc)
        return n


def start(
    cohort_dir: str | Path,
    model_specs: list[str],
    out_dir: str | Path,
    config: AuditConfig,
    flow: str = "audit",
    reference: str | None = None,
) -> RunContext:
    """Load the cohort and models, open the store and insert the ``running`` run row."""
    out_dir = Path(out_dir)
    models = [create_model(spec) for spec in model_specs]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise InputError(f"two --model specs share a name: {names}; give each a `name`")
    parity = []
    with progress.step("load models"):  # a checkpoint that does not fit fails now, not
        for model in models:  # after validation has run
            if hasattr(model, "load"):
                model.load()
                parity.append(check_reference(model))  # a mismatch stops the run here
    with progress.step("load cohort"):
        cohort = load_cohort(cohort_dir, hash_cache=HashCache.default())
    store = Store(out_dir / "audit.duckdb")
    identities = [_identity(m) for m in models]
    run_id = store.start_run(
        flow=flow,
        cohort_name=cohort.name,
        cohort_sha256=cohort.sha256,
        manifest_sha256=cohort.manifest_sha256,
        models=identities,
        config_json=config.canonical_json(),
        config_sha256=config.sha256(),
        synthetic=cohort.spec.synthetic,
        cohort_path=str(Path(cohort_dir).resolve()),
    )
    ctx = RunContext(
        store=store,
        run_id=run_id,
        out_dir=out_dir,
        config=config,
        cohort=cohort,
        models=models,
        reference=reference,
    )
    for note in filter(None, parity):
        ctx.note("predictions", note)
    return ctx


@contextlib.contextmanager
def shared_frames(ctx: RunContext):
    """Within: each model's wide predictions and their first photos per subject are built
    once and shared (the statistics stages plan their pieces together, and a frame held by
    pieces of three stages is then one frame, not three); pieces never modify their frames."""
    ctx.shared = {}
    try:
        yield ctx
    finally:
        ctx.shared = None


def _shared(ctx: RunContext, key: tuple, source, build):
    """``build()``, once per ``key`` while frames are shared (``source``: the object the
    value derives from, kept with it so that a reused id() is never mistaken for it)."""
    if ctx.shared is None:
        return build()
    hit = ctx.shared.get(key)
    if hit is None or hit[0] is not source:
        hit = ctx.shared[key] = (source, build())
    return hit[1]


def wide_predictions(ctx: RunContext, model, every_photo: bool = False) -> pd.DataFrame:
    """The cohort's good rows with this model's clean predictions as columns: the analysed
    rows (without a paired study's compared photos), or ``every_photo``."""
    key = ("wide", model.name, every_photo)
    return _shared(ctx, key, model, lambda: _wide(ctx, model, every_photo))


def _wide(ctx: RunContext, model, every_photo: bool) -> pd.DataFrame:
    preds = ctx.predictions[model.name]
    clean = preds[preds["perturbation"] == "none"]
    wide = clean.pivot_table(index="photo_id", columns="output", values="value", aggfunc="first")
    frame = ctx.cohort.frame if every_photo else ctx.cohort.analysed
    base = frame.drop(columns=[c for c in ("faceage", "risk") if c in ctx.cohort.frame.columns])
    # rows in an order fixed by their values, not by the manifest's rows or the ids' names:
    # every resample and fold drawn from here on is the same for a shuffled, renamed cohort
    return canonical_rows(base.merge(wide, left_on="photo_id", right_index=True, how="inner"))


def one_per_subject(ctx: RunContext, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` for each subject's first photo (the one survival analysis uses),
    in the order of ``frame``."""
    return _shared(ctx, ("first", id(frame)), frame, lambda: _first_photos(ctx, frame))


def _first_photos(ctx: RunContext, frame: pd.DataFrame) -> pd.DataFrame:
    first = ctx.cohort.subjects()["photo_id"]
    return frame[frame["photo_id"].isin(set(first))].reset_index(drop=True)


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


def image_models(ctx: RunContext) -> list:
    """The run's models that read the photos (not a cohort's prediction columns)."""
    return [m for m in ctx.models if m.needs_images and hasattr(m, "cache_key")]


def predicted_subjects(ctx: RunContext, models: list) -> pd.DataFrame:
    """One photo per subject, kept where every model in ``models`` has a clean prediction,
    with an ``age_band`` column when the cohort has ages (the strata of the photo samples)."""
    subjects = ctx.cohort.subjects()
    usable = set.intersection(*(set(ctx.predictions[m.name]["photo_id"]) for m in models))
    subjects = subjects[subjects["photo_id"].isin(usable)].reset_index(drop=True)
    if "age" in subjects.columns:
        subjects["age_band"] = age_band(subjects["age"], ctx.config.accuracy.age_bands)
    return subjects


def layout_name(ctx: RunContext, *configured: str | None) -> str:
    """The face layout of the cohort's crops: the first name configured, else cohort.yaml's
    ``face_layout``, else ``arcface`` for cropped cohorts and ``aligned`` for raw photos
    (which the engine eye-aligns to that layout)."""
    return (
        next((name for name in configured if name), None)
        or ctx.cohort.spec.face_layout
        or ("arcface" if ctx.cohort.spec.cropped else "aligned")
    )


_WORKER_MODELS: dict[str, object] = {}


def worker_model(spec):
    """A model built once per worker process and reused by every shard it runs."""
    key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    model = _WORKER_MODELS.get(key)
    if model is None:
        model = _WORKER_MODELS[key] = create_model(spec)
    return model


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
    ctx.store.fail_run(ctx.run_id, error_text(exc))


def error_text(exc: BaseException) -> str:
    """The reason a run failed, as stored and shown: an input error's message as it is, any
    other exception with its type."""
    if isinstance(exc, InputError):
        return str(exc)
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def failed_start(
    out_dir: str | Path, flow: str, cohort_dir: str | Path | None, exc: BaseException
) -> str | None:
    """Record a run that failed before it could start (its cohort, models, config or
    reference could not be used) as a ``failed`` run with the reason, so that a scheduled
    or triggered run that fails is in ``audit.duckdb`` and on the index page, not only in
    Prefect's state table. Returns its run id (None when the output folder itself cannot
    be written)."""
    try:
        store = Store(Path(out_dir) / "audit.duckdb")
        run_id = store.start_run(
            flow=flow,
            cohort_name=Path(cohort_dir).name if cohort_dir else None,
            cohort_sha256=None,
            cohort_path=str(Path(cohort_dir).resolve()) if cohort_dir else None,
        )
        store.fail_run(run_id, error_text(exc))
        return run_id
    except Exception:  # the store cannot be written: the exception itself still propagates
        return None
