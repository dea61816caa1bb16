"""Run machinery: configuration, the DuckDB store and its schema, the verdict,
provenance, the signed dossier and progress display.

:mod:`~audit.pipeline.config`, :mod:`~audit.pipeline.store`, :mod:`~audit.pipeline.verdict`,
:mod:`~audit.pipeline.provenance`, :mod:`~audit.pipeline.dossier`,
:mod:`~audit.pipeline.progress`.
"""

from audit._lazy import exports

_NAMES = {
    "AuditConfig": "config",
    "Store": "store",
    "build_manifest": "dossier",
    "code_version": "provenance",
    "current_version": "store",
    "environment": "provenance",
    "evaluate": "verdict",
    "is_run_id": "store",
    "load_config": "config",
    "new_run_id": "store",
    "overall": "verdict",
    "verify_run": "dossier",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
