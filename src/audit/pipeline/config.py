"""Audit configuration: thresholds for verdicts and knobs for each stage.

A run reads an ``audit.toml`` (``--config``); every key is optional and falls back to
the defaults below. The resolved configuration is stored with the run (its SHA-256 is
``runs.config_sha256``) so a verdict can always be traced to the thresholds it used.

Example ``audit.toml``::

    [accuracy]
    n_boot = 1000

    [robustness]
    perturbations = ["brightness", "gaussian_blur", "jpeg", "surgical_mask"]
    sample_subjects = 0          # the whole cohort

    [thresholds]
    faceage_mae_max = 8.0
    risk_cindex_min = 0.60
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audit.errors import InputError
from audit.robustness.perturbations import list_perturbations
from audit.saliency.maps import list_attributions

# What each preset sets, section by section, wherever the config does not set it itself.
PRESETS: dict[str, dict[str, dict]] = {
    # a first look in a minute or two: no perturbations, no saliency, smaller bootstraps
    "quick": {
        "robustness": {"enabled": False},
        "saliency": {"enabled": False},
        "accuracy": {"n_boot": 200},
        "fairness": {"n_boot": 200},
        "faces": {"n_boot": 200},
        "survival": {"n_boot": 100},
    },
    # the defaults of every section
    "standard": {},
    # everything: the perturbation suite on every subject, saliency with every method
    "full": {"robustness": {"sample_subjects": 0}, "saliency": {"enabled": True}},
    # the demo: robustness on 150 subjects at severities 1, 3 and 5, a small saliency sample
    "light": {
        "robustness": {"sample_subjects": 150, "severities": [1, 3, 5]},
        "saliency": {
            "enabled": True,
            "sample_per_group": 20,
            "stride": 16,
            "n_boot": 100,
            "sanity_photos": 12,
        },
    },
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _fairlearn_max_rows():
    """The field shared by the accuracy and fairness sections (each for its own table)."""
    return Field(
        50_000,
        ge=0,
        description="group values by fairlearn's MetricFrame up to this many rows; above, "
        "the same formulas on each group's totals (equal to 1e-9; MetricFrame stacks every "
        "column element by element, about 20 s a table at 100,000 photos)",
    )


class AccuracyConfig(_Section):
    """Overall and subgroup accuracy with subject-level bootstrap CIs."""

    n_boot: int = Field(1000, ge=0, description="bootstrap resamples (subjects, not photos)")
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    fairlearn_max_rows: int = _fairlearn_max_rows()
    groups: list[str] = Field(
        default_factory=lambda: ["sex", "race", "cancer_type", "age_band"],
        description="standard columns (or age_band) to break accuracy down by",
    )
    age_bands: list[float] = Field(
        default_factory=lambda: [65.0, 75.0, 85.0],
        description="cut points of the age bands (FaceAge paper: <=65, 65-75, 75-85, >85)",
    )
    min_group_size: int = Field(20, ge=1, description="smaller groups are reported, not judged")


class SurvivalConfig(_Section):
    """First survival models: FaceAge per decade, risk quartiles, Kaplan-Meier."""

    n_boot: int = Field(200, ge=0, description="bootstrap resamples for Harrell's C")
    seed: int = 0
    min_events: int = Field(10, ge=1, description="fewer events: models are not fitted")
    penalizer: float = Field(0.0, ge=0)
    horizons: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0],
        description="years for time-dependent AUC, Brier, calibration",
    )
    calibration_horizon: float = Field(2.0, gt=0, description="years; calibration by decile")
    folds: int = Field(5, ge=2, description="cross-fitting folds of the Cox model on a score")
    incremental: bool = Field(True, description="clinical vs + FaceAge vs + FaceAge + risk")
    decision_horizons: list[float] = Field(
        default_factory=lambda: [1.0, 2.0],
        description="years; decision curves (net benefit) of each score at these horizons",
    )
    decision_thresholds: list[float] = Field(
        default_factory=lambda: [round(0.05 * i, 2) for i in range(1, 19)],
        description="threshold probabilities of death by the horizon (0.05 to 0.90)",
    )
    resamples: Literal["auto", "exact", "linear"] = Field(
        "auto",
        description="each bootstrap resample's Harrell's or Uno's C (accuracy, survival, "
        "fairness, model comparisons, incremental value) and net benefit (decision curves): "
        "'exact' recomputes it, 'linear' takes its first-order expansion in the subject "
        "weights (influence values; the infinitesimal jackknife), 'auto' linearises it in "
        "every analysed set (the whole cohort, a subgroup) of at least linear_from subjects "
        "and recomputes it in smaller ones",
    )
    linear_from: int = Field(
        5_000, ge=2, description="subjects from which 'auto' linearises the resamples"
    )

    def linear_threshold(self) -> int | None:
        """The analysed-set size from which resamples are linearised (None: never)."""
        return {"auto": self.linear_from, "linear": 0, "exact": None}[self.resamples]

    @field_validator("decision_thresholds")
    @classmethod
    def _probabilities(cls, value: list[float]) -> list[float]:
        bad = [v for v in value if not 0 < v < 1]
        if bad:
            raise ValueError(f"threshold probabilities must lie strictly between 0 and 1: {bad}")
        return sorted(set(value))


DEFAULT_TOLERANCES = {
    "mae": 1.0,
    "mae_age_adjusted": 1.0,
    "mean_error": 1.0,
    "mean_error_age_adjusted": 1.0,
    "pearson_r": 0.10,
    "within_5y": 0.10,
    "c_index": 0.05,
    "calibration_oe": 0.20,
}


class FairnessConfig(_Section):
    """Subgroup metrics with subject-bootstrap CIs, simultaneous difference bands and flags."""

    enabled: bool = True
    attributes: list[str] = Field(
        default_factory=lambda: [
            "age_band",
            "age_decade",
            "sex",
            "race",
            "cancer_type",
            "site",
            "camera",
        ],
        description="standard columns (or age_band, age_decade) where present",
    )
    intersections: list[list[str]] = Field(
        default_factory=lambda: [["sex", "race"], ["race", "age_band"]]
    )
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples (subjects, not photos)")
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    fairlearn_max_rows: int = _fairlearn_max_rows()
    min_group_size: int = Field(30, ge=1, description="smaller groups: too_small, never flagged")
    tolerances: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_TOLERANCES),
        description="a group is flagged when its simultaneous CI of the difference to overall "
        "lies entirely beyond this, on the worse side",
    )
    verdict_metrics: list[str] = Field(
        default_factory=lambda: [
            "mae_age_adjusted",
            "mean_error_age_adjusted",
            "c_index",
            "calibration_oe",
        ],
        description="metrics whose flags fail the verdict (raw MAE and mean error are reported "
        "and flagged, but an older group looks biased on them by regression to the "
        "mean)",
    )
    survival_attributes: list[str] = Field(
        default_factory=lambda: ["sex", "race", "cancer_type", "age_band", "site"],
        description="groupings for hazard ratios and clinical utility within subgroups "
        "(an attribute with one value in the cohort, e.g. a single site, is skipped)",
    )
    intended_population: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="intended-use population shares per attribute, e.g. "
        "{sex = {female = 0.5, male = 0.5}}",
    )

    @field_validator("tolerances")
    @classmethod
    def _tolerances(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(DEFAULT_TOLERANCES)
        if unknown:
            raise ValueError(
                f"unknown metric(s) {sorted(unknown)}; known: {sorted(DEFAULT_TOLERANCES)}"
            )
        return {**DEFAULT_TOLERANCES, **value}

    @field_validator("intended_population")
    @classmethod
    def _shares(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for attribute, shares in value.items():
            if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(
                    f"intended_population.{attribute}: shares must be non-negative "
                    "with a positive sum"
                )
        return value

    def declared_groups(self) -> list[list[str]]:
        """The subgroups this audit declares: each attribute, then each intersection."""
        return [[a] for a in self.attributes] + [list(i) for i in self.intersections]


class FacesConfig(_Section):
    """The face-pipeline integrity audit (raw photos): who the detector drops, by group."""

    enabled: bool = True
    attributes: list[str] = Field(
        default_factory=lambda: ["age_band", "sex", "race", "site", "camera", "brightness_band"],
        description="standard columns, age_band or brightness_band, where present",
    )
    age_bands: list[float] = Field(default_factory=lambda: [65.0, 75.0, 85.0])
    brightness_bands: list[float] = Field(
        default_factory=lambda: [85.0, 170.0], description="mean grey level cuts (0-255)"
    )
    low_confidence: dict[str, float] = Field(
        default_factory=lambda: {"dlib": 0.5, "opencv": 4.0},
        description="a single face scoring under this (per detector) is low-confidence",
    )
    tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="a group is flagged when its simultaneous band of the difference to the "
        "overall rate lies entirely above this",
    )
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples (subjects, not photos)")
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    min_group_size: int = Field(30, ge=1, description="smaller groups: too_small, never flagged")


class PairedConfig(_Section):
    """Agreement on real repeated photos of the same person (``audit.metrics.paired``): the
    comparisons are declared in cohort.yaml (``paired:``), the tolerances here."""

    enabled: bool = True
    tolerance: dict[str, float] = Field(
        default_factory=lambda: {"faceage": 2.0, "risk": 0.25},
        description="equivalence margin per output: years for faceage, SDs of the reference "
        "photos' scores for any other (`default` for outputs not named)",
    )
    alpha: float = Field(
        0.05, gt=0, lt=0.5, description="level of each one-sided test (TOST: a 90% CI)"
    )
    min_pairs: int = Field(
        20, ge=2, description="fewer pairs (overall or in a group): inconclusive, never equivalent"
    )
    groups: list[str] = Field(
        default_factory=lambda: ["sex", "race", "age_band"],
        description="subgroups reported (from the reference photo)",
    )
    age_gap_years: float = Field(
        1 / 12,
        ge=0,
        description="a comparison without `adjust_age` in cohort.yaml is adjusted for the "
        "chronological age between its photos when some pair is at least this far apart",
    )
    n_boot: int = Field(1000, ge=0, description="bootstrap resamples (subjects)")
    ci_level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    synthetic: dict[str, str] = Field(
        default_factory=lambda: {
            "makeup": "makeup",
            "no_makeup": "makeup",
            "post_surgery": "skin_smoothing",
            "pre_surgery": "skin_smoothing",
            "glasses": "sunglasses",
            "lighting_b": "lighting",
            "pose_b": "pose",
            "retake": "pose",
        },
        description="condition -> the robustness family (or perturbation name) that mimics it, "
        "shown beside the real comparison when the suite ran",
    )


class SlicesConfig(_Section):
    """Slice discovery (``audit.metrics.slices``): where each model fails in combinations no
    declared subgroup names, confirmed on held-out subjects."""

    enabled: bool = True
    max_order: int = Field(3, ge=1, le=3, description="conditions per slice, at most")
    min_size: int = Field(30, ge=2, description="subjects in a slice, in each half")
    min_share: float = Field(0.02, ge=0, lt=1, description="share of subjects, in each half")
    top_k: int = Field(10, ge=1, description="slices of the search half tested on the other")
    alpha: float = Field(0.05, gt=0, lt=1, description="after Holm's correction over top_k")
    min_effect: dict[str, float] = Field(
        default_factory=lambda: {
            "abs_error": 2.0,
            "age_adjusted_error": 2.0,
            "deviance_residual": 0.5,
        },
        description="a confirmed slice's effect (confirmation half) must reach this, per loss",
    )
    bands: int = Field(3, ge=2, le=10, description="quantile bands of a numeric feature")
    clusters: int = Field(8, ge=0, description="k-means clusters of the embeddings (0: none)")
    clinical: bool = Field(
        False,
        description="also slice by cancer type and the clinical covariates (off: FaceAge is "
        "meant to differ with health, so such slices are biology, not failures)",
    )
    beam: int = Field(50, ge=1, description="pairs extended by a third condition")
    min_faces: int = Field(
        20, ge=1, description="a cluster's average face is kept only over this many photos"
    )
    face_sample: int = Field(100, ge=1, description="photos averaged per cluster, at most")
    seed: int = 0


class DriftConfig(_Section):
    """A cohort against a reference run (``--reference``): per-feature tests with effect
    sizes, embeddings by MMD, Holm control of the false alarms over all features."""

    alpha: float = Field(0.01, gt=0, lt=1, description="familywise false-alarm level (Holm)")
    min_effect_numeric: float = Field(
        0.1, ge=0, description="normed Wasserstein distance a numeric feature must reach"
    )
    min_effect_categorical: float = Field(
        0.1, ge=0, description="Jensen-Shannon distance a categorical feature must reach"
    )
    min_quality_change: dict[str, float] = Field(
        default_factory=lambda: {"mae": 1.0, "c_index": 0.05},
        description="change of overall MAE (years) and C-index that counts as degraded",
    )
    embedding_max_n: int = Field(1500, ge=10, description="embeddings per side for the MMD")
    n_permutations: int = Field(
        2000,
        ge=19,
        description="MMD permutations (p resolution 1 / (n + 1), enough for Holm at alpha)",
    )
    seed: int = 0
    html: bool = Field(True, description="keep evidently's HTML report as a run artifact")


class EstimateConfig(_Section):
    """Performance on a new cohort estimated before its outcomes are known: the reference
    run's outcomes reweighted to this cohort's case mix (``audit.monitor.estimate``)."""

    enabled: bool = Field(True, description="with a reference run (--reference)")
    n_boot: int = Field(200, ge=0, description="bootstrap resamples of the reference subjects")
    ci_level: float = Field(0.95, gt=0, lt=1)
    folds: int = Field(5, ge=2, description="cross-fitting folds of the cohort classifier")
    horizons: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 5.0],
        description="years; AUC and calibration where the reference's follow-up reaches",
    )
    min_ess: float = Field(
        100.0, ge=1, description="below this effective sample size of the weights: not estimated"
    )
    min_ess_share: float = Field(
        0.05, ge=0, le=1, description="... or below this share of the reference subjects"
    )
    embedding_components: int = Field(
        8, ge=0, description="principal components of the embeddings the classifier sees"
    )
    seed: int = 0


class BundleConfig(_Section):
    """What a site bundle (``faceage-audit export-bundle``) withholds: small cells."""

    min_subjects: int = Field(
        10,
        ge=1,
        description="an estimate over fewer subjects is withheld (and a composition "
        "count under it shown as <min_subjects)",
    )
    min_events: int = Field(
        5, ge=1, description="a survival quantity over fewer deaths is withheld"
    )


class CombineConfig(_Section):
    """The combined audit of several sites' bundles (``faceage-audit combine``): how each
    quantity is pooled across sites, and whose signatures count."""

    method: Literal["REML", "DL"] = Field(
        "REML", description="the between-site variance tau^2: REML or DerSimonian-Laird"
    )
    hartung_knapp: bool = Field(
        True, description="the random-effects CI by Hartung-Knapp (t on k - 1 df); else normal"
    )
    ci_level: float = Field(0.95, gt=0, lt=1)
    site_keys: dict[str, str] = Field(
        default_factory=dict,
        description="the Ed25519 public key (hex) each site signs with, by site label; when "
        "set, a bundle from a site not listed, or signed with another key, is not pooled "
        "(empty: any bundle whose signature verifies)",
    )


class AlertsConfig(_Section):
    """Where scheduled runs send alerts (a webhook, through Prefect's notification block)."""

    webhook: str | None = Field(None, description="URL to POST alerts to; none: no alerts")
    on: list[Literal["failed", "fail", "drift"]] = Field(
        default_factory=lambda: ["failed", "fail", "drift"],
        description="a run that failed, a failed verdict, a drift alarm",
    )


class InboxConfig(_Section):
    """The drop folder a scheduled monitor run watches."""

    settle_seconds: float = Field(
        60.0,
        ge=0,
        description="quiet time before a folder without a .ready marker counts as complete",
    )


class RobustnessConfig(_Section):
    """Graded perturbations (``audit.robustness.perturbations``) on a stratified sample of
    subjects."""

    enabled: bool = True
    perturbations: list[str] = Field(
        default_factory=list, description="registered names to run; empty: all of them"
    )
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    sample_subjects: int = Field(
        500,
        ge=0,
        description="subjects sampled (one photo each), stratified by `strata`; "
        "0: the whole cohort",
    )
    strata: list[str] = Field(default_factory=lambda: ["sex", "race", "age_band"])
    groups: list[str] = Field(
        default_factory=lambda: ["sex", "race", "age_band"],
        description="subgroups whose robustness is reported",
    )
    seed: int = 0
    tolerance_years: float = Field(5.0, gt=0, description="FaceAge shift counted as too far")
    tolerance_sd: float = Field(
        0.5, gt=0, description="risk shift counted as too far, in SDs of clean risk"
    )
    judged_max_severity: int = Field(
        3, ge=0, le=5, description="severities up to this are judged; above, only reported"
    )
    min_group_size: int = Field(20, ge=1, description="smaller subgroups are reported, not judged")
    face_layout: str | dict[str, float] | None = Field(
        None,
        description="where eyes and mouth lie in the crops (arcface, aligned, demo or "
        "fractions); default: the cohort's, else arcface (aligned for raw photos)",
    )
    batch_size: int | None = Field(None, ge=1)

    @field_validator("severities")
    @classmethod
    def _levels(cls, value: list[int]) -> list[int]:
        bad = [v for v in value if v not in (1, 2, 3, 4, 5)]
        if bad:
            raise ValueError(f"severities must be among 1-5, got {bad}")
        return sorted(set(value))

    @field_validator("perturbations")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:

        return _registered(value, list_perturbations(), "perturbation")


def _registered(value: list[str], known: list[str], what: str) -> list[str]:
    """``value`` when every name in it is registered, else a ValueError listing them."""
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown}; registered: {known}")
    return value


