"""Robustness of a model's outputs to graded perturbations: sampling, the perturbed run,
and the dose-response metrics of the ``robustness`` table.

How far does FaceAge move, and how often does a patient change risk quartile, when the photo
is darker, turned, made up, blurred, compressed or partly covered? For a stratified sample
of subjects (one photo each) every model sees every photo clean and under each perturbation
of the plan (:mod:`audit.robustness.perturbations`); each photo is decoded once. Per model, output,
perturbation and severity, overall and by subgroup:

- ``mean_shift``, ``mean_abs_shift``, ``p95_abs_shift``: perturbed minus clean, in years for
  FaceAge and in standard deviations of the clean score (over the sample) for risk;
- ``frac_over_tolerance``: the share of photos whose absolute shift exceeds the tolerance
  (default 5 years, 0.5 SD);
- ``spearman``: rank correlation of perturbed with clean;
- ``icc``: ICC(3,1) of the two (clean and perturbed as two "raters"; Shrout and Fleiss);
- ``quartile_change`` (risk): the share of patients whose risk quartile, with cut points
  from the clean scores of the whole sample, changes;
- ``passed``: at judged severities (up to ``judged_max_severity``) and in groups of at least
  ``min_group_size``, whether the shares stay within the thresholds; else NULL.

References
----------
Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater reliability.
Psychol Bull 1979;86(2):420-428.
Hendrycks D, Dietterich T. Benchmarking neural network robustness to common corruptions
and perturbations. ICLR 2019 (graded severities 1-5).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.data.cohort import natural_order
from audit.models.image_model import cached_outputs
from audit.models.inference import PerturbedModel, run_perturbed
from audit.pipeline.schema import columns
from audit.robustness.perturbations import (
    PERTURBATION_VERSION,
    create_perturbation,
    crop_layout,
)
from audit.stats.groups import group_index, quantile_cuts

ROBUSTNESS_COLUMNS = columns("robustness")
CLEAN = "none"
CACHE_COLUMNS = [c for c in columns("prediction_cache") if c != "model_key"]


# ---------------------------------------------------------------------------- sampling


def stratified_sample(
    subjects: pd.DataFrame, n: int, strata: list[str], rng: np.random.Generator
) -> pd.DataFrame:
    """``n`` rows of ``subjects`` drawn without replacement, allocated to the strata (the
    combinations of the ``strata`` columns; missing values form their own stratum) in
    proportion to their size by largest remainder, every stratum keeping at least one row
    when ``n`` allows. ``n`` 0, or at least the number of rows: every row."""
    if n <= 0 or n >= len(subjects):
        return subjects.copy()
    cols = [c for c in strata if c in subjects.columns]
    key = (
        subjects[cols]
        .astype(object)
        .where(subjects[cols].notna(), "unknown")
        .astype(str)
        .agg("|".join, axis=1)
        if cols
        else pd.Series("all", index=subjects.index)
    )
    sizes = key.value_counts().sort_index()
    quota = sizes / sizes.sum() * n
    alloc = np.floor(quota).astype(int)
    if n >= len(sizes):
        alloc = alloc.clip(lower=1)
    order = (quota - np.floor(quota)).sort_values(ascending=False, kind="stable").index
    i = 0
    while alloc.sum() < n:
        name = order[i % len(order)]
        if alloc[name] < sizes[name]:
            alloc[name] += 1
        i += 1
    while alloc.sum() > n:  # the floors of one overshot: take back from the largest
        alloc[alloc.idxmax()] -= 1
    chosen = []
    for name, k in alloc.items():
        members = np.flatnonzero((key == name).to_numpy())
        chosen.extend(rng.choice(members, size=min(k, len(members)), replace=False).tolist())
    return subjects.iloc[sorted(chosen)].copy()


# ---------------------------------------------------------------------------- seeds and keys


def image_seed(seed: int, image_sha256: str, name: str, severity: int) -> int:
    """The random seed of one image under one perturbation level: the same photo gets the
    same noise, shadow side or patch whatever batch or run it is in."""
    digest = hashlib.sha256(f"{seed}:{image_sha256}:{name}:{severity}".encode()).hexdigest()
    return int(digest[:15], 16)


def perturbation_key(name: str, seed: int, layout) -> str:
    """The prediction cache's ``perturbation`` value: the name and a digest of what else
    decides the perturbed image (seed, face layout, the perturbations' version)."""
    from dataclasses import asdict

    if name == CLEAN:
        return CLEAN
    text = json.dumps(
        {"seed": seed, "layout": asdict(layout), "v": PERTURBATION_VERSION}, sort_keys=True
    )
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:12]}"


