"""The drift stage: this run against a reference run (``--reference``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.cohort import load_cohort
from audit.data.hashing import HashCache, sha256_file
from audit.errors import InputError
from audit.monitor.casemix import (
    CASE_MIX_COLUMNS,
    case_mix_weights,
    explain_drift,
    explain_embeddings,
)
from audit.monitor.drift import (
    IMAGE_NUMERIC,
    METADATA_CATEGORICAL,
    METADATA_NUMERIC,
    decide,
    embedding_drift,
    feature_drift,
    quality_change,
)
from audit.monitor.estimate import EstimateSettings
from audit.pipeline.store import Store
from audit.stages.context import RunContext


def run_frame(store: Store, run_id: str, models: list[str]) -> pd.DataFrame:
    """One row per included photo of a run: its standard columns, image properties and each
    model's clean predictions (``<model>:<output>``)."""
    rows = store.table("cohort_rows", run_id)
    rows = rows[rows["included"].astype(bool)].drop(columns=["included"])
    if "paired_only" in rows.columns:  # a paired study's compared photos: not the cohort's
        rows = rows[~rows["paired_only"].fillna(False).astype(bool)]
    rows = rows.drop(columns=["paired_only", "condition", "pair"], errors="ignore")
    props = store.table("image_properties", run_id)
    if len(props):
        keep = ["photo_id"] + [c for c in IMAGE_NUMERIC if c in props.columns]
        rows = rows.merge(props[keep], on="photo_id", how="left")
    # the clean pass only (a run also stores its perturbed predictions)
    preds = store.query(
        "SELECT photo_id, model, output, value FROM predictions "
        "WHERE run_id = ? AND perturbation = 'none'",
        [run_id],
    )
    preds = preds[preds["model"].isin(models)]
    if len(preds):
        wide = preds.assign(col=preds["model"] + ":" + preds["output"]).pivot_table(
            index="photo_id", columns="col", values="value", aggfunc="first"
        )
        rows = rows.merge(wide, left_on="photo_id", right_index=True, how="left")
    return rows


def _covariate_features(
    ctx: RunContext, ref: str, reference: pd.DataFrame, current: pd.DataFrame
) -> dict:
    """The cohort's clinical covariates as metadata features: read from this cohort and from
    the reference run's cohort folder (when it is still there; the store keeps only the
    standard columns)."""
    covs = ctx.cohort.spec.covariates
    if not covs:
        return {}
    path = ctx.store.run(ref).get("cohort_path")
    try:
        ref_cohort = load_cohort(path, hash_cache=HashCache.default())
    except Exception as exc:  # moved or gone: say so, compare the rest
        ctx.note(
            "drift",
            f"covariates not compared: the reference cohort folder {path} "
            f"cannot be read ({type(exc).__name__})",
        )
        return {}
    names = [c.name for c in covs if c.name in ref_cohort.frame.columns]
    if not names:
        return {}
    ref_cov = ref_cohort.analysed[["photo_id"] + names]
    cur_cov = ctx.cohort.analysed[["photo_id"] + names]
    out = {
        c.name: (c.name, "metadata", "num" if c.type == "numeric" else "cat", None)
        for c in covs
        if c.name in names
    }
    out["_frames"] = (
        reference.merge(ref_cov, on="photo_id", how="left"),
        current.merge(cur_cov, on="photo_id", how="left"),
    )
    return out


