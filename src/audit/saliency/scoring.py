"""The saliency audit of a photo sample: attribution maps of every image model's outputs
by every configured method, kept as cohort and subgroup means with region shares and their
bootstrap CIs, comparisons between models, and the randomised-weights sanity check
(:mod:`audit.saliency.maps` holds the methods and the statistics; this module runs them over a
sample, decoding each photo once per input size)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from audit.models.inference import iter_decoded, to_unit
from audit.robustness.perturbations import crop_layout
from audit.saliency import maps as sal


@dataclass
class SaliencyAudit:
    """The ``saliency``, ``saliency_maps`` and ``saliency_checks`` rows, and notes."""

    shares: list[dict]
    maps: list[dict]
    checks: list[dict]
    notes: list[str] = field(default_factory=list)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "saliency": pd.DataFrame(self.shares),
            "saliency_maps": pd.DataFrame(self.maps),
            "saliency_checks": pd.DataFrame(self.checks),
        }


def audit_sample(
    models: list,
    paths: list,
    sample: pd.DataFrame,
    groups: pd.DataFrame,
    layout,
    methods: dict[str, Callable],
    cfg,
    *,
    device: str,
    batch: int,
    crops: dict,
    rng: np.random.Generator,
    progress: Callable | None = None,
) -> SaliencyAudit:
    """Saliency of ``models`` on the photos at ``paths`` (rows of ``sample``, with their
    ``groups`` columns), under the region template of face ``layout``; ``cfg`` is the
    :class:`audit.pipeline.config.SaliencyConfig`, ``progress(items, total, label)`` wraps the
    batches, ``crops`` says how each model's input is cut from the photos (by model name)."""
    sets, maps_rows, targets = _map_sets(
        models,
        paths,
        sample,
        layout,
        methods,
        cfg,
        device=device,
        batch=batch,
        crops=crops,
        progress=progress or (lambda items, total, label: items),
    )
    notes = _timing_notes(sets, device)
    shares, checks = [], []
    for ms in sets:
        s_rows, m_rows = sal.cohort_rows(
            ms,
            groups[ms.extra["keep"]].reset_index(drop=True),
            ms.extra["template"],
            min_faces=cfg.min_faces,
            n_boot=cfg.n_boot,
            ci_level=cfg.ci_level,
            rng=rng,
        )
        shares += s_rows
        maps_rows += m_rows
    checks += _between_models(sets, cfg, rng)
    checks += _sanity_checks(
        sets, targets, paths, methods, cfg, device=device, crops=crops, notes=notes
    )
    for c in checks:
        if c["passed"] is False and c["check_name"] == "randomized_weights_spearman":
            notes.append(
                f"{c['model']} {c['output']} {c['method']}: its map barely changes "
                f"when the weights are randomised (Spearman {c['value']:.2f}), so "
                "read it with caution"
            )
    return SaliencyAudit(shares, maps_rows, checks, notes)


