"""Statistics shared by every analysis: the subject bootstrap, Harrell's C, quantile
groupings, and checked Cox fits.

:mod:`~audit.stats.bootstrap`, :mod:`~audit.stats.concordance`, :mod:`~audit.stats.groups`,
:mod:`~audit.stats.cox` (``fit_cox``: convergence checks, damped refits, a scikit-survival
cross-check; a fit that did not converge never reports a number).
"""

from audit._lazy import exports

_NAMES = {
    "CoxFit": "cox",
    "CoxNotConverged": "cox",
    "SubjectBootstrap": "bootstrap",
    "bootstrap_weights": "bootstrap",
    "draw_counts": "bootstrap",
    "canonical_rows": "groups",
    "design_matrix": "cox",
    "efron_loglik": "cox",
    "fit_cox": "cox",
    "group_index": "groups",
    "percentile_ci": "bootstrap",
    "concordance_influence": "concordance",
    "concordance_resamples": "concordance",
    "quantile_cuts": "groups",
    "quantile_groups": "groups",
    "schoenfeld_test": "cox",
    "weighted_concordance": "concordance",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
