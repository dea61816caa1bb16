"""Alerts: tell the site when a scheduled run failed, a verdict failed or drift was found.

Sent through Prefect's ``CustomWebhookNotificationBlock`` (a POST of JSON to the URL in the
config's ``[alerts]`` section), so the same alert can later go through any of Prefect's
notification blocks or automations. Reports never carry ids or photos; neither do alerts:
they name the run, the cohort, the verdict and the failed checks.
"""

from __future__ import annotations

from pathlib import Path


def alert_reasons(result: dict | None, error: str | None, verdicts=None, on=None) -> list[str]:
    """Why this run deserves an alert (empty: it does not)."""
    on = set(on or ("failed", "fail", "drift"))
    reasons = []
    if error and "failed" in on:
        reasons.append(f"the run failed: {error}")
    if result and result.get("verdict") == "fail" and "fail" in on:
        reasons.append("the verdict is fail")
    if verdicts is not None and len(verdicts) and "drift" in on:
        drift = verdicts[(verdicts["category"] == "drift") & (verdicts["status"] == "fail")]
        if len(drift):
            reasons.append("drift against the reference: " + ", ".join(drift["check_name"]))
    return reasons


def send(url: str, payload: dict) -> None:
    """POST ``payload`` (JSON) to ``url`` through Prefect's webhook notification block."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="faceage-audit",
        url=url,
        json_data={"title": "{{subject}}", "text": "{{body}}", **payload},
    )
    block.notify(body=payload.get("summary", ""), subject="faceage-audit alert")


def alert_arrival(cfg, store, folder, result: dict | None, error: str | None) -> None:
    """Send the alert an audited (or failed) inbox arrival deserves, if the config has a
    webhook and the run gives a reason."""
    if not cfg.alerts.webhook:
        return
    verdicts = store.table("verdicts", result["run_id"]) if result else None
    reasons = alert_reasons(result, error, verdicts, cfg.alerts.on)
    if reasons:
        send(
            cfg.alerts.webhook,
            {
                "cohort_folder": str(folder),
                "run_id": (result or {}).get("run_id", ""),
                "verdict": (result or {}).get("verdict", "error"),
                "report": str((result or {}).get("report", "")),
                "summary": f"{Path(folder).name}: " + "; ".join(reasons),
            },
        )


def alert_failure(cfg, folder, flow: str, run_id: str | None, error: str) -> None:
    """Send the alert of a run that failed outside the drop folder (a scheduled validation,
    a triggered audit or monitor run), when the config has a webhook and asks for failures."""
    if not cfg.alerts.webhook or "failed" not in set(cfg.alerts.on):
        return
    send(
        cfg.alerts.webhook,
        {
            "cohort_folder": str(folder or ""),
            "run_id": run_id or "",
            "verdict": "error",
            "report": "",
            "summary": f"{Path(folder or '').name or flow}: the {flow} run failed: {error}",
        },
    )
