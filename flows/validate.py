"""validation_flow: the data checks alone, no model (for scheduled validation runs).

load -> validate (Great Expectations suites, image checks, quarantine) -> verdict -> publish.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from audit import stages
from audit.config import load_config


@task(name="validate", cache_policy=NONE)
def validate(ctx: stages.RunContext) -> int:
    return stages.validate_stage(ctx)


@task(name="validation verdict", cache_policy=NONE)
def verdict(ctx: stages.RunContext) -> str:
    return stages.validation_verdict(ctx)


@task(name="publish", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def publish(ctx: stages.RunContext, result: str) -> str:
    return str(stages.publish_stage(ctx, result))


@flow(name="validate", log_prints=False, validate_parameters=True)
def validation_flow(cohort: str, out: str = "reports", config: str | None = None) -> dict:
    """Validate the cohort folder ``cohort``; results go to ``out``/audit.duckdb.

    Returns ``{"run_id", "verdict", "report"}``; the verdict fails when an error check failed.
    """
    cfg = load_config(config)
    ctx = stages.start(cohort, [], out, cfg, flow="validate")
    with ctx.store.heartbeating(ctx.run_id):
        try:
            validate(ctx)
            result = verdict(ctx)
            report = publish(ctx, result)
        except BaseException as exc:
            stages.fail(ctx, exc)
            raise
    return {"run_id": ctx.run_id, "verdict": result, "report": report}
