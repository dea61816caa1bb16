"""The robustness stage: graded perturbations of a stratified sample of subjects, run here
or on Dask shards (each shard for every image model, so a worker decodes a photo once)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.pipeline import progress
from audit.robustness.examples import perturbation_examples
from audit.robustness.perturbations import (
    create_perturbation,
    crop_layout,
    default_plan,
    face_layout,
)
from audit.robustness.suite import (
    CLEAN,
    SuiteResult,
    perturbation_key,
    robustness_table,
    run_suite,
    stratified_sample,
)
from audit.stages.context import (
    RunContext,
    image_models,
    layout_name,
    predicted_subjects,
    worker_model,
)
from audit.stages.plan import robustness_estimate


@dataclass
class RobustnessSetup:
    """What the robustness stage runs: the sampled photos, the plan, the face layout and
    what the prediction cache already holds (by model name)."""

    models: list
    subjects: pd.DataFrame
    sample: pd.DataFrame
    plan: list
    layout: object
    cached: dict


@dataclass
class RobustnessShard:
    """A slice of the robustness sample for every image model, to run on another process."""

    model_specs: list  # ModelSpec
    cohort: object  # Cohort
    rows: pd.DataFrame
    plan: list
    layout: object
    seed: int
    cached: dict
    batch_size: int | None
    index: int


def robustness_setup(ctx: RunContext) -> RobustnessSetup | str:
    """The run's robustness sample and plan (deterministic for the config's seed), or the
    reason it does not run."""
    cfg = ctx.config.robustness
    models = image_models(ctx)
    reason = (
        (
            "turned off by the quick preset (--preset standard or full runs it)"
            if ctx.config.preset == "quick"
            else "turned off in the audit config"
        )
        if not cfg.enabled
        else "the cohort carries predictions, not photos"
        if not ctx.cohort.has_images
        else "no model reads images"
        if not models
        else None
    )
    if reason:
        return reason
    subjects = predicted_subjects(ctx, models)
    sample = stratified_sample(
        subjects, cfg.sample_subjects, cfg.strata, np.random.default_rng(cfg.seed)
    ).reset_index(drop=True)
    layout = face_layout(layout_name(ctx, cfg.face_layout))
    plan = default_plan(cfg.perturbations or None, cfg.severities)
    if all(m.crop_for(ctx.cohort).resizes_only for m in models):
        # face crops resized whole: no face step for the crop family to vary
        plan = [(n, s) for n, s in plan if not create_perturbation(n).recrops]
    names = [CLEAN] + sorted({name for name, _ in plan})
    shas = sample["image_path"].map(ctx.cohort.image_sha256).tolist()
    cached = {}
    for m in models:  # each model's crops have their own layout: their own cache keys
        seen = crop_layout(m.crop_for(ctx.cohort), layout)
        keys = [perturbation_key(name, cfg.seed, seen) for name in names]
        cached[m.name] = ctx.store.cached_values(m.cache_key(ctx.cohort), shas, keys)
    return RobustnessSetup(models, subjects, sample, plan, layout, cached)


def plan_robustness_shards(ctx: RunContext, n_shards: int) -> list[RobustnessShard]:
    """The robustness sample in ``n_shards`` contiguous slices, each for all image models
    (so that a worker decodes each of its photos once)."""
    import dataclasses

    setup = robustness_setup(ctx)
    if isinstance(setup, str):
        return []
    cfg = ctx.config.robustness
    sample = setup.sample
    bounds = np.linspace(0, len(sample), max(1, n_shards) + 1).astype(int)
    shards = []
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        if b <= a:
            continue
        rows = sample.iloc[a:b].reset_index(drop=True)
        part = dataclasses.replace(
            ctx.cohort,
            frame=ctx.cohort.frame[
                ctx.cohort.frame["photo_id"].isin(set(rows["photo_id"]))
            ].reset_index(drop=True),
        )
        shas = set(rows["image_path"].map(ctx.cohort.image_sha256))
        cached = {k: v[v["image_sha256"].isin(shas)] for k, v in setup.cached.items()}
        shards.append(
            RobustnessShard(
                [m.spec for m in setup.models],
                part,
                rows,
                setup.plan,
                setup.layout,
                cfg.seed,
                cached,
                cfg.batch_size,
                i,
            )
        )
    return shards


def run_robustness_shard(shard: RobustnessShard) -> dict:
    """One robustness shard on a (Dask) worker: ``{model name: SuiteResult}``."""
    import os
    import socket

    models = [worker_model(spec) for spec in shard.model_specs]
    results = run_suite(
        models,
        shard.cohort,
        shard.rows,
        shard.plan,
        layout=shard.layout,
        seed=shard.seed,
        cached=shard.cached,
        batch_size=shard.batch_size,
    )
    for r in results.values():
        r.worker = f"{socket.gethostname()}:{os.getpid()}"
    return results


def _merge_suites(parts: list[dict]) -> dict:
    """One SuiteResult per model from the shards' results (in shard order)."""
    merged = {}
    for name in parts[0]:
        rs = [p[name] for p in parts]
        merged[name] = SuiteResult(
            frame=pd.concat([r.frame for r in rs], ignore_index=True),
            cache_values=pd.concat([r.cache_values for r in rs], ignore_index=True),
            n_computed=sum(r.n_computed for r in rs),
            n_cached=sum(r.n_cached for r in rs),
            seconds=sum(r.seconds for r in rs),
            shared_with=rs[0].shared_with,
            device=rs[0].device,
            worker=", ".join(sorted({r.worker for r in rs if r.worker})),
        )
    return merged


