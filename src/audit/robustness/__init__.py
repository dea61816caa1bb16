"""Robustness: perturbation families registered by name
(:mod:`~audit.robustness.perturbations`: lighting, pose, make-up, occlusion, image quality)
and the suite that applies them to a stratified sample and measures how predictions move
(:mod:`~audit.robustness.suite`).
"""

from audit._lazy import exports

_NAMES = {
    "FaceLayout": "perturbations",
    "Perturbation": "perturbations",
    "SuiteResult": "suite",
    "create_perturbation": "perturbations",
    "default_plan": "perturbations",
    "face_layout": "perturbations",
    "icc_3_1": "suite",
    "list_perturbations": "perturbations",
    "register_perturbation": "perturbations",
    "robustness_table": "suite",
    "run_suite": "suite",
    "stratified_sample": "suite",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = exports(__name__, _NAMES)
