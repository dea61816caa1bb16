"""The estimate stage: each model's performance on this cohort estimated from the reference
run's outcomes, reweighted to this cohort's case mix (:mod:`audit.monitor.estimate`); with
this cohort's outcomes, the realised values beside the estimates; and an earlier estimate of
this cohort (a run of the same cohort name against the same reference) beside what is
realised now."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.monitor.drift import IMAGE_NUMERIC, METADATA_CATEGORICAL
from audit.monitor.estimate import (
    ESTIMATED,
    EstimateSettings,
    design,
    estimate_performance,
    importance_weights,
    unseen_categories,
)
from audit.pipeline.schema import columns
from audit.pipeline.store import Store
from audit.stages.context import RunContext
from audit.stages.drift import run_frame
from audit.stats.groups import canonical_rows

ESTIMATE_TABLE_COLUMNS = [c for c in columns("estimated_performance") if c != "run_id"]
NUMERIC = ["age", *IMAGE_NUMERIC]
KEYS = ["model", "output", "metric", "_horizon"]  # (no horizon: -1, so that it joins)


def _subjects(store: Store, run_id: str, model: str, outputs: list[str]) -> pd.DataFrame:
    """One row per subject of a run (its first photo in the manifest) with this model's
    outputs as columns, in an order fixed by the values."""
    frame = run_frame(store, run_id, [model])
    frame = frame.rename(columns={f"{model}:{o}": o for o in outputs})
    keep = [o for o in outputs if o in frame.columns]
    frame = frame.dropna(subset=keep) if keep else frame.iloc[0:0]
    frame = frame.sort_values("row_number", kind="stable").drop_duplicates("subject_id")
    return canonical_rows(frame.drop(columns=["row_number"], errors="ignore"))


def _vectors(store: Store, run_id: str, model: str, photos: pd.Series) -> np.ndarray | None:
    found = store.query(
        "SELECT photo_id, vector FROM embeddings WHERE run_id = ? AND model = ?", [run_id, model]
    )
    if not len(found):
        return None
    found = found.drop_duplicates("photo_id").set_index("photo_id")["vector"]
    if not photos.isin(found.index).all():
        return None
    return np.stack(found.loc[photos].map(np.asarray).to_numpy()).astype(float)


def estimate_stage(ctx: RunContext) -> int:
    """The ``estimated_performance`` rows of every model against the reference run."""
    cfg = ctx.config.estimate
    ref = ctx.reference
    if not cfg.enabled or ref is None:
        why = "turned off in the config" if not cfg.enabled else "no reference run given"
        return ctx.write("estimate", {}, note=f"performance not estimated: {why}")
    settings = EstimateSettings.from_config(cfg)
    parts = []
    for model in ctx.models:
        reference = _subjects(ctx.store, ref, model.name, model.outputs)
        current = _subjects(ctx.store, ctx.run_id, model.name, model.outputs)
        if "event" not in reference.columns or reference["event"].fillna(0).sum() < 5:
            ctx.note(
                "estimate",
                f"{model.name}: the reference run has fewer than 5 deaths: nothing to "
                "estimate from",
            )
            continue
        if not len(current):
            continue
        reference = reference.dropna(subset=["time", "event"])
        if current[["time", "event"]].isna().any().any():
            current = current.drop(columns=["time", "event"])
        vectors = [
            _vectors(ctx.store, r, model.name, f["photo_id"])
            for r, f in ((ref, reference), (ctx.run_id, current))
        ]
        x_ref, x_cur, _ = design(
            reference,
            current,
            NUMERIC,
            METADATA_CATEGORICAL,
            tuple(vectors) if all(v is not None for v in vectors) else None,
            settings.components,
        )
        try:
            weights = importance_weights(x_ref, x_cur, settings)
        except RuntimeError as exc:
            ctx.note("estimate", f"{model.name}: not estimated: {exc}")
            continue
        weights.poor.extend(unseen_categories(reference, current, METADATA_CATEGORICAL))
        table, notes = estimate_performance(
            reference, current, model.outputs, weights, settings, (x_ref, x_cur)
        )
        for note in notes:
            ctx.note("estimate", f"{model.name}: {note}")
        parts.append(table.assign(model=model.name, reference=ref))
    frame = (
        _with_earlier(ctx, pd.concat(parts, ignore_index=True))
        if parts
        else pd.DataFrame(columns=ESTIMATE_TABLE_COLUMNS)
    )
    frame = frame.reindex(columns=ESTIMATE_TABLE_COLUMNS)
    if len(frame):
        est = frame[frame["status"] == ESTIMATED]
        ctx.note(
            "estimate",
            f"against run {ref}: {len(est)} measures estimated"
            + (
                f", {int(frame['realised'].notna().sum())} realised"
                if frame["realised"].notna().any()
                else ""
            )
            + (f"; overlap too poor for {len(frame) - len(est)}" if len(est) < len(frame) else ""),
        )
    return ctx.write(
        "estimate", {"estimated_performance": frame}, note="; ".join(ctx.notes["estimate"])
    )


def _with_earlier(ctx: RunContext, frame: pd.DataFrame) -> pd.DataFrame:
    """The latest earlier estimate of this cohort (a finished run of the same cohort name
    against the same reference, estimated without outcomes) beside each measure."""
    earlier = ctx.store.query(
        "SELECT e.run_id AS earlier_run, e.model, e.output, e.metric, "
        "coalesce(e.horizon, -1.0) AS _horizon, e.estimate AS earlier_estimate, "
        "e.ci_low AS earlier_low, e.ci_high AS earlier_high "
        "FROM estimated_performance e JOIN runs r USING (run_id) "
        "WHERE r.cohort_name = ? AND e.reference = ? AND e.run_id <> ? AND r.status = "
        "'finished' AND e.status = ? AND e.realised IS NULL AND e.metric NOT IN "
        "('mae', 'mean_error') ORDER BY r.started_at",
        [ctx.store.run(ctx.run_id).get("cohort_name"), ctx.reference, ctx.run_id, ESTIMATED],
    ).drop_duplicates(KEYS, keep="last")
    keyed = frame.assign(_horizon=frame["horizon"].astype(float).fillna(-1.0))
    return keyed.merge(earlier, on=KEYS, how="left").drop(columns="_horizon")
