"""Decision-curve analysis: net benefit of acting on a score over a range of risk
thresholds, overall (:mod:`~audit.decisions.curves`) and per subgroup
(:mod:`~audit.decisions.subgroups`).
"""

from audit._lazy import exports

_NAMES = {
    "decision_curve": "curves",
    "net_benefit": "curves",
    "score_curves": "curves",
    "score_decision_analysis": "subgroups",
    "score_decision_curves": "curves",
    "subgroup_net_benefit": "subgroups",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
