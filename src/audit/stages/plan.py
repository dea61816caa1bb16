"""What a run will do, said before its costly stages, and about how long the perturbation
suite will take, from the clean pass just timed on this machine.

The clean inference pass is the warm-up: it runs every photo through every image model once,
so its photos per second (decode included) are this machine's, this model's and this photo
size's. The robustness suite runs each sampled photo through each model once more per
perturbation level, so its cost is about ``photos x levels / (photos per second)`` per model
(decoding is shared between levels, perturbing adds its own cost; cached cells are skipped).
"""

from __future__ import annotations

from audit.robustness.perturbations import default_plan
from audit.stages.context import RunContext, image_models


def run_plan(ctx: RunContext) -> str:
    """One line: photos, models, passes per photo, the robustness and saliency samples, the
    bootstrap sizes and the preset."""
    cfg = ctx.config
    frame = ctx.cohort.frame
    images = image_models(ctx)
    n_subjects = frame["subject_id"].nunique() if "subject_id" in frame.columns else len(frame)
    parts = [
        f"{len(frame)} photos of {n_subjects} subjects",
        f"{len(ctx.models)} model(s)"
        + (f", {len(images)} reading the photos (1 pass each)" if images else ""),
    ]
    study = ctx.cohort.spec.paired
    if study is not None and ctx.cohort.paired_study and cfg.paired.enabled:
        compared = len(frame) - len(ctx.cohort.analysed)
        parts.append(
            f"a paired study: {len(study.comparisons)} comparison(s), {compared} compared "
            "photo(s) analysed on their own"
        )
    if not images:
        parts.append("no perturbations or saliency (no model reads photos)")
    else:
        parts.append(_robustness_plan(ctx, n_subjects))
        s = cfg.saliency
        parts.append(
            f"saliency on up to {s.sample_per_group} photos per group"
            if s.enabled
            else "no saliency"
        )
    parts.append(
        f"bootstrap resamples: accuracy {cfg.accuracy.n_boot}, fairness {cfg.fairness.n_boot}, "
        f"survival {cfg.survival.n_boot}"
    )
    return f"plan ({cfg.preset} preset): " + "; ".join(parts)


def _robustness_plan(ctx: RunContext, n_subjects: int) -> str:
    r = ctx.config.robustness
    if not r.enabled:
        return "no robustness suite"
    levels = len(default_plan(r.perturbations or None, r.severities))
    photos = min(r.sample_subjects or n_subjects, n_subjects)
    return f"robustness on about {photos} photos x {levels + 1} passes (clean + {levels} levels)"


def robustness_estimate(ctx: RunContext, models: list, n_photos: int, n_levels: int) -> str:
    """About how long the suite will take, from each model's clean pass on this machine."""
    rates = {m.name: ctx.throughput.get(m.name) for m in models}
    passes = n_photos * (n_levels + 1)
    if not all(rates.values()):
        return (
            f"robustness: {passes} passes per model ({n_photos} photos x {n_levels + 1}); no "
            "time estimate (the clean pass came from the prediction cache, so nothing was timed)"
        )
    seconds = sum(passes / rate for rate in rates.values())
    measured = ", ".join(f"{name} {rate:.0f} photos/s" for name, rate in rates.items())
    return (
        f"robustness: {passes} passes per model ({n_photos} photos x {n_levels + 1}), about "
        f"{_duration(seconds)} at the clean pass's speed here ({measured})"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