def _map_sets(models, paths, sample, layout, methods, cfg, *, device, batch, crops, progress):
    """Every (model, output, method)'s normalised maps of the photos that decoded, each photo
    decoded once per input (size and crop); the sample's mean face and the region template
    as ``saliency_maps`` rows; the attribution targets by (model, output)."""
    import torch

    sets: list[sal.MapSet] = []
    maps_rows: list[dict] = []
    targets_all: dict[tuple[str, str], sal.Target] = {}
    inputs = {(m.input_size, crops[m.name]): None for m in models}
    for size, crop in sorted(inputs, key=lambda k: (k[0], str(k[1]))):
        targets = [
            t
            for m in models
            if (m.input_size, crops[m.name]) == (size, crop)
            for t in sal.model_targets(m, device)
        ]
        targets_all.update({(t.model, t.output): t for t in targets})
        failed = np.zeros(len(paths), dtype=bool)
        face_sum = np.zeros((size, size, 3))

        def batches():
            for idx, images, errs in iter_decoded(
                paths, size, device=device, batch_size=batch, crop=crop
            ):
                bad = np.array([bool(e) for e in errs], dtype=bool)
                failed[np.asarray(idx)[bad]] = True
                good = torch.from_numpy(~bad).to(images.device)
                face_sum[:] += images[good].double().sum(0).cpu().numpy()
                yield idx.numpy(), to_unit(images)

        result = sal.attribute_maps(
            targets,
            methods,
            progress(batches(), (len(paths) + batch - 1) // batch, f"saliency ({size} px)"),
        )
        template = sal.region_template(crop_layout(crop, layout), size)
        maps_rows += _backdrop_rows(face_sum, int((~failed).sum()), template, cfg.min_faces)
        for (model, output, method), (parts, seconds) in result.items():
            order = np.concatenate([i for i, _ in parts])
            maps = np.concatenate([m for _, m in parts])[np.argsort(order, kind="stable")]
            keep = ~failed
            sets.append(
                sal.MapSet(
                    model,
                    output,
                    method,
                    sal.normalise(maps[keep]),
                    sample["photo_id"].to_numpy()[keep],
                    sample["subject_id"].to_numpy()[keep],
                    seconds,
                    {"template": template, "keep": keep},
                )
            )
    return sets, maps_rows, targets_all


def _timing_notes(sets: list, device: str) -> list[str]:
    """One note per (model, output): each method's seconds."""
    timings: dict[tuple[str, str], list[str]] = {}
    for ms in sets:
        timings.setdefault((ms.model, ms.output), []).append(f"{ms.method} {ms.seconds:.1f} s")
    return [
        f"{model} {output}: {', '.join(parts)} on {device}"
        for (model, output), parts in timings.items()
    ]


def _between_models(sets: list, cfg, rng) -> list[dict]:
    """The agreement checks of every two (model, output)s' maps under the same method."""
    checks = []
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            if (
                a.method == b.method
                and (a.model, a.output) != (b.model, b.output)
                and a.maps.shape[1:] == b.maps.shape[1:]
            ):
                checks += sal.compare(
                    a,
                    b,
                    a.extra["template"],
                    n_boot=cfg.n_boot,
                    ci_level=cfg.ci_level,
                    fraction=cfg.top_fraction,
                    rng=rng,
                )
    return checks


def _backdrop_rows(face_sum: np.ndarray, n_ok: int, template: np.ndarray, min_faces: int):
    """``saliency_maps`` rows of one input size's backdrop: the sample's mean face (with at
    least ``min_faces`` photos) and the region template."""
    size = template.shape[0]
    common = {"model": None, "output": None, "attribute": "all", "height": size, "width": size}
    rows = []
    if n_ok >= min_faces:  # the average face of the sample: the maps' backdrop
        rows.append(
            {
                **common,
                "method": "mean_face",
                "group_name": "all",
                "n": n_ok,
                "map": (face_sum / n_ok).astype(np.float32).ravel().tolist(),
            }
        )
    rows.append(
        {
            **common,
            "method": "region_template",
            "group_name": ",".join(sal.REGIONS),
            "n": 0,
            "map": template.astype(np.float32).ravel().tolist(),
        }
    )
    return rows


def _sanity_checks(sets, targets, paths, methods, cfg, *, device, crops, notes) -> list[dict]:
    """The randomised-weights check of each map set (Adebayo et al. 2018): the cohort map of
    the first ``sanity_photos`` photos against the same model with every weight redrawn."""
    start = time.perf_counter()
    checks = []
    decoded: dict[tuple, object] = {}
    randomised: dict[tuple[str, str], sal.Target] = {}
    for ms in sets:
        target = targets[(ms.model, ms.output)]
        if not target.differentiable:
            notes.append(
                f"{ms.model} {ms.output} {ms.method}: no randomised-weights check (it "
                "needs the model's weights in torch)"
            )
            continue
        k = min(cfg.sanity_photos, len(ms.maps))
        first = np.flatnonzero(ms.extra["keep"])[:k]  # the photos of ms.maps[:k]
        crop = crops[target.model]
        key = (target.size, crop, tuple(first))
        if key not in decoded:  # once per input, not once per method
            decoded[key] = _decode_sample([paths[i] for i in first], target.size, device, crop)
        x = decoded[key]
        if (ms.model, ms.output) not in randomised:
            randomised[(ms.model, ms.output)] = sal.randomized_target(target, seed=cfg.seed)
        random = randomised[(ms.model, ms.output)]
        rand_maps = sal.normalise(np.asarray(methods[ms.method](random, x), dtype=np.float64))
        rho = sal.spearman_maps(ms.maps[:k].mean(axis=0), rand_maps.mean(axis=0))
        checks.append(
            {
                "check_name": "randomized_weights_spearman",
                "model": ms.model,
                "output": ms.output,
                "method": ms.method,
                "other_model": None,
                "other_output": None,
                "value": rho,
                "ci_low": None,
                "ci_high": None,
                "threshold": cfg.sanity_spearman_max,
                "passed": bool(rho < cfg.sanity_spearman_max),
                "n": k,
                "details": f"cohort map of {k} photos against the same model with every "
                "weight redrawn (Adebayo et al. 2018)",
            }
        )
    notes.append(f"randomised-weights checks: {time.perf_counter() - start:.1f} s")
    return checks


def _decode_sample(paths: list, size: int, device: str, crop):
    """The first photos of the saliency sample as one [0, 1] batch on ``device``."""
    import torch

    parts = [
        to_unit(images)
        for _, images, _ in iter_decoded(
            paths, size, device=device, batch_size=len(paths) or 1, workers=0, crop=crop
        )
    ]
    return torch.cat(parts)