class SaliencyConfig(_Section):
    """Where each model looks (``audit.saliency.maps``): cohort-averaged attribution maps, region
    shares, comparisons between models and sanity checks. Off by default: with the defaults
    it costs more forward passes than the robustness suite (occlusion alone is about 170 per
    photo); the demo's light preset turns it on with a small sample."""

    enabled: bool = False
    methods: list[str] = Field(
        default_factory=list,
        description="attribution methods to run; empty: every "
        "registered one that the model allows (occlusion for all; gradient x input and "
        "integrated gradients for torch models; Grad-CAM for CNNs; attention rollout for ViTs)",
    )
    sample_per_group: int = Field(
        200,
        ge=1,
        description="photos sampled (one per subject) per group of each attribute "
        "in `groups`, and overall at least this many",
    )
    groups: list[str] = Field(default_factory=lambda: ["sex", "race", "age_band"])
    min_faces: int = Field(20, ge=1, description="no map or share of fewer photos is stored")
    window: int = Field(16, ge=2, description="occlusion window side (pixels at input size)")
    stride: int = Field(8, ge=1, description="occlusion stride (pixels)")
    ig_steps: int = Field(16, ge=2, description="integrated-gradients steps")
    n_boot: int = Field(200, ge=20)
    ci_level: float = Field(0.95, gt=0, lt=1)
    top_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of pixels counted as a map's top (overlap)"
    )
    sanity_photos: int = Field(24, ge=2, description="photos of the randomised-weights check")
    sanity_spearman_max: float = Field(
        0.5,
        description="a method passes the randomisation check when the trained and the "
        "randomised model's cohort maps correlate (Spearman) below this",
    )
    face_layout: str | dict[str, float] | None = Field(
        None, description="the region template's layout; default as for robustness"
    )
    batch_size: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:

        return _registered(value, list_attributions(), "attribution method")


