"""Accuracy of each model output, overall and by subgroup, with subject-level bootstrap CIs.

FaceAge (years) against chronological age: mean absolute error, mean signed error
(FaceAge - age), Pearson r, share within 5 years. Risk: Harrell's C-index for death (one
photo per subject). Rows go to the ``accuracy`` table. FaceAge values and intervals come from
:class:`audit.metrics.engine.FaceAgeEngine`, the engine the ``fairness`` table builds its
differences, flags and intersections on, so the two tables agree wherever they overlap.

References
----------
Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med 15, 1996 (C-index).
Bontempi D et al. FaceAge, a deep learning system to estimate biological age from face
photographs. Lancet Digit Health 7(6), 2025 (age bands <=65, 65-75, 75-85, >85).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.data.cohort import age_band, natural_order
from audit.metrics.engine import FaceAgeEngine
from audit.pipeline.config import AccuracyConfig, SurvivalConfig
from audit.pipeline.schema import columns
from audit.stats.bootstrap import bootstrap_weights, percentile_ci
from audit.stats.concordance import concordance_resamples, weighted_concordance

ACCURACY_COLUMNS = columns("accuracy")
FACEAGE_METRICS = ["mae", "mean_error", "pearson_r", "within_5y"]  # of the engine's six


def add_groups(frame: pd.DataFrame, config: AccuracyConfig) -> pd.DataFrame:
    """Add the derived grouping columns (``age_band``) the config asks for."""
    out = frame.copy()
    if "age" in out.columns and "age_band" in config.groups:
        out["age_band"] = age_band(out["age"], config.age_bands)
    return out


def _group_attributes(frame: pd.DataFrame, config: AccuracyConfig) -> list[str]:
    return [a for a in config.groups if a in frame.columns and frame[a].notna().any()]


def faceage_accuracy(frame: pd.DataFrame, model: str, config: AccuracyConfig) -> pd.DataFrame:
    """FaceAge accuracy overall and per group, one row per metric and group, from the
    engine the fairness table also uses (:class:`audit.metrics.engine.FaceAgeEngine`).

    Parameters
    ----------
    frame : one row per photo with ``subject_id``, ``age``, ``faceage`` (predicted) and the
        grouping columns.
    model : the model's name.
    config : bootstrap size, CI level, seed, groups and minimum group size.
    """
    engine = FaceAgeEngine.of(
        add_groups(frame, config), config.n_boot, config.seed, config.fairlearn_max_rows
    )
    df = engine.frame
    parts = [("all", engine.values())]
    parts += [(a, engine.values(df[a])) for a in _group_attributes(df, config)]
    rows = [
        {
            "model": model,
            "output": "faceage",
            "metric": metric,
            "attribute": attribute,
            "group_name": name,
            "n": int(groups.n[g]),
            "n_subjects": int(groups.subjects[g]),
            "value": float(groups.value[metric][g]),
            "ci_low": float(low[g]),
            "ci_high": float(high[g]),
            "status": "ok" if groups.subjects[g] >= config.min_group_size else "too_small",
        }
        for attribute, groups in parts
        for metric in FACEAGE_METRICS
        for low, high in [percentile_ci(groups.boot[metric], config.ci_level, axis=0)]
        for g, name in enumerate(groups.names)
    ]
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def harrell_c(time, event, risk) -> float:
    """Harrell's C for a risk score (higher = earlier death); NaN without usable pairs.
    One ``O(n log n)`` weighted pass (:mod:`audit.stats.concordance`), equal to lifelines'
    ``concordance_index`` (tested to 1e-12), which walks a Python tree per subject (0.8 s at
    100,000 subjects against 0.1 s)."""
    time, event, risk = (np.asarray(v, dtype=float) for v in (time, event, risk))
    if event.sum() == 0 or len(time) < 2:
        return float("nan")
    return float(weighted_concordance(time, event, risk, np.ones((1, len(time))))[0])


def bootstrap_c(
    time,
    event,
    risk,
    n_boot: int,
    rng: np.random.Generator,
    level: float = 0.95,
    linear_from: int | None = None,
) -> tuple[float, float, float]:
    """Harrell's C with a percentile bootstrap CI over subjects (one row per subject).

    Every resample's C comes from one weighted pass (:mod:`audit.stats.concordance`), equal to
    lifelines' ``concordance_index`` on the resampled rows; from ``linear_from`` subjects on,
    from its first-order expansion in the subject weights (the same resamples).
    """
    time, event, risk = map(np.asarray, (time, event, risk))
    point = harrell_c(time, event, risk)
    n = len(time)
    if n_boot <= 0 or n < 2 or np.isnan(point):
        return point, float("nan"), float("nan")
    samples = concordance_resamples(
        time, event, risk, bootstrap_weights(n, n_boot, rng, compact=True), linear_from
    )
    low, high = percentile_ci(samples, level)
    return point, float(low), float(high)


def risk_accuracy(
    subjects: pd.DataFrame, model: str, acc: AccuracyConfig, surv: SurvivalConfig
) -> pd.DataFrame:
    """Harrell's C of the ``risk`` output, overall and per group (one photo per subject)."""
    df = add_groups(subjects, acc)
    df = df[np.isfinite(df["risk"].astype(float)) & df["event"].notna()]
    rng = np.random.default_rng(surv.seed)
    rows = []
    parts = [("all", "all", df)]
    for attribute in _group_attributes(df, acc):
        for name in natural_order(df[attribute].dropna().unique()):
            parts.append((attribute, name, df[df[attribute] == name]))
    for attribute, name, sub in parts:
        n_events = int(sub["event"].sum())
        c, low, high = bootstrap_c(
            sub["time"],
            sub["event"],
            sub["risk"],
            surv.n_boot,
            rng,
            acc.ci_level,
            surv.linear_threshold(),
        )
        rows.append(
            {
                "model": model,
                "output": "risk",
                "metric": "c_index",
                "attribute": attribute,
                "group_name": str(name),
                "n": len(sub),
                "n_subjects": len(sub),
                "value": c,
                "ci_low": low,
                "ci_high": high,
                "status": "ok"
                if len(sub) >= acc.min_group_size and n_events >= surv.min_events
                else "too_small",
            }
        )
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)
