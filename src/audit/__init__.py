"""faceage-audit: evaluation and audit of face-photo health models.

The Python API (:mod:`audit.api`): ``audit.run(cohort, models, config=...)`` returns an
:class:`~audit.api.AuditRun` whose results are tidy frames; ``audit.open_run(db, run_id)``
reopens one; ``audit.Cohort.from_frame(df)`` builds a cohort in memory;
``audit.faceage_metrics`` and ``audit.risk_metrics`` are array functions in fairlearn's style.

The subpackages, one concern each (the README's architecture section has a line for each):
:mod:`audit.data`, :mod:`audit.models`, :mod:`audit.stats`, :mod:`audit.metrics`,
:mod:`audit.survival`, :mod:`audit.decisions`, :mod:`audit.robustness`,
:mod:`audit.saliency`, :mod:`audit.monitor`, :mod:`audit.pipeline`, :mod:`audit.stages`,
:mod:`audit.orchestrate`, :mod:`audit.report`, :mod:`audit.demo`.
"""

from importlib import metadata as _metadata

from audit._lazy import exports

try:
    __version__ = _metadata.version("faceage-audit")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_NAMES = {
    "AuditConfig": "pipeline.config",
    "AuditRun": "api",
    "Cohort": "data.cohort",
    "combine": "api",
    "InputError": "errors",
    "faceage_metrics": "metrics.functions",
    "load_config": "pipeline.config",
    "load_cohort": "data.cohort",
    "open_run": "api",
    "risk_metrics": "metrics.functions",
    "run": "api",
}
__all__ = ["__version__", *sorted(_NAMES)]
__getattr__, __dir__ = exports(__name__, _NAMES)