class Thresholds(_Section):
    """Pass/fail thresholds of the verdict. A check whose inputs are absent is skipped."""

    max_quarantine_fraction: float = Field(0.05, ge=0, le=1)
    faceage_mae_max: float = 8.0
    faceage_abs_mean_error_max: float = 5.0
    faceage_pearson_min: float = 0.80
    risk_cindex_min: float = 0.60
    faceage_adjusted_hr_lower_min: float = Field(
        1.0, description="lower CI of the age/sex-adjusted HR per decade must exceed this"
    )
    risk_q4_vs_q1_hr_lower_min: float = Field(
        1.0, description="lower CI of the Q4 vs Q1 hazard ratio must exceed this"
    )
    min_events_judged: int = Field(
        20, ge=1, description="a hazard-ratio check on fewer deaths is inconclusive, not passed"
    )
    hr_ci_ratio_max: float = Field(
        10.0,
        gt=1,
        description="a hazard ratio whose 95% CI spans more than this factor "
        "(upper / lower) is inconclusive, not passed",
    )
    robustness_frac_over_tolerance_max: float = Field(
        0.10,
        ge=0,
        le=1,
        description="at judged severities, the share of photos whose output "
        "moves beyond the tolerance must not exceed this (each perturbation, each subgroup)",
    )
    drift_features_max: int = Field(
        0,
        ge=0,
        description="drifted features (per kind: metadata, images, predictions, "
        "embeddings, quality) allowed against the reference",
    )
    fairness_flagged_max: int = Field(
        0, ge=0, description="flagged subgroups (of the fairness verdict metrics) allowed"
    )
    site_outliers_max: int = Field(
        0,
        ge=0,
        description="combined audits: site estimates of the judged quantities outside what "
        "the other sites predict (Bonferroni over them) allowed",
    )
    face_pipeline_flagged_max: int = Field(
        0, ge=0, description="groups the face detector fails more often than tolerated, allowed"
    )
    representativeness_p_min: float = Field(
        0.0,
        ge=0,
        le=1,
        description="the chi-square p-value of the cohort against the intended "
        "population must be at least this (0: reported, never judged)",
    )
    robustness_icc_min: float = Field(
        0.75,
        ge=0,
        le=1,
        description="at judged severities, the ICC(3,1) of clean against "
        "perturbed outputs (whole sample) must reach this; below it (or for an output that "
        "does not vary), the tolerance checks are inconclusive (Koo and Li 2016: 0.75 'good')",
    )
    fairness_min_pearson: float = Field(
        0.5,
        ge=0,
        le=1,
        description="FaceAge fairness is judged only for a model whose "
        "FaceAge tracks age at least this well (Pearson r); else inconclusive",
    )
    robustness_quartile_change_max: float = Field(
        0.25,
        ge=0,
        le=1,
        description="at judged severities, the share of patients whose risk "
        "quartile changes must not exceed this",
    )
    paired_not_equivalent_max: int = Field(
        0,
        ge=0,
        description="comparisons of a paired study (real repeated photos) allowed to be "
        "shown not equivalent within the [paired] tolerance (overall; then in any subgroup)",
    )
    paired_judged: list[str] = Field(
        default_factory=list,
        description="conditions whose comparisons the verdict judges (empty: every one "
        "declared); the others are reported",
    )
    slices_confirmed_max: int = Field(
        0,
        ge=0,
        description="confirmed failure slices (each output; of the losses in slices_judged) "
        "allowed that are new findings: not a declared fairness subgroup and not a narrowing "
        "of a shorter confirmed slice",
    )
    slices_judged: list[str] = Field(
        default_factory=lambda: ["abs_error", "age_adjusted_error", "deviance_residual"],
        description="losses whose confirmed slices the verdict counts (of abs_error, "
        "age_adjusted_error, deviance_residual); the others are reported",
    )
    slices_health_features: list[str] = Field(
        default_factory=lambda: ["embedding_cluster", "cancer_type"],
        description="features whose slices of a signed loss (FaceAge's age-adjusted error, "
        "a score's deviance residual) are reported, not judged: a face-age model reading "
        "older where it sees a sicker face is its signal, not a failure (add the clinical "
        "covariates here when [slices] clinical is on); their absolute-error slices are judged",
    )
    net_benefit_range: list[float] = Field(
        default_factory=list,
        description="[low, high] threshold probabilities of death: at "
        "every decision threshold in this range, acting on each score must beat treating "
        "everyone and treating no one with 95% confidence, and harm no subgroup (worse than "
        "both, simultaneous 95% bands) (empty: reported, never judged)",
    )
    net_benefit_horizon: float = Field(
        1.0, gt=0, description="years; the decision curve that net_benefit_range judges"
    )

    @field_validator("net_benefit_range")
    @classmethod
    def _range(cls, value: list[float]) -> list[float]:
        if value and not (len(value) == 2 and 0 < value[0] <= value[1] < 1):
            raise ValueError(
                "net_benefit_range takes two threshold probabilities "
                f"[low, high] with 0 < low <= high < 1, not {value}"
            )
        return value


