"""The last stages: the verdict from this run's tables, then the pages, verdict.json and
the signed manifest, recorded as artifacts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from audit.data.hashing import sha256_file
from audit.pipeline.dossier import build_manifest
from audit.pipeline.verdict import Evidence, evaluate, overall, tables_read
from audit.report import render_index, render_run
from audit.stages.context import RunContext


def verdict_stage(ctx: RunContext) -> str:
    """Checks against the config's thresholds, read back from this run's tables."""
    q = ctx.store.query(
        "SELECT count(DISTINCT photo_id) FROM quarantine WHERE run_id = ?", [ctx.run_id]
    ).iloc[0, 0]
    tables = {name: ctx.store.table(name, ctx.run_id) for name in tables_read()}
    if not ctx.config.fairness.enabled:
        tables["decision_subgroups"] = None  # the subgroup utility check is fairness's
    if not ctx.config.slices.enabled:
        tables["slices"] = None
    verdicts = evaluate(
        Evidence(
            models=[
                {"name": m.name, "outputs": m.outputs, "needs_images": m.needs_images}
                for m in ctx.models
            ],
            thresholds=ctx.config.thresholds,
            n_manifest_rows=ctx.cohort.n_manifest_rows,
            n_quarantined=int(q),
            has_outcomes=ctx.cohort.has_outcomes,
            fairness_metrics=ctx.config.fairness.verdict_metrics,
            declared_groups=ctx.config.fairness.declared_groups(),
            tables=tables,
        )
    )
    ctx.write("verdict", {"verdicts": verdicts})
    return overall(verdicts)


def publish_stage(ctx: RunContext, verdict: str) -> Path:
    """Render the run's page, verdict.json and the index over runs; record them as artifacts."""
    paths = render_run(ctx.store, ctx.run_id, ctx.out_dir, final_verdict=verdict)
    earlier = ctx.store.table("artifacts", ctx.run_id)[["kind", "path", "sha256"]]
    manifest = build_manifest(
        ctx.store.run(ctx.run_id),
        ctx.cohort,
        ctx.models,
        ctx.out_dir,
        pd.concat([earlier, paths]).to_dict("records"),
    )
    paths = pd.concat(
        [
            paths,
            pd.DataFrame(
                [
                    {
                        "kind": "run_manifest",
                        "path": str(manifest.relative_to(ctx.out_dir)),
                        "sha256": sha256_file(manifest),
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
    ctx.write("publish", {"artifacts": paths})
    ctx.store.finish_run(ctx.run_id, verdict)
    render_index(ctx.store, ctx.out_dir)
    return ctx.out_dir / "runs" / ctx.run_id / "index.html"
