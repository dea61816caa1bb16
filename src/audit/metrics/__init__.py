"""FaceAge and risk-score metrics: accuracy with subject-bootstrap intervals, fairness
across declared subgroups, and how the cohort represents its intended population.

:mod:`~audit.metrics.engine` (the one per-group FaceAge engine: fairlearn values, subject
bootstrap intervals), :mod:`~audit.metrics.accuracy`, :mod:`~audit.metrics.fairness`,
:mod:`~audit.metrics.representativeness`, and :mod:`~audit.metrics.functions`
(fairlearn-style array functions over the same engine).
"""

from audit._lazy import exports

_NAMES = {
    "FaceAgeEngine": "engine",
    "faceage_accuracy": "accuracy",
    "faceage_fairness": "fairness",
    "faceage_metrics": "functions",
    "groupings": "fairness",
    "paired_comparisons": "fairness",
    "representativeness": "representativeness",
    "risk_accuracy": "accuracy",
    "risk_fairness": "fairness",
    "risk_metrics": "functions",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
