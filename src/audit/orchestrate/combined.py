"""The order of a combined audit, for every orchestrator (as :mod:`audit.orchestrate.sequence`
is for a site's run): read and verify the bundles, pool, judge, publish.

The combined audit is a run of flow ``combine`` in its own ``OUT/audit.duckdb``: its
``runs`` row names the sites (``cohort_name``), the bundles' joint SHA-256
(``cohort_sha256``), the models as most sites audited them, and the config; its stages write
``combined_sites``, ``combined_models``, ``combined_estimates`` and ``combined_pooled`` in
one transaction, then ``verdicts``, then the page's artifacts. A run killed halfway leaves
the file consistent (a stage is all or nothing) and is marked abandoned by the next one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from audit.errors import InputError
from audit.orchestrate.sequence import Step, inline_step
from audit.pipeline.combine import (
    FLOW,
    SiteBundle,
    combine_tables,
    combined_verdicts,
    models_of,
    read_site,
)
from audit.pipeline.config import AuditConfig
from audit.pipeline.store import Store
from audit.pipeline.verdict import overall
from audit.report.render import render_index, render_run


def read_sites(bundles: Sequence[str | Path], cfg: AuditConfig) -> list[SiteBundle]:
    """Every bundle read and verified (a missing file: InputError, exit 2)."""
    return [read_site(path, cfg.combine.site_keys) for path in bundles]


def combine_sequence(
    bundles: Sequence[str | Path], out: str | Path, cfg: AuditConfig, *, step: Step = inline_step
) -> dict:
    """Combine the site ``bundles`` into ``out``; return ``{"run_id", "verdict", "report"}``."""
    if not bundles:
        raise InputError("combine: no bundle given")
    sites = step("read bundles", read_sites, list(map(str, bundles)), cfg)
    out = Path(out)
    store = Store(out / "audit.duckdb")
    labels = sorted({s.site for s in sites if s.site})
    joint = hashlib.sha256("".join(sorted(s.sha256 for s in sites)).encode()).hexdigest()
    models = models_of(sites)
    run_id = store.start_run(
        flow=FLOW,
        cohort_name=f"{len(labels)} site{'' if len(labels) == 1 else 's'} ({', '.join(labels)})",
        cohort_sha256=joint,
        models=models,
        config_json=cfg.canonical_json(),
        config_sha256=cfg.sha256(),
        synthetic=any(bool((s.bundle or {}).get("synthetic")) for s in sites),
    )
    try:
        with store.heartbeating(run_id):
            tables = step("combine", _combine_stage, store, run_id, sites, cfg)
            verdict = step("verdict", _verdict_stage, store, run_id, tables, models, cfg)
            report = step("publish", _publish_stage, store, run_id, out, verdict)
    except BaseException as exc:
        store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    return {"run_id": run_id, "verdict": verdict, "report": str(report)}


def _combine_stage(store: Store, run_id: str, sites: list[SiteBundle], cfg: AuditConfig) -> dict:
    tables, _ = combine_tables(sites, cfg)
    k = int((tables["combined_sites"]["status"] == "pooled").sum())
    store.write_stage(run_id, "combine", tables, note=f"{k} of {len(sites)} bundle(s) pooled")
    return tables


def _verdict_stage(store, run_id, tables: dict, models: list[dict], cfg: AuditConfig) -> str:
    verdicts = combined_verdicts(tables, models, cfg)
    store.write_stage(run_id, "verdict", {"verdicts": verdicts})
    return overall(verdicts)


def _publish_stage(store: Store, run_id: str, out: Path, verdict: str) -> Path:
    paths = render_run(store, run_id, out, final_verdict=verdict)
    store.write_stage(run_id, "publish", {"artifacts": paths})
    store.finish_run(run_id, verdict)
    render_index(store, out)
    return out / "runs" / run_id / "index.html"