def _case_mix(ctx: RunContext, reference, current, features, frame, embedded) -> pd.DataFrame:
    """Each feature's drift before and after reweighting the reference to this cohort's age,
    sex and race mix (:mod:`audit.monitor.casemix`), named as the drift rows are; each
    model's embeddings too (``embedded``: its reference and current ``photo_id, vector``)."""
    cfg = ctx.config.drift
    settings = EstimateSettings.from_config(ctx.config.estimate)
    drifted = {(r.model, r.feature): bool(r.drifted) for r in frame.itertuples()}
    try:
        prepared = case_mix_weights(reference, current, settings)
        table, note = explain_drift(
            reference,
            current,
            features,
            settings,
            drifted,
            (cfg.min_effect_numeric, cfg.min_effect_categorical),
            prepared,
        )
        weights = prepared[0]
    except RuntimeError as exc:  # the case-mix classifier did not converge
        table, note = pd.DataFrame(columns=CASE_MIX_COLUMNS), f"drift not split by case mix: {exc}"
        weights = None
    if weights is not None:
        by_photo = pd.Series(weights.w, index=reference["photo_id"].to_numpy())
        by_photo = by_photo[~by_photo.index.duplicated()]
        raw_rows = {r.model: r._asdict() for r in frame[frame["kind"] == "embeddings"].itertuples()}
        extra = []
        for model, (ref_v, cur_v) in embedded.items():
            ref_v = ref_v[ref_v["photo_id"].isin(by_photo.index)]
            if model not in raw_rows or len(ref_v) <= 10:
                continue
            extra.append(
                explain_embeddings(
                    np.stack(ref_v["vector"].to_numpy()),
                    np.stack(cur_v["vector"].to_numpy()),
                    by_photo.loc[ref_v["photo_id"]].to_numpy(),
                    model,
                    cfg,
                    bool(raw_rows[model]["drifted"]),
                    raw_rows[model],
                )
            )
        if extra:
            table = pd.concat(
                [table, pd.DataFrame(extra, columns=CASE_MIX_COLUMNS)], ignore_index=True
            )
    if note:
        ctx.note("drift", note)
    if not len(table):
        return table
    table["feature"] = (
        table["feature"]
        .str.split(":")
        .str[-1]
        .where(table["kind"] == "predictions", table["feature"])
    )
    kept = table[table["status"] != "no drift"]
    if len(kept):
        ctx.note(
            "drift",
            "case mix: " + ", ".join(f"{r.feature} {r.status}" for r in kept.itertuples()),
        )
    return table


def drift_stage(ctx: RunContext) -> int:
    """The cohort against the reference run (``--reference``): metadata, image properties,
    predictions, embeddings and model quality; evidently's HTML kept as an artifact."""
    cfg = ctx.config.drift
    ref = ctx.reference
    if ref is None:
        ctx.note("drift", "no reference given (--reference): drift not measured")
        return ctx.write("drift", {}, note=ctx.notes["drift"][0])
    if ref == ctx.run_id or ctx.store.run(ref)["status"] != "finished":
        raise InputError(f"--reference {ref}: not a finished earlier run in {ctx.store.path}")
    names = [m.name for m in ctx.models]
    reference, current = run_frame(ctx.store, ref, names), run_frame(ctx.store, ctx.run_id, names)
    covariates = _covariate_features(ctx, ref, reference, current)
    if covariates:
        reference, current = covariates.pop("_frames")
    features = (
        [(c, "metadata", "num", None) for c in METADATA_NUMERIC]
        + list(covariates.values())
        + [(c, "metadata", "cat", None) for c in METADATA_CATEGORICAL]
        + [(c, "images", "num", None) for c in IMAGE_NUMERIC]
        + [(f"{m.name}:{o}", "predictions", "num", m.name) for m in ctx.models for o in m.outputs]
    )
    rows, snapshot = feature_drift(reference, current, features)
    embedded = {}
    for model in ctx.models:
        vectors = [
            ctx.store.query(
                "SELECT photo_id, vector FROM embeddings WHERE run_id = ? AND model = ?",
                [r, model.name],
            )
            for r in (ref, ctx.run_id)
        ]
        if all(len(v) > 10 for v in vectors):
            embedded[model.name] = vectors
            rows.append(
                embedding_drift(
                    np.stack(vectors[0]["vector"].to_numpy()),
                    np.stack(vectors[1]["vector"].to_numpy()),
                    model.name,
                    cfg,
                )
            )
    rows.extend(
        quality_change(ctx.store.table("accuracy", ref), ctx.store.table("accuracy", ctx.run_id))
    )
    frame = decide(rows, cfg).assign(reference=ref)
    case_mix = _case_mix(ctx, reference, current, features, frame, embedded)
    frame["feature"] = (
        frame["feature"]
        .str.split(":")
        .str[-1]
        .where(frame["kind"] == "predictions", frame["feature"])
    )
    tables = {"drift": frame, "drift_case_mix": case_mix.assign(reference=ref)}
    if snapshot is not None and cfg.html:
        path = ctx.out_dir / "runs" / ctx.run_id / "drift.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(path))
        tables["artifacts"] = pd.DataFrame(
            [
                {
                    "kind": "evidently_html",
                    "path": str(path.relative_to(ctx.out_dir)),
                    "sha256": sha256_file(path),
                }
            ]
        )
    drifted = frame[frame["drifted"]]
    ctx.note(
        "drift",
        f"against run {ref}: {len(frame)} features, {len(drifted)} drifted"
        + (f" ({', '.join(drifted['feature'])})" if len(drifted) else ""),
    )
    return ctx.write("drift", tables, note="; ".join(ctx.notes["drift"]))