# ---------------------------------------------------------------------------- the run


@dataclass
class SuiteResult:
    """Predictions of one model over the sample: clean and perturbed, long format
    (``photo_id, subject_id, model, output, perturbation, severity, value``), plus the cache
    rows computed now."""

    frame: pd.DataFrame
    cache_values: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    seconds: float = 0.0  # the whole perturbed run this model shared with others of its size
    shared_with: list[str] = field(default_factory=list)
    device: str = ""
    worker: str = ""


def run_suite(
    models: list,
    cohort,
    rows: pd.DataFrame,
    plan: list[tuple[str, int]],
    *,
    layout,
    seed: int,
    cached: dict[str, pd.DataFrame] | None = None,
    batch_size: int | None = None,
    progress=None,
) -> dict[str, SuiteResult]:
    """Every image model on ``rows`` (cohort rows with ``image_path``) clean and under each
    ``(name, severity)`` of ``plan``; photos are decoded once for all models of one input
    size. ``cached`` (by model name): prediction-cache rows (keys from
    :func:`perturbation_key`); cells found there are not computed again."""
    full_plan = [(CLEAN, 0)] + [p for p in plan if p[1] != 0]
    digests = rows["image_path"].map(cohort.image_sha256).to_numpy()
    paths = [cohort.image_file(p) for p in rows["image_path"]]
    results: dict[str, SuiteResult] = {}
    by_size: dict[tuple, list] = {}  # models that see the same input share the decoding
    for model in models:
        by_size.setdefault((model.input_size, model.crop_for(cohort)), []).append(model)

    def seeds(name, severity, indices):
        return [image_seed(seed, digests[i], name, severity) for i in indices]

    for (size, crop), group in by_size.items():
        seen = crop_layout(crop, layout)  # where the face lies in the crops these models see
        pkeys = {name: perturbation_key(name, seed, seen) for name, _ in full_plan}
        perturbations = {
            name: create_perturbation(name, layout=seen) for name, _ in full_plan if name != CLEAN
        }

        def perturb(name, severity, x, seeds, perturbations=perturbations):
            return x if name == CLEAN else perturbations[name](x, severity, seeds)

        prepared, have = [], {}
        for model in group:
            known = _cache_lookup(
                cached.get(model.name) if cached else None, model, digests, full_plan, pkeys
            )
            have[model.name] = known
            prepared.append(_still_needed(model, known, len(full_plan), len(rows)))
        recut = [
            p
            for p, (name, _) in enumerate(full_plan)
            if name != CLEAN and perturbations[name].recrops
        ]
        needs = [pm.need.copy() for pm in prepared]
        for pm in prepared:  # the photos are cut again for these: not in the shared pass
            pm.need[recut] = False
        outs, errors, seconds = run_perturbed(
            prepared,
            paths,
            size,
            full_plan,
            perturb,
            seeds,
            device=group[0].device,
            batch_size=batch_size,
            progress=progress,
            crop=crop,
        )
        for pm, need in zip(prepared, needs):
            pm.need = need
        seconds += _recut_passes(
            prepared, outs, recut, full_plan, perturbations, paths, size, crop, seed,
            device=group[0].device, batch_size=batch_size,
        )  # fmt: skip
        for model, pm in zip(group, prepared):
            result = _suite_frames(
                model,
                rows,
                digests,
                full_plan,
                pkeys,
                outs[model.name],
                have[model.name],
                pm.need,
                errors,
            )
            result.seconds, result.shared_with = seconds, [m.name for m in group]
            result.device = str(model.device)
            results[model.name] = result
    return results


