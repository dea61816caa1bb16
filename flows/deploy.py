"""Deployments with cron schedules: the scheduled validation of a cohort folder and the
monitor run over a drop folder of arriving cohorts (``faceage-audit deploy``)."""

from __future__ import annotations

from flows.monitor import inbox_flow
from flows.validate import validation_flow


def build_deployments(*, models: list[str], out: str, cohort: str | None = None,
                      inbox: str | None = None, reference: str | None = None,
                      config: str | None = None, cron: str = "0 3 * * *",
                      monitor_cron: str = "0 4 * * *") -> list:
    """Prefect ``RunnerDeployment`` objects (``flow.to_deployment``), ready to ``serve``.

    Entry points are module paths (``flows.validate.validation_flow``): loaded as a script
    by file, ``flows/audit.py`` would shadow the ``audit`` package."""
    from prefect.deployments.runner import EntrypointType

    module = {"entrypoint_type": EntrypointType.MODULE_PATH}
    deployments = []
    if cohort:
        deployments.append(validation_flow.to_deployment(
            name="scheduled-validation", cron=cron,
            parameters={"cohort": cohort, "out": out, "config": config},
            description=f"Validate {cohort} on schedule {cron}", **module))
    if inbox:
        deployments.append(inbox_flow.to_deployment(
            name="monitor-inbox", cron=monitor_cron,
            parameters={"inbox": inbox, "models": models, "out": out,
                        "reference": reference, "config": config},
            description=f"Audit new cohorts in {inbox} on schedule {monitor_cron}", **module))
    return deployments
