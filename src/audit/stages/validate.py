"""The validate stage: what loading the manifest found and the Great Expectations suites,
written in one transaction; and the verdict of a validation run (no model)."""

from __future__ import annotations

import json

import pandas as pd

from audit.data.validation import validate_cohort
from audit.errors import InputError
from audit.metrics.face_pipeline import face_pipeline_table, photo_outcomes
from audit.pipeline import progress
from audit.pipeline.schema import columns
from audit.pipeline.verdict import overall, validation_checks
from audit.stages.context import RunContext
from audit.survival.analysis import median_followup


def _load_results(c) -> pd.DataFrame:
    """What reading the manifest found, as ``validation_results`` rows (suite ``load``)."""
    q = c.quarantine
    rows = [
        {
            "suite": "load",
            "expectation": "expect_manifest_readable",
            "column_name": None,
            "severity": "critical",
            "success": True,
            "unexpected_count": 0,
            "details": json.dumps(
                {"file": str(c.manifest_path), "manifest_rows": c.n_manifest_rows}
            ),
        }
    ]
    by_col = q.groupby("column_name").size() if len(q) else pd.Series(dtype=int)
    for col, count in by_col.items():
        reasons = q.loc[q["column_name"] == col, "reason"].head(3).tolist()
        rows.append(
            {
                "suite": "load",
                "expectation": "expect_values_to_parse",
                "column_name": col,
                "severity": "error",
                "success": False,
                "unexpected_count": int(count),
                "details": json.dumps(
                    {
                        "examples": reasons,
                        "rows": q.loc[q["column_name"] == col, "row_number"]
                        .head(20)
                        .astype(int)
                        .tolist(),
                    }
                ),
            }
        )
    if not len(q):
        rows.append(
            {
                "suite": "load",
                "expectation": "expect_values_to_parse",
                "column_name": None,
                "severity": "error",
                "success": True,
                "unexpected_count": 0,
                "details": "{}",
            }
        )
    return pd.DataFrame(rows)


def _cohort_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Cohort statistics the page shows: the median follow-up of the included subjects."""
    included = rows[rows["included"].astype(bool)]
    if "event" not in included or not included["event"].notna().any():
        return pd.DataFrame(columns=columns("cohort_summary"))
    subjects = included.drop_duplicates("subject_id")
    return pd.DataFrame(
        [
            {
                "statistic": "median_followup_years",
                "value": median_followup(subjects["time"], subjects["event"]),
                "method": "reverse Kaplan-Meier (censoring as the event)",
            }
        ]
    )


# the manifest's columns kept per row (the rest of `cohort_rows` is set by this stage)
ROW_COLUMNS = [
    c for c in columns("cohort_rows") if c not in ("included", "row_number", "paired_only")
]


def _cohort_rows(
    good: pd.DataFrame, dropped: pd.DataFrame, bad_ids: set, paired_only: set | None = None
) -> pd.DataFrame:
    """Every manifest row: the loaded ones (``included`` unless validation quarantined
    them; ``paired_only`` for a paired study's compared photos, which the one-photo
    statistics leave out) and those dropped while loading (never included)."""
    rows = good.reindex(columns=ROW_COLUMNS).copy()
    rows["included"] = ~good["photo_id"].isin(bad_ids).to_numpy()
    rows["paired_only"] = good["photo_id"].isin(paired_only or set()).to_numpy()
    rows["row_number"] = good["_row"].values
    lost = pd.DataFrame(
        {"photo_id": dropped["photo_id"], "row_number": dropped["row_number"], "included": False}
    )
    frame = pd.concat([rows, lost], ignore_index=True) if len(lost) else rows
    cols = ["photo_id", "subject_id", "sex", "race", "cancer_type", "site", "camera"]
    for col in cols + ["condition", "pair"]:
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    return frame


def _image_tables(props: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """``image_properties`` (one row per photo checked) and ``detections`` (one per face
    found, landmarks as JSON), where the cohort has photos."""
    if props is None or not len(props):
        return {}
    tables = {
        "image_properties": props.drop(columns=["subject_id", "_row", "_boxes"], errors="ignore")
    }
    boxes = [
        {
            "photo_id": pid,
            "x": f["x"],
            "y": f["y"],
            "w": f["w"],
            "h": f["h"],
            "confidence": f["confidence"],
            "landmarks": json.dumps(f["landmarks"]),
        }
        for pid, faces in zip(props["photo_id"], props["_boxes"])
        if isinstance(faces, list)
        for f in faces
    ]
    if boxes:
        tables["detections"] = pd.DataFrame(boxes)
    return tables


def _face_pipeline(cohort, props, rows, config) -> pd.DataFrame | None:
    """Who the face detector drops, by group (raw photos only; see
    :mod:`audit.metrics.face_pipeline`)."""
    if cohort.spec.cropped or props is None or not len(props) or not config.enabled:
        return None
    outcomes = photo_outcomes(props, rows, cohort.spec.detector, config)
    return face_pipeline_table(outcomes, cohort.spec.detector, config)


def validate_stage(ctx: RunContext) -> int:
    """Validate the cohort (Great Expectations suites) and write what it found.

    One transaction holds the cohort's rows (``included`` false for every quarantined
    row), the suites' results, the per-image table, detections and the quarantine. A
    critical failure is written too, then stops the run before any model sees the data.
    """
    c = ctx.cohort
    report = validate_cohort(
        c, progress=lambda items, total: progress.bar(items, total, "checking images")
    )
    quarantine = pd.concat([c.quarantine, report.quarantine], ignore_index=True)
    bad_ids = set(report.quarantine["photo_id"])
    good = c.frame
    paired_only = set(good["photo_id"]) - set(c.analysed["photo_id"])
    frame = _cohort_rows(good, c.quarantine, bad_ids, paired_only)
    tables = {
        "cohort_rows": frame,
        "validation_results": pd.concat([_load_results(c), report.results], ignore_index=True),
        "quarantine": quarantine,
        "cohort_summary": _cohort_summary(frame),
        **_image_tables(report.image_properties),
        "face_pipeline": _face_pipeline(c, report.image_properties, good, ctx.config.faces),
    }
    c.frame = good[~good["photo_id"].isin(bad_ids)].reset_index(drop=True)
    note = (
        f"{len(c.frame)} of {c.n_manifest_rows} rows go on; {len(quarantine)} quarantine "
        f"record(s); {report.errors} failed error check(s)"
    )
    n = ctx.write("validate", tables, note=note)
    if report.critical or c.frame.empty:
        problems = report.critical or [f"{c.manifest_path}: no usable rows are left"]
        first = quarantine.iloc[0] if len(quarantine) else None
        example = f" (first quarantined: {first['reason']})" if first is not None else ""
        raise InputError("; ".join(problems) + example)
    return n


def validation_verdict(ctx: RunContext) -> str:
    """The verdict of a validation run: ``fail`` when an error-severity check failed."""
    results = ctx.store.table("validation_results", ctx.run_id)
    q = ctx.store.query(
        "SELECT count(DISTINCT photo_id) FROM quarantine WHERE run_id = ?", [ctx.run_id]
    ).iloc[0, 0]
    rows = ctx.store.table("cohort_rows", ctx.run_id)
    verdicts = validation_checks(
        results,
        ctx.cohort.n_manifest_rows,
        int(q),
        ctx.config.thresholds,
        rows,
        ctx.store.table("face_pipeline", ctx.run_id),
    )
    ctx.write("verdict", {"verdicts": verdicts})
    return overall(verdicts)
