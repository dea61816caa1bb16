"""What a Prefect UI user sees of an audit: three artifacts per run, read back from DuckDB.

- a markdown artifact: the verdict, then every check, those that failed or could not be
  judged first, with value, threshold and reason;
- a table artifact: the headline metrics (each model's overall accuracy rows with their CIs);
- a link artifact: the run's HTML report (a ``file://`` address on the machine that ran it).

Keys are ``<cohort>-verdict``, ``<cohort>-metrics`` and ``<cohort>-report`` (lowercase
letters, digits and dashes, as Prefect requires), so the UI's Artifacts page keeps each
cohort's history across runs. No photo and no id goes into an artifact.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from audit.pipeline.store import Store
from audit.report.summary import summarise

_ORDER = {"fail": 0, "inconclusive": 1, "skipped": 2, "pass": 3}


def artifact_key(cohort_name: str, what: str) -> str:
    """``<cohort>-<what>`` in the characters Prefect allows in a key."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(cohort_name).lower()).strip("-") or "cohort"
    return f"{slug[:60]}-{what}"


def verdict_markdown(store: Store, run_id: str) -> str:
    """The verdict and every check as a markdown table, failed and inconclusive first."""
    summary = summarise(store, run_id)
    verdicts = store.table("verdicts", run_id)
    head = summary.lines()[:3]
    lines = [f"## {head[0][1]}", "", *(text for _, text in head[1:]), ""]
    if len(verdicts):
        verdicts = verdicts.assign(_order=verdicts["status"].map(_ORDER).fillna(9))
        verdicts = verdicts.sort_values(["_order", "model", "check_name"], kind="stable")
        lines += [
            "| status | model | check | value | threshold | details |",
            "|---|---|---|---|---|---|",
        ]
        for r in verdicts.itertuples():
            lines.append(
                f"| {r.status} | {r.model or ''} | {r.check_name} | {_cell(r.value)} | "
                f"{_cell(r.threshold)} | {_escape(r.details)} |"
            )
    if summary.quarantine:
        lines += ["", "Quarantined rows by reason:", ""]
        lines += [f"- {n} {_escape(text)}" for n, text in summary.quarantine]
    return "\n".join(lines)


def metrics_table(store: Store, run_id: str) -> list[dict]:
    """Each model's overall accuracy rows: model, output, metric, value, CI, n."""
    acc = store.table("accuracy", run_id)
    if not len(acc):
        return []
    overall = acc[acc["attribute"] == "all"]
    return [
        {
            "model": r.model,
            "output": r.output,
            "metric": r.metric,
            "value": _round(r.value),
            "ci_low": _round(r.ci_low),
            "ci_high": _round(r.ci_high),
            "n": int(r.n),
        }
        for r in overall.itertuples()
    ]


def publish_artifacts(db: str | Path, run_id: str, report: str | Path | None) -> list[str]:
    """Create the run's artifacts in the current Prefect flow run; returns their keys."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    store = Store(Path(db))
    name = store.run(run_id).get("cohort_name") or "cohort"
    keys = []
    key = artifact_key(name, "verdict")
    create_markdown_artifact(
        verdict_markdown(store, run_id), key=key, description=f"faceage-audit run {run_id}"
    )
    keys.append(key)
    rows = metrics_table(store, run_id)
    if rows:
        key = artifact_key(name, "metrics")
        create_table_artifact(rows, key=key, description=f"headline metrics of run {run_id}")
        keys.append(key)
    if report:
        key = artifact_key(name, "report")
        create_link_artifact(
            Path(report).resolve().as_uri(),
            link_text=f"report of run {run_id}",
            key=key,
            description=f"the page of run {run_id}, on the machine that ran it",
        )
        keys.append(key)
    return keys


def _cell(value) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.4g}"


def _round(value):
    return None if value is None or pd.isna(value) else float(f"{float(value):.4g}")


def _escape(text) -> str:
    return str(text or "").replace("|", "\\|").replace("\n", " ")
