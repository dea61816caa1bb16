"""The audit's stages as plain functions over a :class:`RunContext`.

Each stage computes with the library modules (cohort, models, accuracy, survival, verdict,
report) and hands its rows to :meth:`Store.write_stage`, one transaction per stage. The
orchestrators of :mod:`audit.orchestrate` call them in order (inline, or each as a Prefect
task); tests call them directly.
Stages never import each other's internals and never import ``flows``; what several of them
read (a model's predictions as columns, one photo per subject, the face layout) is in
:mod:`audit.stages.context`.

One module per stage, in the order a run takes them: :mod:`~audit.stages.validate`,
:mod:`~audit.stages.predict`, :mod:`~audit.stages.analysis` (accuracy, fairness, survival),
:mod:`~audit.stages.robustness`, :mod:`~audit.stages.paired`,
:mod:`~audit.stages.saliency`, :mod:`~audit.stages.slices`, :mod:`~audit.stages.drift`,
:mod:`~audit.stages.publish` (verdict, pages).
"""

from audit.stages.analysis import (
    Piece,
    PieceResult,
    accuracy_stage,
    fairness_stage,
    run_piece,
    statistics_pieces,
    survival_stage,
)
from audit.stages.context import RunContext, fail, failed_start, running, shared_frames, start
from audit.stages.drift import drift_stage
from audit.stages.estimate import estimate_stage
from audit.stages.paired import paired_stage
from audit.stages.predict import Shard, plan_shards, predict_stage, run_shard
from audit.stages.publish import publish_stage, verdict_stage
from audit.stages.robustness import (
    RobustnessSetup,
    RobustnessShard,
    plan_robustness_shards,
    robustness_setup,
    robustness_stage,
    run_robustness_shard,
)
from audit.stages.saliency import saliency_stage
from audit.stages.slices import slices_stage
from audit.stages.validate import validate_stage, validation_verdict

__all__ = [
    "Piece",
    "PieceResult",
    "RobustnessSetup",
    "RobustnessShard",
    "RunContext",
    "Shard",
    "accuracy_stage",
    "drift_stage",
    "estimate_stage",
    "fail",
    "failed_start",
    "fairness_stage",
    "paired_stage",
    "plan_robustness_shards",
    "plan_shards",
    "predict_stage",
    "publish_stage",
    "robustness_setup",
    "robustness_stage",
    "run_piece",
    "run_robustness_shard",
    "run_shard",
    "running",
    "saliency_stage",
    "shared_frames",
    "slices_stage",
    "statistics_pieces",
    "start",
    "survival_stage",
    "validate_stage",
    "validation_verdict",
    "verdict_stage",
]