class AuditConfig(_Section):
    accuracy: AccuracyConfig = Field(default_factory=AccuracyConfig)
    survival: SurvivalConfig = Field(default_factory=SurvivalConfig)
    robustness: RobustnessConfig = Field(default_factory=RobustnessConfig)
    saliency: SaliencyConfig = Field(default_factory=SaliencyConfig)
    fairness: FairnessConfig = Field(default_factory=FairnessConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    paired: PairedConfig = Field(default_factory=PairedConfig)
    slices: SlicesConfig = Field(default_factory=SlicesConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    inbox: InboxConfig = Field(default_factory=InboxConfig)
    bundle: BundleConfig = Field(default_factory=BundleConfig)
    combine: CombineConfig = Field(default_factory=CombineConfig)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    preset: Literal["quick", "standard", "full", "light"] = Field(
        "standard",
        description="`quick`: no robustness, no saliency, 200 bootstrap resamples (a first "
        "look); `standard`: every section's defaults; `full`: robustness on every subject "
        "and saliency with every method; `light` (the demo): robustness on 150 subjects at "
        "severities 1, 3 and 5, saliency on 20 photos per group. A section's own keys win "
        "over its preset",
    )

    @model_validator(mode="after")
    def _preset(self) -> "AuditConfig":
        for section, values in PRESETS[self.preset].items():
            part = getattr(self, section)
            for key, value in values.items():
                if key not in part.model_fields_set:
                    setattr(part, key, value)
        return self

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def load_config(path: str | Path | None = None, **overrides: dict) -> AuditConfig:
    """Read an ``audit.toml`` (or the defaults when ``path`` is None).

    Unknown keys and wrong types are an :class:`InputError` naming the file and key.
    ``overrides`` are section dicts merged over the file (e.g. ``accuracy={"n_boot": 200}``).
    """
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: audit config not found")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not valid TOML: {exc}") from exc
    for section, values in overrides.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"{path or 'audit config'}: {problems}") from exc


