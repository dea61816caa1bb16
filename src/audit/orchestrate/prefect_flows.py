"""The Prefect orchestrator: the run order of :mod:`audit.orchestrate.sequence`, each stage
a Prefect task (retries on the shard tasks and on publishing), shards on the flow's task
runner (Dask workers with ``--runner dask``), and the deployments with cron schedules.

The top-level ``flows/`` package re-exports these flows for Prefect's tooling; the library
itself never imports ``flows``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NONE

from audit import stages
from audit.monitor.alerts import alert_failure
from audit.orchestrate.artifacts import publish_artifacts
from audit.orchestrate.combined import combine_sequence
from audit.orchestrate.sequence import (
    audit_sequence,
    process_inbox,
    validation_sequence,
)
from audit.orchestrate.sequence import (
    resolve_reference as _resolve,
)
from audit.pipeline import progress
from audit.pipeline.config import load_config
from audit.stages.context import error_text

# Task options a stage needs beyond the defaults (shards run on workers and may be retried;
# publishing writes files and may meet a transient error).
_RETRIES = {"predict shard": 2, "robustness shard": 2, "publish": 1}
_DELAY = {"predict shard": 1, "robustness shard": 1, "publish": 2}
# Task runs named for what they compute (Prefect's default adds a random suffix).
_RUN_NAMES = {"statistics piece": "{piece.stage}: {piece.label}"}
_TASKS: dict[tuple, object] = {}


def _task(name: str, fn: Callable):
    key = (name, fn.__module__, fn.__qualname__)
    if key not in _TASKS:
        _TASKS[key] = task(
            fn,
            name=name,
            cache_policy=NONE,
            retries=_RETRIES.get(name, 0),
            retry_delay_seconds=_DELAY.get(name, 0),
            task_run_name=_RUN_NAMES.get(name),
        )
    return _TASKS[key]


def prefect_step(name: str, fn: Callable, *args):
    """One stage as a Prefect task, run in the flow."""
    return _task(name, fn)(*args)


def prefect_fan_out(name: str, fn: Callable, items: Sequence) -> list:
    """Every shard submitted to the flow's task runner; results in the order of ``items``."""
    futures = [_task(name, fn).submit(item) for item in items]
    return [(item, f.result()) for item, f in zip(items, futures)]


def prefect_spread(name: str, fn: Callable, items: Sequence) -> list:
    """The statistics pieces as tasks on the flow's Dask workers, submitted the longest
    first (by their ``cost``) so that the workers finish together; results in the order of
    ``items``. Only on Dask (:func:`audit_flow`): on Prefect's default runner the stages compute
    their own pieces one after another in their tasks (its thread pool would share one
    process's warning filters, which each Cox fit sets to record lifelines' warnings, between
    fits)."""
    order = sorted(range(len(items)), key=lambda i: -items[i].cost)  # stable for ties
    done = prefect_fan_out(name, fn, [items[i] for i in order])
    results = dict(zip(order, (result for _, result in done), strict=True))
    return [(item, results[i]) for i, item in enumerate(items)]


def _dask_runner():
    """This flow run's task runner if it is prefect-dask's, else None."""
    from prefect.context import FlowRunContext

    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return runner if type(runner).__module__.startswith("prefect_dask") else None


# What a worker would otherwise import in its first Prefect task and its first pieces: the
# task engine, the statistics stages and the libraries their pieces import on first use
# (lazily, so that the command line starts fast). 3 to 4 s a worker on the reference
# machine, spent while the flow validates and predicts instead (benchmarks/RESULTS.md).
WORKER_IMPORTS = (
    "prefect.task_engine",
    "audit.stages",
    "lifelines",
    "sksurv.linear_model",
    "sksurv.metrics",
    "fairlearn.metrics",
)


def warm_workers(client) -> int:
    """Every worker of the Dask ``client``'s cluster imports :data:`WORKER_IMPORTS` in the
    background (a plain Dask task each, not waited for); returns how many were asked. A
    worker that joins later imports them with its first piece."""
    from distributed import fire_and_forget

    workers = list(client.scheduler_info()["workers"])
    for address in workers:
        future = client.submit(import_modules, WORKER_IMPORTS, workers=[address], pure=False)
        fire_and_forget(future)
    return len(workers)


def import_modules(names: Sequence[str]) -> list[str]:
    """Import ``names`` here (a worker's warm-up); returns those imported."""
    import importlib

    return [importlib.import_module(name).__name__ for name in names]


def dask_task_runner(address: str | None = None, workers: int = 2):
    """prefect-dask's runner: an existing scheduler at ``address``, else a LocalCluster of
    ``workers`` single-threaded worker processes."""
    from prefect_dask import DaskTaskRunner  # Dask starts only when asked for

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        },
    )