def _recut_passes(
    prepared, outs, recut, plan, perturbations, paths, size, crop, seed, *, device, batch_size
) -> float:
    """The crop family: each of its plan items (``recut``) is a pass of its own, the photos
    cut again with the varied crop; their outputs go into ``outs`` at the item's row. Photos
    of a cohort of face crops that are only resized have no face step to vary: skipped."""
    if crop is None or crop.resizes_only:
        return 0.0
    seconds = 0.0
    for p in recut:
        name, severity = plan[p]
        variant = perturbations[name].recrop(
            crop, severity, seed=image_seed(seed, "crop", name, severity) & 0x7FFFFFFF
        )
        wanted = [
            PerturbedModel(pm.name, pm.forward, pm.normalize, pm.layout, pm.need[p : p + 1])
            for pm in prepared
            if pm.need[p].any()
        ]
        if not wanted:
            continue
        got, _, took = run_perturbed(
            wanted,
            paths,
            size,
            [(CLEAN, 0)],
            lambda _name, _severity, x, _seeds: x,
            lambda _name, _severity, indices: [0] * len(indices),
            device=device,
            batch_size=batch_size,
            crop=variant,
        )
        seconds += took
        for pm in wanted:
            if got[pm.name] is None:
                continue
            if outs[pm.name] is None:
                outs[pm.name] = np.full((len(plan),) + got[pm.name].shape[1:], np.nan)
            outs[pm.name][p] = got[pm.name][0]
    return seconds


def _still_needed(model, known: dict, n_plan: int, n_photos: int) -> PerturbedModel:
    """The loaded model with the (plan item, photo) cells the cache does not have."""
    model.load()
    need = np.ones((n_plan, n_photos), dtype=bool)
    for p, i in known:
        need[p, i] = False
    return PerturbedModel(model.name, model.forward, model.normalize, model.input_layout, need)


def _cache_lookup(cached: pd.DataFrame | None, model, digests, plan, pkeys) -> dict:
    """``{(plan index, photo index): {output: value}}`` for cells whose every output is cached."""
    if cached is None or not len(cached):
        return {}
    wide = cached_outputs(cached, ["image_sha256", "perturbation", "severity"], model.outputs)
    if wide.empty:
        return {}
    lookup = {k: row for k, row in zip(wide.index, wide.to_dict("records"))}
    found = {}
    for p, (name, severity) in enumerate(plan):
        for i, sha in enumerate(digests):
            hit = lookup.get((sha, pkeys[name], severity))
            if hit is not None:
                found[(p, i)] = hit
    return found


def _suite_frames(model, rows, digests, plan, pkeys, raw, have, need, errors) -> SuiteResult:
    n_plan, n = need.shape
    frames, cache = [], []
    computed_cells = int(need.sum())
    read = model.read(raw, check=False) if raw is not None else {}
    for name in model.outputs:
        values, spread = read.get(name, (np.full((n_plan, n), np.nan), None))
        values = np.where(need, values, np.nan)
        spread = np.full((n_plan, n), np.nan) if spread is None else np.where(need, spread, np.nan)
        for (p, i), hit in have.items():
            values[p, i] = hit[name]
            spread[p, i] = hit.get(f"{name}:spread", np.nan)
        for p, (pname, severity) in enumerate(plan):
            ok = np.isfinite(values[p])
            frames.append(
                pd.DataFrame(
                    {
                        "photo_id": rows["photo_id"].to_numpy()[ok],
                        "subject_id": rows["subject_id"].to_numpy()[ok],
                        "model": model.name,
                        "output": name,
                        "perturbation": pname,
                        "severity": severity,
                        "value": values[p][ok],
                        "spread": spread[p][ok],
                    }
                )
            )
            fresh = ok & need[p]
            if fresh.any():
                cache.append(
                    pd.DataFrame(
                        {
                            "image_sha256": digests[fresh],
                            "perturbation": pkeys[pname],
                            "severity": severity,
                            "output": name,
                            "value": values[p][fresh],
                            "spread": spread[p][fresh],
                        }
                    )
                )
    frame = pd.concat(frames, ignore_index=True)
    failed = sum(bool(e) for e in errors)
    notes = []
    if failed:
        notes.append(f"{failed} photo(s) could not be prepared and are left out")
    cache_frame = (
        pd.concat(cache, ignore_index=True) if cache else pd.DataFrame(columns=CACHE_COLUMNS)
    )
    return SuiteResult(
        frame=frame,
        cache_values=cache_frame,
        notes=notes,
        n_computed=computed_cells,
        n_cached=n_plan * n - computed_cells,
    )


# ---------------------------------------------------------------------------- metrics


