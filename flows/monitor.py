"""monitor_flow: a new external cohort against a reference, through the audit flow.

The reference is a run id in the output folder's audit.duckdb, or a cohort folder: then the
newest finished run there of the same cohort (by content SHA-256) and the same models is
reused, and when there is none the reference cohort is audited first.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.audit import audit_flow


def resolve_reference(reference: str, models: list[str], out: str, config: str | None = None,
                      overrides: dict | None = None) -> str:
    """A finished run id for ``reference`` (a run id, or a cohort folder audited if needed)."""
    from audit.cohort import load_cohort
    from audit.errors import InputError
    from audit.hashing import HashCache
    from audit.models import create_model
    from audit.store import Store, is_run_id

    store = Store(Path(out) / "audit.duckdb")
    if is_run_id(reference):
        if store.run(reference)["status"] != "finished":
            raise InputError(f"--reference {reference}: that run did not finish")
        return reference
    if not Path(reference).is_dir():
        raise InputError(f"--reference {reference}: neither a run id nor a cohort folder")
    cohort = load_cohort(reference, hash_cache=HashCache.default())
    names = sorted(create_model(m).name for m in models)
    runs = store.runs() if store.path.is_file() else None
    if runs is not None and len(runs):
        import json

        same = runs[(runs["cohort_sha256"] == cohort.sha256) & (runs["status"] == "finished")]
        for r in same.sort_values("started_at", ascending=False).itertuples():
            if sorted(m["name"] for m in json.loads(r.models or "[]")) == names:
                return r.run_id
    return audit_flow(cohort=reference, models=models, out=out, config=config,
                      overrides=overrides)["run_id"]


@flow(name="monitor", log_prints=False, validate_parameters=True)
def monitor_flow(cohort: str, reference: str, models: list[str], out: str = "reports",
                 config: str | None = None, overrides: dict | None = None) -> dict:
    """Audit ``cohort`` with drift against ``reference``; returns the audit flow's result
    with ``reference`` (the run compared against)."""
    ref = resolve_reference(reference, models, out, config, overrides)
    result = audit_flow(cohort=cohort, models=models, out=out, config=config,
                        overrides=overrides, reference=ref, flow_label="monitor")
    return {**result, "reference": ref}


@flow(name="monitor-inbox", log_prints=False, validate_parameters=True)
def inbox_flow(inbox: str, models: list[str], out: str = "reports",
               reference: str | None = None, config: str | None = None,
               overrides: dict | None = None) -> list[dict]:
    """Audit every complete cohort folder that arrived in ``inbox`` since the last run, once
    each (with drift against ``reference`` when given); alert per the config."""
    from audit.config import load_config
    from audit.inbox import scan
    from audit.store import Store

    cfg = load_config(config, **(overrides or {}))
    store = Store(Path(out) / "audit.duckdb")
    done = []
    for arrival in scan(inbox, store, cfg.inbox.settle_seconds):
        if arrival.status != "ready":
            continue
        result, error = None, None
        try:
            if reference:
                result = monitor_flow(cohort=str(arrival.path), reference=reference,
                                      models=models, out=out, config=config,
                                      overrides=overrides)
            else:
                result = audit_flow(cohort=str(arrival.path), models=models, out=out,
                                    config=config, overrides=overrides)
        except Exception as exc:  # one bad arrival never stops the others; it is reported
            error = f"{type(exc).__name__}: {exc}"
        done.append({"folder": str(arrival.path), "error": error,
                     **({k: str(v) for k, v in result.items()} if result else {})})
        _alert(cfg, store, arrival.path, result, error)
    return done


def _alert(cfg, store, folder, result, error) -> None:
    from audit.alerts import alert_reasons, send

    if not cfg.alerts.webhook:
        return
    verdicts = store.table("verdicts", result["run_id"]) if result else None
    reasons = alert_reasons(result, error, verdicts, cfg.alerts.on)
    if reasons:
        send(cfg.alerts.webhook, {
            "cohort_folder": str(folder), "run_id": (result or {}).get("run_id", ""),
            "verdict": (result or {}).get("verdict", "error"),
            "report": str((result or {}).get("report", "")),
            "summary": f"{Path(folder).name}: " + "; ".join(reasons)})
