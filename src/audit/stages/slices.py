"""The slices stage: where each model fails in combinations of conditions no declared
subgroup names, confirmed on held-out subjects (:mod:`audit.metrics.slices`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.cohort import age_band
from audit.metrics.slices import (
    SliceSettings,
    conditions_of,
    describe_clusters,
    discover,
    output_losses,
    slice_features,
)
from audit.models.inference import decode_image
from audit.pipeline import progress
from audit.pipeline.schema import columns
from audit.report import plots
from audit.stages.context import RunContext, one_per_subject, wide_predictions

SLICE_COLUMNS = [c for c in columns("slices") if c != "run_id"]
CLUSTER = "embedding_cluster"


def slices_stage(ctx: RunContext) -> int:
    """The ``slices`` rows of every model output and loss, in one transaction."""
    cfg = ctx.config.slices
    if not cfg.enabled:
        return ctx.write("slices", {}, note="slice discovery not run: turned off in the config")
    props = ctx.store.table("image_properties", ctx.run_id)
    detections = ctx.store.table("detections", ctx.run_id)
    parts, faces = [], []
    for model in progress.track(ctx.models, "slices"):
        subjects = one_per_subject(ctx, wide_predictions(ctx, model))
        if "age" in subjects.columns:
            subjects["age_band"] = age_band(subjects["age"], ctx.config.accuracy.age_bands)
        vectors = ctx.store.query(
            "SELECT photo_id, vector FROM embeddings WHERE run_id = ? AND model = ?",
            [ctx.run_id, model.name],
        )
        features = slice_features(
            subjects,
            ctx.cohort.spec.covariates,
            props,
            detections,
            vectors,
            clusters=cfg.clusters,
            seed=cfg.seed,
            clinical=cfg.clinical,
        )
        described = describe_clusters(features, cfg.bands)
        mine = []
        for output in model.outputs:
            losses, notes = output_losses(subjects, output)
            for note in notes:
                ctx.note("slices", f"{model.name}: {note}" if len(ctx.models) > 1 else note)
            for loss in losses:
                settings = SliceSettings.from_config(cfg, loss.name)
                found = discover(features, loss.values, settings, signed=loss.signed)
                if found.empty:
                    continue
                mine.append(
                    found.assign(
                        model=model.name,
                        output=output,
                        loss=loss.name,
                        unit=loss.unit,
                        rank=range(1, len(found) + 1),
                        min_effect=settings.min_effect,
                        description=[
                            next((described.get(v) for f, v in c if f == CLUSTER), None)
                            for c in conditions_of(found)
                        ],
                    )
                )
        parts += mine
        if mine and CLUSTER in features.columns:
            found = pd.concat(mine, ignore_index=True)
            wanted = {
                value
                for c in conditions_of(found[found["confirmed"].astype(bool)])
                for feature, value in c
                if feature == CLUSTER
            }
            faces += cluster_faces(
                ctx.cohort,
                model,
                subjects,
                features[CLUSTER].to_numpy(),
                wanted,
                min_faces=cfg.min_faces,
                sample=cfg.face_sample,
                seed=cfg.seed,
            )
    frame = (
        pd.concat(parts, ignore_index=True)[SLICE_COLUMNS]
        if parts
        else pd.DataFrame(columns=SLICE_COLUMNS)
    )
    confirmed = int(frame["confirmed"].astype(bool).sum()) if len(frame) else 0
    floor = 2 * cfg.min_size
    ctx.note(
        "slices",
        f"{len(frame)} slices tested, {confirmed} confirmed"
        if len(frame)
        else f"no slice tested: a slice needs {cfg.min_size} subjects in each half "
        f"(and {cfg.min_share:.0%} of them), so a cohort needs well over {floor} subjects",
    )
    tables = {"slices": frame, "figures": pd.DataFrame(faces, columns=["figure", "uri", "alt"])}
    return ctx.write("slices", tables, note="; ".join(ctx.notes["slices"]))


def cluster_faces(
    cohort,
    model,
    subjects: pd.DataFrame,
    clusters: np.ndarray,
    wanted: set,
    *,
    min_faces: int,
    sample: int,
    seed: int,
) -> list[dict]:
    """``figures`` rows: each wanted embedding cluster's average face, the mean of up to
    ``sample`` of its subjects' photos (seeded) as the model sees them (its crop and input
    size), kept only when at least ``min_faces`` photos were averaged: no one's face is
    stored or shown. A model that does not read photos has none."""
    if not getattr(model, "needs_images", False) or not hasattr(model, "crop_for"):
        return []
    crop, size = model.crop_for(cohort), int(model.input_size)
    rng = np.random.default_rng(seed)
    rows = []
    for label in sorted(wanted, key=str):
        members = np.flatnonzero(clusters == label)
        if len(members) < min_faces:
            continue
        chosen = np.sort(rng.permutation(members)[:sample])
        total, n = np.zeros((size, size, 3)), 0
        for i in chosen:
            try:
                total += decode_image(cohort.image_file(subjects["image_path"].iloc[i]), size, crop)
            except (ValueError, OSError):  # no single face, or unreadable: not averaged
                continue
            n += 1
        if n < min_faces:
            continue
        from PIL import Image

        face = Image.fromarray((total / n).round().astype(np.uint8)).resize((96, 96))
        rows.append(
            {
                "figure": f"slice_cluster_face:{model.name}:{label}",
                "uri": plots.to_uri(face),
                "alt": f"The average of {n} photos of {model.name}'s embedding cluster {label}, "
                "as the model sees them (no single person's photo).",
            }
        )
    return rows
