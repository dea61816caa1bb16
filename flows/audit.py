"""The audit flow, for Prefect's tooling (``prefect deploy``, the UI): defined in the library
at :mod:`audit.orchestrate.prefect_flows`; this package only re-exports it."""

from audit.orchestrate.prefect_flows import audit_flow, dask_task_runner

__all__ = ["audit_flow", "dask_task_runner"]
