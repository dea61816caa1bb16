"""validation_flow: the data checks alone, no model (for scheduled validation runs).

validate (Great Expectations suites, image checks, quarantine) -> verdict -> publish.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from audit import stages
from audit.config import load_config
from flows.tasks import publish, validate


@task(name="validation verdict", cache_policy=NONE)
def verdict(ctx: stages.RunContext) -> str:
    return stages.validation_verdict(ctx)


@flow(name="validate", log_prints=False, validate_parameters=True)
def validation_flow(cohort: str, out: str = "reports", config: str | None = None) -> dict:
    """Validate the cohort folder ``cohort``; results go to ``out``/audit.duckdb.

    Returns ``{"run_id", "verdict", "report"}``; the verdict fails when an error check failed.
    """
    ctx = stages.start(cohort, [], out, load_config(config), flow="validate")
    with stages.running(ctx):
        validate(ctx)
        result = verdict(ctx)
        report = publish(ctx, result)
    return {"run_id": ctx.run_id, "verdict": result, "report": report}
