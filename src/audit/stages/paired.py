"""The paired stage: agreement of each model's outputs on a paired study's real repeated
photos of the same person (:mod:`audit.metrics.paired`)."""

from __future__ import annotations

import pandas as pd

from audit.metrics.paired import paired_tables
from audit.pipeline import progress
from audit.stages.context import RunContext, wide_predictions


def paired_stage(ctx: RunContext) -> int:
    """The ``paired`` and ``paired_pairs`` rows of every model, in one transaction; a cohort
    without a paired study (or the section turned off) writes none and says why."""
    cfg = ctx.config.paired
    study = ctx.cohort.spec.paired
    reason = (
        "turned off in the audit config"
        if not cfg.enabled
        else "the cohort declares no paired study (cohort.yaml `paired:`)"
        if study is None
        else "no photo carries a condition"
        if not ctx.cohort.paired_study
        else None
    )
    if reason:
        return ctx.write("paired", {}, note=f"paired analysis not run: {reason}")
    rows, pairs, said = [], [], []
    for model in progress.track(ctx.models, "paired"):
        photos = wide_predictions(ctx, model, every_photo=True)
        table, pair_rows, notes = paired_tables(
            photos,
            model.name,
            model.outputs,
            study.comparisons,
            cfg,
            ctx.config.accuracy.age_bands,
        )
        rows.append(table)
        pairs.append(pair_rows)
        said.extend(notes)  # the pairing is the same for every model: said once
    for note in dict.fromkeys(said):
        ctx.note("paired", note)
    frame = pd.concat([f for f in rows if len(f)] or rows[:1], ignore_index=True)
    overall = frame[frame["attribute"] == "all"]
    ctx.note(
        "paired",
        f"{overall['comparison'].nunique()} comparison(s), {len(overall)} model-output rows: "
        + ", ".join(f"{(overall['equivalence'] == k).sum()} {k}" for k in _DECISIONS),
    )
    tables = {
        "paired": frame,
        "paired_pairs": pd.concat([f for f in pairs if len(f)] or pairs[:1], ignore_index=True),
    }
    return ctx.write("paired", tables, note="; ".join(ctx.notes.get("paired", [])) or None)


_DECISIONS = ("equivalent", "not equivalent", "inconclusive")
