"""The saliency stage: where each image model looks (:mod:`audit.saliency`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit import progress
from audit.stages.context import RunContext, image_models, layout_name, predicted_subjects


def saliency_stage(ctx: RunContext) -> int:
    """Where each image model looks (:mod:`audit.saliency`): attribution maps on a sample
    (``sample_per_group`` photos per group, one per subject), kept only as cohort and
    subgroup means over at least ``min_faces`` photos, region shares with bootstrap CIs,
    comparisons between models, and the randomised-weights sanity check; one transaction."""
    import time

    import torch

    from audit import saliency as sal
    from audit.inference import best_device, iter_decoded, to_unit
    from audit.perturbations import face_layout

    cfg = ctx.config.saliency
    models = image_models(ctx)
    reason = ("off (the default: it costs more forward passes than the robustness suite); "
              "turn it on with [saliency] enabled = true or --saliency" if not cfg.enabled else
              "the cohort carries predictions, not photos" if not ctx.cohort.has_images else
              "no model reads images" if not models else None)
    if reason:
        return ctx.write("saliency", {}, note=f"saliency not run: {reason}")
    subjects = predicted_subjects(ctx, models)
    rng = np.random.default_rng(cfg.seed)
    sample = sal.group_sample(subjects, cfg.sample_per_group, cfg.groups, rng)
    sample = sample.reset_index(drop=True)
    layout_id = layout_name(ctx, cfg.face_layout, ctx.config.robustness.face_layout)
    layout = face_layout(layout_id)
    methods = sal.configured_methods(cfg.methods or sal.list_attributions(), window=cfg.window,
                                     stride=cfg.stride, ig_steps=cfg.ig_steps)
    device = best_device()
    batch = cfg.batch_size or (64 if device.startswith("cuda") else 16)
    paths = [ctx.cohort.image_file(p) for p in sample["image_path"]]
    groups = sample[[g for g in cfg.groups if g in sample.columns]]
    ctx.note("saliency", f"{len(sample)} photos of {len(subjects)} subjects ({cfg.sample_per_group}"
                         f" per group of {', '.join(groups.columns) or 'the cohort'}), region "
                         f"template of face layout {layout_id}")
    sets: list[sal.MapSet] = []
    maps_rows: list[dict] = []
    targets_all: dict[tuple[str, str], sal.Target] = {}
    for size in sorted({m.input_size for m in models}):
        targets = [t for m in models if m.input_size == size
                   for t in sal.model_targets(m, device)]
        targets_all.update({(t.model, t.output): t for t in targets})
        failed = np.zeros(len(paths), dtype=bool)
        face_sum = np.zeros((size, size, 3))

        def batches():
            for idx, images, errs in iter_decoded(paths, size, device=device, batch_size=batch,
                                                  align=not ctx.cohort.spec.cropped):
                bad = np.array([bool(e) for e in errs], dtype=bool)
                failed[np.asarray(idx)[bad]] = True
                good = torch.from_numpy(~bad).to(images.device)
                face_sum[:] += images[good].double().sum(0).cpu().numpy()
                yield idx.numpy(), to_unit(images)

        result = sal.attribute_maps(targets, methods, progress.bar(
            batches(), (len(paths) + batch - 1) // batch, f"saliency ({size} px)"))
        template = sal.region_template(layout, size)
        n_ok = int((~failed).sum())
        if n_ok >= cfg.min_faces:  # the average face of the sample: the maps' backdrop
            maps_rows.append({"model": None, "output": None, "method": "mean_face",
                              "attribute": "all", "group_name": "all", "n": n_ok,
                              "height": size, "width": size,
                              "map": (face_sum / n_ok).astype(np.float32).ravel().tolist()})
        maps_rows.append({"model": None, "output": None, "method": "region_template",
                          "attribute": "all", "group_name": ",".join(sal.REGIONS), "n": 0,
                          "height": size, "width": size,
                          "map": template.astype(np.float32).ravel().tolist()})
        for (model, output, method), (parts, seconds) in result.items():
            order = np.concatenate([i for i, _ in parts])
            maps = np.concatenate([m for _, m in parts])[np.argsort(order, kind="stable")]
            keep = ~failed
            sets.append(sal.MapSet(model, output, method, sal.normalise(maps[keep]),
                                   sample["photo_id"].to_numpy()[keep],
                                   sample["subject_id"].to_numpy()[keep], seconds,
                                   {"template": template, "keep": keep}))
    timings: dict[tuple[str, str], list[str]] = {}
    for ms in sets:
        timings.setdefault((ms.model, ms.output), []).append(f"{ms.method} {ms.seconds:.1f} s")
    for (model, output), parts in timings.items():
        ctx.note("saliency", f"{model} {output}: {', '.join(parts)} on {device}")
    shares, checks = [], []
    for ms in sets:
        s_rows, m_rows = sal.cohort_rows(ms, groups[ms.extra["keep"]].reset_index(drop=True),
                                         ms.extra["template"], min_faces=cfg.min_faces,
                                         n_boot=cfg.n_boot, ci_level=cfg.ci_level, rng=rng)
        shares += s_rows
        maps_rows += m_rows
    for i, a in enumerate(sets):
        for b in sets[i + 1:]:
            if a.method == b.method and (a.model, a.output) != (b.model, b.output) \
                    and a.maps.shape[1:] == b.maps.shape[1:]:
                checks += sal.compare(a, b, a.extra["template"], n_boot=cfg.n_boot,
                                      ci_level=cfg.ci_level, fraction=cfg.top_fraction, rng=rng)
    start = time.perf_counter()
    decoded: dict[tuple, object] = {}
    randomised: dict[tuple[str, str], sal.Target] = {}
    for ms in sets:
        target = targets_all[(ms.model, ms.output)]
        if not target.differentiable:
            ctx.note("saliency", f"{ms.model} {ms.output} {ms.method}: no randomised-weights "
                                 "check (it needs the model's weights in torch)")
            continue
        k = min(cfg.sanity_photos, len(ms.maps))
        first = np.flatnonzero(ms.extra["keep"])[:k]  # the photos of ms.maps[:k]
        key = (target.size, tuple(first))
        if key not in decoded:  # once per input size, not once per method
            decoded[key] = _decode_sample([paths[i] for i in first], target.size, device,
                                          not ctx.cohort.spec.cropped)
        x = decoded[key]
        if (ms.model, ms.output) not in randomised:
            randomised[(ms.model, ms.output)] = sal.randomized_target(target, seed=cfg.seed)
        random = randomised[(ms.model, ms.output)]
        rand_maps = sal.normalise(np.asarray(methods[ms.method](random, x), dtype=np.float64))
        rho = sal.spearman_maps(ms.maps[:k].mean(axis=0), rand_maps.mean(axis=0))
        checks.append({"check_name": "randomized_weights_spearman", "model": ms.model,
                       "output": ms.output, "method": ms.method, "other_model": None,
                       "other_output": None, "value": rho, "ci_low": None, "ci_high": None,
                       "threshold": cfg.sanity_spearman_max,
                       "passed": bool(rho < cfg.sanity_spearman_max), "n": k,
                       "details": f"cohort map of {k} photos against the same model with every "
                                  "weight redrawn (Adebayo et al. 2018)"})
    ctx.note("saliency", f"randomised-weights checks: {time.perf_counter() - start:.1f} s")
    failed_checks = [c for c in checks if c["passed"] is False]
    for c in failed_checks:
        ctx.note("saliency", f"{c['model']} {c['output']} {c['method']}: its map barely changes "
                             f"when the weights are randomised (Spearman {c['value']:.2f}), so "
                             "read it with caution")
    tables = {"saliency": pd.DataFrame(shares), "saliency_maps": pd.DataFrame(maps_rows),
              "saliency_checks": pd.DataFrame(checks)}
    return ctx.write("saliency", tables, note="; ".join(ctx.notes["saliency"]))


def _decode_sample(paths: list, size: int, device: str, align: bool):
    """The first photos of the saliency sample as one [0, 1] batch on ``device``."""
    import torch

    from audit.inference import iter_decoded, to_unit

    parts = [to_unit(images) for _, images, _ in iter_decoded(
        paths, size, device=device, batch_size=len(paths) or 1, workers=0, align=align)]
    return torch.cat(parts)
