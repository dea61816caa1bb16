"""The saliency stage: where each image model looks (:mod:`audit.saliency.maps`)."""

from __future__ import annotations

import numpy as np

from audit.models.inference import best_device
from audit.pipeline import progress
from audit.robustness.perturbations import face_layout
from audit.saliency import maps as sal
from audit.saliency.scoring import audit_sample
from audit.stages.context import RunContext, image_models, layout_name, predicted_subjects


def saliency_stage(ctx: RunContext) -> int:
    """Where each image model looks (:mod:`audit.saliency.maps`): attribution maps on a sample
    (``sample_per_group`` photos per group, one per subject), kept only as cohort and
    subgroup means over at least ``min_faces`` photos, region shares with bootstrap CIs,
    comparisons between models, and the randomised-weights sanity check; one transaction."""
    cfg = ctx.config.saliency
    models = image_models(ctx)
    reason = (
        "off (the default: it costs more forward passes than the robustness suite); "
        "turn it on with [saliency] enabled = true, --saliency or --preset full"
        if not cfg.enabled
        else "the cohort carries predictions, not photos"
        if not ctx.cohort.has_images
        else "no model reads images"
        if not models
        else None
    )
    if reason:
        return ctx.write("saliency", {}, note=f"saliency not run: {reason}")
    subjects = predicted_subjects(ctx, models)
    rng = np.random.default_rng(cfg.seed)
    sample = sal.group_sample(subjects, cfg.sample_per_group, cfg.groups, rng)
    sample = sample.reset_index(drop=True)
    layout_id = layout_name(ctx, cfg.face_layout, ctx.config.robustness.face_layout)
    layout = face_layout(layout_id)
    methods = sal.configured_methods(
        cfg.methods or sal.list_attributions(),
        window=cfg.window,
        stride=cfg.stride,
        ig_steps=cfg.ig_steps,
    )
    device = best_device()
    batch = cfg.batch_size or (64 if device.startswith("cuda") else 16)
    paths = [ctx.cohort.image_file(p) for p in sample["image_path"]]
    groups = sample[[g for g in cfg.groups if g in sample.columns]]
    ctx.note(
        "saliency",
        f"{len(sample)} photos of {len(subjects)} subjects ({cfg.sample_per_group}"
        f" per group of {', '.join(groups.columns) or 'the cohort'}), region "
        f"template of face layout {layout_id}",
    )
    result = audit_sample(
        models,
        paths,
        sample,
        groups,
        layout,
        methods,
        cfg,
        device=device,
        batch=batch,
        crops={m.name: m.crop_for(ctx.cohort) for m in models},
        rng=rng,
        progress=progress.bar,
    )
    for note in result.notes:
        ctx.note("saliency", note)
    return ctx.write("saliency", result.tables(), note="; ".join(ctx.notes["saliency"]))
