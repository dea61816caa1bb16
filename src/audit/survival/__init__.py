"""Survival analyses: Cox models of FaceAge and risk with clinical adjustment,
Kaplan-Meier curves and log-rank tests, time-dependent discrimination and calibration,
subgroup effects, incremental value over clinical factors, and face-aging rates.

:mod:`~audit.survival.analysis`, :mod:`~audit.survival.metrics`,
:mod:`~audit.survival.subgroups`, :mod:`~audit.survival.incremental`,
:mod:`~audit.survival.longitudinal`.
"""

from audit._lazy import exports

_NAMES = {
    "SurvivalResult": "analysis",
    "face_aging_rates": "longitudinal",
    "incremental_value": "incremental",
    "km_curves": "analysis",
    "logrank_tests": "analysis",
    "ph_test": "analysis",
    "risk_quartiles": "analysis",
    "score_metrics": "metrics",
    "survival_analysis": "analysis",
    "survival_subgroups": "subgroups",
    "uno_c_ci": "metrics",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
