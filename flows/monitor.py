"""The monitor flows (a new cohort against a reference; a drop folder of arrivals), defined
in the library at :mod:`audit.orchestrate.prefect_flows`; re-exported here."""

from audit.orchestrate.prefect_flows import inbox_flow, monitor_flow, resolve_reference

__all__ = ["inbox_flow", "monitor_flow", "resolve_reference"]