def _default_text(info) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return ""
    else:
        value = info.default
    return f"`{json.dumps(value)}`" if not isinstance(value, BaseModel) else ""


def _type_text(annotation) -> str:
    generic = get_origin(annotation) is not None
    text = str(annotation) if generic else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace(" | ", " or ").replace("|", " or ")


def markdown_reference() -> str:
    """The configuration reference page: every ``audit.toml`` section and key with its type,
    default and meaning, generated from these classes (``python -m audit.pipeline.config``)."""
    lines = [
        "# Configuration reference",
        "",
        "Every key `audit.toml` accepts, by section, with its default. Unknown keys and "
        "wrong types are an error naming the file and key. Generated from "
        "`audit.pipeline.config` (`python -m audit.pipeline.config > "
        "docs/configuration-reference.md`).",
        "",
    ]
    top = AuditConfig.model_fields
    lines += ["## Top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, info in top.items():
        if isinstance(info.default_factory, type) and issubclass(info.default_factory, BaseModel):
            continue
        lines.append(
            f"| `{name}` | {_type_text(info.annotation)} | {_default_text(info)} | "
            f"{(info.description or '').replace('|', '/')} |"
        )
    lines.append("")
    for name, info in top.items():
        section = info.default_factory
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        doc = (section.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines += [
            f"## `[{name}]`",
            "",
            doc,
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, field in section.model_fields.items():
            lines.append(
                f"| `{key}` | {_type_text(field.annotation)} | "
                f"{_default_text(field)} | "
                f"{(field.description or '').replace('|', '/')} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_reference(), end="")
