"""audit_flow: validate -> predict -> robustness -> saliency -> accuracy -> fairness ->
survival -> drift -> verdict -> publish.

Thin orchestration only: each task wraps one function of :mod:`audit.stages`, where the
work (and every test of it) lives.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NONE

from audit import stages
from audit.config import load_config
from flows.tasks import publish, validate


def dask_task_runner(address: str | None = None, workers: int = 2):
    """prefect-dask's runner: an existing scheduler at ``address``, else a LocalCluster of
    ``workers`` single-threaded worker processes."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


@task(name="predictions", cache_policy=NONE)
def predict(ctx: stages.RunContext, shard_results: list | None = None) -> int:
    return stages.predict_stage(ctx, shard_results)


@task(name="predict shard", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def predict_shard(shard: stages.Shard):
    """One shard on a (Dask) worker: it returns predictions, only the flow writes DuckDB."""
    return shard, stages.run_shard(shard)


@task(name="robustness", cache_policy=NONE)
def robustness(ctx: stages.RunContext, shard_results: list | None = None) -> int:
    return stages.robustness_stage(ctx, shard_results)


@task(name="robustness shard", cache_policy=NONE, retries=2, retry_delay_seconds=1)
def robustness_shard(shard: stages.RobustnessShard):
    """Perturbed passes of one slice of the sample on a (Dask) worker."""
    return shard, stages.run_robustness_shard(shard)


@task(name="saliency", cache_policy=NONE)
def saliency(ctx: stages.RunContext) -> int:
    return stages.saliency_stage(ctx)


@task(name="accuracy", cache_policy=NONE)
def accuracy(ctx: stages.RunContext) -> int:
    return stages.accuracy_stage(ctx)


@task(name="fairness", cache_policy=NONE)
def fairness(ctx: stages.RunContext) -> int:
    return stages.fairness_stage(ctx)


@task(name="survival", cache_policy=NONE)
def survival(ctx: stages.RunContext) -> int:
    return stages.survival_stage(ctx)


@task(name="drift", cache_policy=NONE)
def drift(ctx: stages.RunContext) -> int:
    return stages.drift_stage(ctx)


@task(name="verdict", cache_policy=NONE)
def verdict(ctx: stages.RunContext) -> str:
    return stages.verdict_stage(ctx)


@flow(name="audit", log_prints=False, validate_parameters=True)
def audit_flow(cohort: str, models: list[str], out: str = "reports",
               config: str | None = None, overrides: dict | None = None,
               shards: int = 0, reference: str | None = None, flow_label: str = "audit"
               ) -> dict:
    """Audit ``models`` on the cohort folder ``cohort``; results go to ``out``/audit.duckdb.

    ``shards`` > 0 splits image inference, and the robustness sample, into that many shard
    tasks each, which run on the flow's task runner (Dask workers with ``--runner dask``).
    ``reference``: a finished run in ``out``/audit.duckdb to measure drift against. Returns ``{"run_id",
    "verdict", "report"}``.
    """
    cfg = load_config(config, **(overrides or {}))
    ctx = stages.start(cohort, models, out, cfg, flow=flow_label, reference=reference)
    with stages.running(ctx):
        validate(ctx)
        results = None
        if shards:
            futures = [predict_shard.submit(s) for s in stages.plan_shards(ctx, shards)]
            results = [f.result() for f in futures]
        predict(ctx, results)
        robust = None
        if shards:
            futures = [robustness_shard.submit(s)
                       for s in stages.plan_robustness_shards(ctx, shards)]
            robust = [f.result() for f in futures]
        robustness(ctx, robust)
        saliency(ctx)
        accuracy(ctx)
        fairness(ctx)
        survival(ctx)
        drift(ctx)
        result = verdict(ctx)
        report = publish(ctx, result)
    return {"run_id": ctx.run_id, "verdict": result, "report": report}
