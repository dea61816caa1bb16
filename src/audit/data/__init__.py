"""Data intake: the cohort folder, its validation, images and what keeps ids private.

:mod:`~audit.data.cohort` (cohort.yaml and the manifest, ``load_cohort``),
:mod:`~audit.data.validation` (Great Expectations suites, quarantine),
:mod:`~audit.data.images` (decoding, quality, face detection and alignment),
:mod:`~audit.data.hashing` (content SHA-256 with a cache), :mod:`~audit.data.privacy`
(pseudonyms), :mod:`~audit.data.inbox` (a drop folder of arriving cohorts).
"""

from audit._lazy import exports

_NAMES = {
    "Arrival": "inbox",
    "Cohort": "cohort",
    "CohortSpec": "cohort",
    "Covariate": "cohort",
    "HashCache": "hashing",
    "ValidationReport": "validation",
    "check_cohort": "cohort",
    "load_cohort": "cohort",
    "pseudonym": "privacy",
    "read_manifest": "cohort",
    "read_spec": "cohort",
    "scan": "inbox",
    "sha256_file": "hashing",
    "validate_cohort": "validation",
    "validate_predictions": "validation",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