# What the flow's LocalCluster changes in Dask's defaults, each
# measured on the statistics of 100,000 subjects (benchmarks/RESULTS.md, "Registry scale"):
# - no MALLOC_TRIM_THRESHOLD_ (Dask's pre-spawn default): setting it also freezes glibc's
#   mmap threshold at 128 KiB, so every numpy temporary above it is mapped and page-faulted
#   afresh (a piece computed up to 70% slower);
# - no statistical profiler: every 10 ms it takes the GIL to walk the computing thread's
#   stack, deep in pandas and lifelines (with the first, the pieces computed 30-40% slower
#   in a worker than in this process; without both, as fast);
# - the scheduler hands a single-threaded worker one task at a time (worker-saturation 1.0,
#   not 1.1, which queues a second task on a busy worker while another falls idle at the
#   end): the workers take the pieces strictly in the order submitted, the longest first.
# BLAS stays at one thread a worker, as Dask sets it. A cluster of your own (--dask-address)
# keeps its own settings: give its workers the same.
CLUSTER_SETTINGS = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.scheduler.worker-saturation": 1.0,
}


def local_cluster(**kwargs):
    """A Dask LocalCluster with :data:`CLUSTER_SETTINGS`. Its workers start bare (the
    flow waits for them) and import the statistics in the background once the flow runs
    (:func:`warm_workers`)."""
    import dask
    import distributed

    with dask.config.set(CLUSTER_SETTINGS):
        return distributed.LocalCluster(**kwargs)


@flow(name="audit", log_prints=False, validate_parameters=True)
def audit_flow(
    cohort: str,
    models: list[str],
    out: str = "reports",
    config: str | None = None,
    overrides: dict | None = None,
    shards: int = 0,
    reference: str | None = None,
    flow_label: str = "audit",
    alert_failures: bool = True,
) -> dict:
    """Audit ``models`` on the cohort folder ``cohort``; results go to ``out``/audit.duckdb.

    ``shards`` > 0 splits image inference, and the robustness sample, into that many shard
    tasks each. ``reference``: a finished run in ``out``/audit.duckdb to measure drift
    against. Returns ``{"run_id", "verdict", "report"}``. A run that fails is in
    ``audit.duckdb`` as ``failed`` with its reason (even one that could not start) and, with
    ``alert_failures``, alerted per the config.
    """
    with _Attempt(out, flow_label, cohort, config, overrides, alert_failures) as attempt:
        runner = _dask_runner()
        if runner is not None:
            warm_workers(runner.client)  # while this process validates and predicts
        cfg = load_config(config, **(overrides or {}))
        attempt.ctx = stages.start(cohort, models, out, cfg, flow=flow_label, reference=reference)
        result = audit_sequence(
            attempt.ctx,
            shards=shards,
            step=prefect_step,
            fan_out=prefect_fan_out,
            spread=prefect_spread if runner is not None else None,
        )
    _artifacts(out, result)
    return result


class _Attempt:
    """A flow's body: on an exception, the run is recorded as ``failed`` (a row is written
    when the run could not even start), Prefect's log says why, the config's webhook is
    alerted (``alert``), and the exception goes on, so Prefect marks the flow run failed."""

    def __init__(self, out, flow_name, cohort, config, overrides, alert: bool):
        self.out, self.flow_name, self.cohort = out, flow_name, cohort
        self.config, self.overrides, self.alert = config, overrides, alert
        self.ctx = None

    def __enter__(self) -> "_Attempt":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if not isinstance(exc, Exception) or getattr(exc, "_faceage_audit_recorded", False):
            return False
        run_id = (
            self.ctx.run_id
            if self.ctx is not None
            else stages.failed_start(self.out, self.flow_name, self.cohort, exc)
        )
        exc._faceage_audit_recorded = True  # a parent flow does not record it twice
        error = error_text(exc)
        _log_error(f"{self.flow_name} run {run_id or '(not recorded)'} failed: {error}")
        if self.alert:
            try:
                cfg = load_config(self.config, **(self.overrides or {}))
                alert_failure(cfg, self.cohort, self.flow_name, run_id, error)
            except Exception as problem:  # a config that cannot load cannot name a webhook
                _log_error(f"no alert sent: {type(problem).__name__}: {problem}")
        return False


def _log_error(text: str) -> None:
    try:
        from prefect import get_run_logger

        get_run_logger().error(text)
    except Exception:  # outside a flow run there is no run logger
        progress.note(text)


def _artifacts(out: str, result: dict) -> None:
    """The run's Prefect artifacts (verdict, headline metrics, report link). The run's
    results are in DuckDB already: an API that refuses them is said, not raised."""
    try:
        publish_artifacts(Path(out) / "audit.duckdb", result["run_id"], result.get("report"))
    except Exception as exc:  # the Prefect API's own failure, not the audit's
        progress.note(f"Prefect artifacts not published: {type(exc).__name__}: {exc}")


