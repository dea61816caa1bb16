"""The demo's synthetic world: subjects with a known truth (:mod:`~audit.demo.world`), their
rendered faces (:mod:`~audit.demo.faces`), and the recipe that trained the two demo models
shipped in ``weights/`` (:mod:`~audit.demo.train`, a script: ``python -m audit.demo.train``),
and what ``faceage-audit demo`` audits (:mod:`~audit.demo.preset`).
"""

from audit._lazy import exports

_NAMES = {
    "DEMO_MODELS": "preset",
    "WorldParams": "world",
    "demo_config": "preset",
    "demo_models": "preset",
    "example_face": "faces",
    "render_face": "faces",
    "simulate": "world",
    "write_cohort": "world",
    "write_demo_cohort": "preset",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
