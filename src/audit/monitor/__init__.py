"""Monitoring: drift of a new cohort against a reference (:mod:`~audit.monitor.drift`)
and alerts when a scheduled run fails or drifts (:mod:`~audit.monitor.alerts`).
"""

from audit._lazy import exports

_NAMES = {
    "alert_arrival": "alerts",
    "alert_reasons": "alerts",
    "embedding_drift": "drift",
    "feature_drift": "drift",
    "quality_change": "drift",
    "send": "alerts",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