@flow(name="validate", log_prints=False, validate_parameters=True)
def validation_flow(cohort: str, out: str = "reports", config: str | None = None) -> dict:
    """Validate the cohort folder ``cohort`` (no model); results go to ``out``/audit.duckdb.
    Returns ``{"run_id", "verdict", "report"}``; the verdict fails when an error check
    failed."""
    with _Attempt(out, "validate", cohort, config, None, alert=True) as attempt:
        attempt.ctx = stages.start(cohort, [], out, load_config(config), flow="validate")
        result = validation_sequence(attempt.ctx, step=prefect_step)
    _artifacts(out, result)
    return result


@flow(name="combine", log_prints=False, validate_parameters=True)
def combine_flow(bundles: list[str], out: str = "combined", config: str | None = None) -> dict:
    """Combine site bundles (``faceage-audit export-bundle``) into ``out``/audit.duckdb: every
    signature verified, the same models checked, each quantity pooled across sites, judged
    and published. Returns ``{"run_id", "verdict", "report"}``."""
    result = combine_sequence(bundles, out, load_config(config), step=prefect_step)
    _artifacts(out, result)
    return result


def resolve_reference(
    reference: str,
    models: list[str],
    out: str,
    config: str | None = None,
    overrides: dict | None = None,
) -> str:
    """A finished run id for ``reference`` (a run id, or a cohort folder audited by
    :func:`audit_flow` when no finished run of it exists)."""
    return _resolve(
        reference,
        models,
        out,
        lambda folder: audit_flow(
            cohort=folder, models=models, out=out, config=config, overrides=overrides
        ),
    )


@flow(name="monitor", log_prints=False, validate_parameters=True)
def monitor_flow(
    cohort: str,
    reference: str,
    models: list[str],
    out: str = "reports",
    config: str | None = None,
    overrides: dict | None = None,
    alert_failures: bool = True,
) -> dict:
    """Audit ``cohort`` with drift against ``reference``; returns the audit flow's result
    with ``reference`` (the run compared against). A reference that cannot be used fails
    the run, recorded and alerted as :func:`audit_flow` does."""
    with _Attempt(out, "monitor", cohort, config, overrides, alert_failures):
        ref = resolve_reference(reference, models, out, config, overrides)
        result = audit_flow(
            cohort=cohort,
            models=models,
            out=out,
            config=config,
            overrides=overrides,
            reference=ref,
            flow_label="monitor",
            alert_failures=alert_failures,
        )
    return {**result, "reference": ref}


@flow(name="monitor-inbox", log_prints=False, validate_parameters=True)
def inbox_flow(
    inbox: str,
    models: list[str],
    out: str = "reports",
    reference: str | None = None,
    config: str | None = None,
    overrides: dict | None = None,
) -> list[dict]:
    """Audit every complete cohort folder that arrived in ``inbox`` since the last run, once
    each (with drift against ``reference`` when given); alert per the config."""
    cfg = load_config(config, **(overrides or {}))

    def audit_one(folder: str) -> dict:  # each arrival's failure is alerted once, below
        if reference:
            return monitor_flow(
                cohort=folder,
                reference=reference,
                models=models,
                out=out,
                config=config,
                overrides=overrides,
                alert_failures=False,
            )
        return audit_flow(
            cohort=folder,
            models=models,
            out=out,
            config=config,
            overrides=overrides,
            alert_failures=False,
        )

    return process_inbox(inbox, out, cfg, audit_one)


def build_deployments(
    *,
    models: list[str],
    out: str,
    cohort: str | None = None,
    inbox: str | None = None,
    reference: str | None = None,
    config: str | None = None,
    cron: str = "0 3 * * *",
    monitor_cron: str = "0 4 * * *",
) -> list:
    """Prefect ``RunnerDeployment`` objects (``flow.to_deployment``), ready to ``serve``;
    their entry points are module paths (``audit.orchestrate.prefect_flows.validation_flow``)."""
    from prefect.deployments.runner import EntrypointType

    module = {"entrypoint_type": EntrypointType.MODULE_PATH}
    deployments = []
    if cohort:
        deployments.append(
            validation_flow.to_deployment(
                name="scheduled-validation",
                cron=cron,
                parameters={"cohort": cohort, "out": out, "config": config},
                description=f"Validate {cohort} on schedule {cron}",
                **module,
            )
        )
    if inbox:
        deployments.append(
            inbox_flow.to_deployment(
                name="monitor-inbox",
                cron=monitor_cron,
                parameters={
                    "inbox": inbox,
                    "models": models,
                    "out": out,
                    "reference": reference,
                    "config": config,
                },
                description=f"Audit new cohorts in {inbox} on schedule {monitor_cron}",
                **module,
            )
        )
    return deployments