def robustness_stage(ctx: RunContext, shard_results: list | None = None) -> int:
    """Graded perturbations on a stratified sample of subjects (one photo each): perturbed
    predictions, their cache rows and the ``robustness`` metrics, in one transaction.

    ``shard_results``: ``(shard, {model: SuiteResult})`` pairs computed elsewhere (the Dask
    runner); only this process writes.
    """
    cfg = ctx.config.robustness
    setup = robustness_setup(ctx)
    if isinstance(setup, str):
        ctx.note("robustness", f"robustness not run: {setup}")
        return ctx.write("robustness", {}, note=ctx.notes["robustness"][0])
    sample = setup.sample
    ctx.note(
        "robustness",
        f"{len(sample)} of {len(setup.subjects)} subjects (stratified by "
        f"{', '.join(cfg.strata)}), {len(setup.plan)} perturbation levels",
    )
    if shard_results:
        parts = [r for _, r in sorted(shard_results, key=lambda pair: pair[0].index)]
        results = _merge_suites(parts)
        ctx.note(
            "robustness",
            f"{len(parts)} shards on worker process(es) {next(iter(results.values())).worker}",
        )
    else:
        progress.note(robustness_estimate(ctx, setup.models, len(sample), len(setup.plan)))
        results = run_suite(
            setup.models,
            ctx.cohort,
            sample,
            setup.plan,
            layout=setup.layout,
            seed=cfg.seed,
            cached=setup.cached,
            batch_size=cfg.batch_size,
            progress=lambda items, total: progress.bar(items, total, "robustness"),
        )
    attributes = sample[["photo_id"] + [c for c in cfg.groups if c in sample.columns]]
    tables: dict[str, list] = {"robustness": [], "predictions": [], "prediction_cache": []}
    for model in setup.models:
        result = results[model.name]
        tables["robustness"].append(
            robustness_table(result.frame, attributes, cfg, ctx.config.thresholds)
        )
        tables["predictions"].append(result.frame[result.frame["perturbation"] != CLEAN])
        if len(result.cache_values):
            tables["prediction_cache"].append(
                result.cache_values.assign(model_key=model.cache_key(ctx.cohort))
            )
        ctx.note(
            "robustness",
            f"{model.name}: {len(sample)} photos x {len(setup.plan) + 1} "
            f"passes ({len(setup.plan)} perturbation levels and the clean "
            f"one): {result.n_computed} computed, {result.n_cached} from "
            "the prediction cache",
        )
    for r in {tuple(r.shared_with): r for r in results.values()}.values():
        ctx.note(
            "robustness",
            f"each photo decoded once for {' and '.join(r.shared_with)}, "
            f"the perturbed run took {r.seconds:.1f} s on {r.device}",
        )
    merged = {k: pd.concat(v, ignore_index=True) for k, v in tables.items() if v}
    names = sorted(set(merged["robustness"]["perturbation"])) if "robustness" in merged else []
    if names:
        merged["figures"] = pd.DataFrame(
            [{"figure": "perturbation_examples", **perturbation_examples(names, cfg.severities)}]
        )
    return ctx.write("robustness", merged, note="; ".join(ctx.notes["robustness"]))
