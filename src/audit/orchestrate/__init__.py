"""Orchestrators: the run order once (:mod:`~audit.orchestrate.sequence`, which also
runs it inline, in this process) and the Prefect flows and deployments over it
(:mod:`~audit.orchestrate.prefect_flows`, imported on demand: Prefect is heavy).
"""

from audit._lazy import exports

_NAMES = {
    "audit_sequence": "sequence",
    "combine_sequence": "combined",
    "inline_fan_out": "sequence",
    "inline_step": "sequence",
    "process_inbox": "sequence",
    "resolve_reference": "sequence",
    "run_audit_inline": "sequence",
    "statistics_sequence": "sequence",
    "validation_sequence": "sequence",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
