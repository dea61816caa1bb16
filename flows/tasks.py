"""Tasks shared by the flows: each wraps one function of :mod:`audit.stages`."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from audit import stages


@task(name="validate", cache_policy=NONE)
def validate(ctx: stages.RunContext) -> int:
    return stages.validate_stage(ctx)


@task(name="publish", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def publish(ctx: stages.RunContext, result: str) -> str:
    return str(stages.publish_stage(ctx, result))
