"""Run machinery: configuration, the DuckDB store and its schema, the verdict,
provenance, the signed dossier, site bundles and their combined audit, and progress display.

:mod:`~audit.pipeline.config`, :mod:`~audit.pipeline.store`, :mod:`~audit.pipeline.verdict`,
:mod:`~audit.pipeline.provenance`, :mod:`~audit.pipeline.dossier`,
:mod:`~audit.pipeline.bundle`, :mod:`~audit.pipeline.combine`, :mod:`~audit.pipeline.progress`.
"""

from audit._lazy import exports

_NAMES = {
    "AuditConfig": "config",
    "Store": "store",
    "build_manifest": "dossier",
    "code_version": "provenance",
    "combine_tables": "combine",
    "combined_verdicts": "combine",
    "current_version": "store",
    "environment": "provenance",
    "evaluate": "verdict",
    "is_run_id": "store",
    "load_config": "config",
    "new_run_id": "store",
    "overall": "verdict",
    "verify_bundle": "bundle",
    "verify_run": "dossier",
    "write_bundle": "bundle",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
