"""The predict stage: every model's clean predictions (perturbation ``none``), the
prediction cache consulted and filled, and the predictions suite on what came out; with the
shards the Dask runner computes on its workers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.data.validation import validate_predictions
from audit.errors import InputError
from audit.models.registry import Predictions
from audit.stages.context import RunContext, worker_model


@dataclass
class Shard:
    """A slice of the cohort for one image model, to predict on another process or machine."""

    model_spec: object  # ModelSpec
    cohort: object  # Cohort restricted to the shard's rows
    cached: tuple | None
    index: int


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
    model = worker_model(shard.model_spec)

    result = model.predict(shard.cohort, cached=shard.cached, progress=lambda items, total: items)
    result.worker = f"{socket.gethostname()}:{os.getpid()}"
    return result


def _merge(parts: list) -> object:
    """One Predictions from a model's shard results (in shard order)."""

    def cat(name):
        frames = [
            getattr(p, name)
            for p in parts
            if getattr(p, name) is not None and len(getattr(p, name))
        ]
        return pd.concat(frames, ignore_index=True) if frames else None

    computed = sum(p.n_computed for p in parts)
    from_cache = sum(p.n_cached for p in parts)
    workers = sorted({p.worker for p in parts if p.worker})
    return Predictions(
        frame=cat("frame"),
        embeddings=cat("embeddings"),
        quarantine=cat("quarantine"),
        cache_values=cat("cache_values"),
        cache_vectors=cat("cache_vectors"),
        n_cached=from_cache,
        n_computed=computed,
        notes=[
            f"{len(parts)} shards on {len(workers)} worker process(es) "
            f"({', '.join(workers)}); {from_cache} photos from the prediction "
            f"cache, {computed} computed"
        ],
    )


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
            raise InputError(
                f"{ctx.cohort.root}: model {model.name!r} needs images, and the "
                "cohort has no image_path column"
            )
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
        if preds.seconds and preds.n_computed:
            ctx.throughput[model.name] = preds.n_computed / preds.seconds
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
    return ctx.write(
        "predictions", tables, note="; ".join(ctx.notes.get("predictions", [])) or None
    )


def _check_predictions(ctx: RunContext, model, frame: pd.DataFrame, already: set):
    """The predictions suite on one model's clean predictions, for the photos the model did
    not already set aside (``already``); returns (result, ids that failed)."""
    clean = frame[frame["perturbation"] == "none"]
    wide = clean.pivot_table(
        index="photo_id", columns="output", values="value", aggfunc="first"
    ).reset_index()
    rows = ctx.cohort.frame[["photo_id", "_row"]]
    rows = rows[~rows["photo_id"].isin(already)]
    wide = rows.merge(wide, on="photo_id", how="left")
    override = (
        (ctx.cohort.root / ctx.cohort.spec.expectations) if ctx.cohort.spec.expectations else None
    )
    result = validate_predictions(wide, model.name, str(ctx.cohort.manifest_path), override)
    return result, set(result.quarantine["photo_id"])
