"""audit_flow: validate -> predict -> accuracy -> survival -> verdict -> publish.

Thin orchestration only: each task wraps one function of :mod:`audit.stages`, where the
work (and every test of it) lives. Later issues add robustness,
fairness and drift as further tasks between the same ends.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from audit import stages
from audit.config import load_config
from flows.tasks import publish, validate


@task(name="predictions", cache_policy=NONE)
def predict(ctx: stages.RunContext) -> int:
    return stages.predict_stage(ctx)


@task(name="accuracy", cache_policy=NONE)
def accuracy(ctx: stages.RunContext) -> int:
    return stages.accuracy_stage(ctx)


@task(name="survival", cache_policy=NONE)
def survival(ctx: stages.RunContext) -> int:
    return stages.survival_stage(ctx)


@task(name="verdict", cache_policy=NONE)
def verdict(ctx: stages.RunContext) -> str:
    return stages.verdict_stage(ctx)


@flow(name="audit", log_prints=False, validate_parameters=True)
def audit_flow(cohort: str, models: list[str], out: str = "reports",
               config: str | None = None, overrides: dict | None = None) -> dict:
    """Audit ``models`` on the cohort folder ``cohort``; results go to ``out``/audit.duckdb.

    Returns ``{"run_id", "verdict", "report"}``.
    """
    cfg = load_config(config, **(overrides or {}))
    ctx = stages.start(cohort, models, out, cfg, flow="audit")
    with stages.running(ctx):
        validate(ctx)
        predict(ctx)
        accuracy(ctx)
        survival(ctx)
        result = verdict(ctx)
        report = publish(ctx, result)
    return {"run_id": ctx.run_id, "verdict": result, "report": report}