def icc_3_1(ratings: np.ndarray) -> float:
    """ICC(3,1) of an (n targets, k raters) matrix: two-way mixed effects, consistency,
    single rater, ``(MSR - MSE) / (MSR + (k - 1) MSE)`` (Shrout and Fleiss 1979, case 3).
    NaN when fewer than two targets or no variance between targets."""
    x = np.asarray(ratings, dtype=float)
    n, k = x.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    msr = ss_rows / (n - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse
    return float((msr - mse) / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def shift_metrics(
    clean: np.ndarray,
    perturbed: np.ndarray,
    *,
    unit: float,
    tolerance: float,
    quartile_edges: np.ndarray | None = None,
) -> dict:
    """The table's metrics for paired clean and perturbed outputs; shifts are divided by
    ``unit`` (1 for years, the clean SD for risk) before they meet ``tolerance``."""
    shift = (perturbed - clean) / unit
    a = np.abs(shift)
    out = {
        "n": int(len(shift)),
        "mean_shift": float(shift.mean()) if len(shift) else np.nan,
        "mean_abs_shift": float(a.mean()) if len(a) else np.nan,
        "p95_abs_shift": float(np.quantile(a, 0.95)) if len(a) else np.nan,
        "frac_over_tolerance": float((a > tolerance).mean()) if len(a) else np.nan,
        "spearman": spearman(clean, perturbed),
        "icc": icc_3_1(np.column_stack([clean, perturbed])),
        "quartile_change": np.nan,
    }
    if quartile_edges is not None and len(shift):
        before = group_index(clean, quartile_edges)
        after = group_index(perturbed, quartile_edges)
        out["quartile_change"] = float((before != after).mean())
    return out


def robustness_table(
    predictions: pd.DataFrame, attributes: pd.DataFrame, config, thresholds
) -> pd.DataFrame:
    """The ``robustness`` rows of one model's suite predictions.

    Parameters
    ----------
    predictions : long frame from :func:`run_suite` (clean rows have perturbation ``none``).
    attributes : one row per photo: ``photo_id`` and the subgroup columns of
        ``config.groups`` (``age_band`` already computed).
    config : the audit config's ``robustness`` section.
    thresholds : the audit config's thresholds.
    """
    rows = []
    for (model, output), g in predictions.groupby(["model", "output"], sort=False):
        clean = g[g["perturbation"] == CLEAN].set_index("photo_id")["value"]
        if clean.empty:
            continue
        unit = 1.0 if output == "faceage" else float(clean.std(ddof=1))
        if not np.isfinite(unit) or unit <= 0:
            unit = 1.0
        tolerance = config.tolerance_years if output == "faceage" else config.tolerance_sd
        edges = quantile_cuts(clean.to_numpy(), 4) if output == "risk" else None
        attrs = attributes.set_index("photo_id").reindex(clean.index)
        pert = g[g["perturbation"] != CLEAN]
        for (name, severity), h in pert.groupby(["perturbation", "severity"], sort=False):
            p = create_perturbation(name)
            vals = h.set_index("photo_id")["value"]
            common = clean.index.intersection(vals.index)
            c, v = clean.loc[common].to_numpy(), vals.loc[common].to_numpy()
            groups = [("all", "all", np.ones(len(common), dtype=bool))]
            for attribute in config.groups:
                if attribute not in attrs.columns:
                    continue
                col = attrs.loc[common, attribute]
                for value in natural_order(col.dropna().unique()):
                    groups.append((attribute, str(value), (col == value).to_numpy()))
            for attribute, group_name, mask in groups:
                m = shift_metrics(
                    c[mask], v[mask], unit=unit, tolerance=tolerance, quartile_edges=edges
                )
                judged = severity <= config.judged_max_severity and m["n"] >= config.min_group_size
                passed = None
                if judged:
                    passed = (
                        m["frac_over_tolerance"] <= thresholds.robustness_frac_over_tolerance_max
                    )
                    if output == "risk":
                        passed = passed and (
                            m["quartile_change"] <= thresholds.robustness_quartile_change_max
                        )
                rows.append(
                    {
                        "model": model,
                        "output": output,
                        "perturbation": name,
                        "family": p.family,
                        "severity": int(severity),
                        "description": p.describe(int(severity)),
                        "attribute": attribute,
                        "group_name": group_name,
                        **m,
                        "passed": None if passed is None else bool(passed),
                    }
                )
    frame = pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)
    frame["passed"] = frame["passed"].astype(object)
    return frame
