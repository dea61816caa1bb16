"""Accuracy of each model output, overall and by subgroup, with subject-level bootstrap CIs.

FaceAge (years) against chronological age: mean absolute error, mean signed error
(FaceAge - age), Pearson r, share within 5 years. Risk: Harrell's C-index for death (one
photo per subject). Rows go to the ``accuracy`` table; the fairness issue builds its
differences, flags and intersections on the same bootstrap (:mod:`audit.stats.bootstrap`).

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
from audit.pipeline.config import AccuracyConfig, SurvivalConfig
from audit.pipeline.schema import columns
from audit.stats.bootstrap import SubjectBootstrap, bootstrap_weights, percentile_ci
from audit.stats.concordance import weighted_concordance
from audit.stats.groups import label_codes

ACCURACY_COLUMNS = columns("accuracy")
FACEAGE_METRICS = ["mae", "mean_error", "pearson_r", "within_5y"]


def _faceage_metrics(t: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from totals ``t[..., k]`` of [1, e, |e|, |e|<=5, x, y, x^2, y^2, xy]."""
    n = t[..., 0]
    with np.errstate(all="ignore"):
        sxx = t[..., 6] - t[..., 4] ** 2 / n
        syy = t[..., 7] - t[..., 5] ** 2 / n
        sxy = t[..., 8] - t[..., 4] * t[..., 5] / n
        return {
            "mae": t[..., 2] / n,
            "mean_error": t[..., 1] / n,
            "pearson_r": sxy / np.sqrt(sxx * syy),
            "within_5y": t[..., 3] / n,
        }


def add_groups(frame: pd.DataFrame, config: AccuracyConfig) -> pd.DataFrame:
    """Add the derived grouping columns (``age_band``) the config asks for."""
    out = frame.copy()
    if "age" in out.columns and "age_band" in config.groups:
        out["age_band"] = age_band(out["age"], config.age_bands)
    return out


def _group_attributes(frame: pd.DataFrame, config: AccuracyConfig) -> list[str]:
    return [a for a in config.groups if a in frame.columns and frame[a].notna().any()]


def faceage_accuracy(frame: pd.DataFrame, model: str, config: AccuracyConfig) -> pd.DataFrame:
    """FaceAge accuracy overall and per group, one row per metric and group.

    Parameters
    ----------
    frame : one row per photo with ``subject_id``, ``age``, ``faceage`` (predicted) and the
        grouping columns.
    model : the model's name.
    config : bootstrap size, CI level, seed, groups and minimum group size.
    """
    df = add_groups(frame, config)
    df = df[np.isfinite(df["age"].astype(float)) & np.isfinite(df["faceage"].astype(float))]
    x = df["age"].to_numpy(float)
    y = df["faceage"].to_numpy(float)
    # Shifting x and y by constants leaves r unchanged and keeps the sums well conditioned.
    xc, yc = x - x.mean() if len(x) else x, y - y.mean() if len(y) else y
    e = y - x
    cols = np.column_stack(
        [
            np.ones_like(x),
            e,
            np.abs(e),
            (np.abs(e) <= 5).astype(float),
            xc,
            yc,
            xc * xc,
            yc * yc,
            xc * yc,
        ]
    )
    rng = np.random.default_rng(config.seed)
    boot = SubjectBootstrap.draw(df["subject_id"].to_numpy(), config.n_boot, rng)
    rows = []

    def emit(attribute, names, codes):
        point, samples = boot.totals(cols, codes, len(names))
        subj = boot.subjects_per_group(codes, len(names))
        pm = _faceage_metrics(point)
        bm = _faceage_metrics(samples)
        for metric in FACEAGE_METRICS:
            low, high = percentile_ci(bm[metric], config.ci_level, axis=0)
            for gi, name in enumerate(names):
                rows.append(
                    {
                        "model": model,
                        "output": "faceage",
                        "metric": metric,
                        "attribute": attribute,
                        "group_name": name,
                        "n": int(point[gi, 0]),
                        "n_subjects": int(subj[gi]),
                        "value": float(pm[metric][gi]),
                        "ci_low": float(low[gi]),
                        "ci_high": float(high[gi]),
                        "status": "ok" if subj[gi] >= config.min_group_size else "too_small",
                    }
                )

    emit("all", ["all"], None)
    for attribute in _group_attributes(df, config):
        emit(attribute, *label_codes(df[attribute]))
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def harrell_c(time, event, risk) -> float:
    """Harrell's C for a risk score (higher = earlier death); NaN without usable pairs."""
    from lifelines.utils import concordance_index

    time, event, risk = map(np.asarray, (time, event, risk))
    if event.sum() == 0 or len(time) < 2:
        return float("nan")
    try:
        return float(concordance_index(time, -risk, event))
    except ZeroDivisionError:
        return float("nan")


def bootstrap_c(
    time, event, risk, n_boot: int, rng: np.random.Generator, level: float = 0.95
) -> tuple[float, float, float]:
    """Harrell's C with a percentile bootstrap CI over subjects (one row per subject).

    Every resample's C comes from one weighted pass (:mod:`audit.stats.concordance`), equal to
    lifelines' ``concordance_index`` on the resampled rows.
    """
    time, event, risk = map(np.asarray, (time, event, risk))
    point = harrell_c(time, event, risk)
    n = len(time)
    if n_boot <= 0 or n < 2 or np.isnan(point):
        return point, float("nan"), float("nan")
    samples = weighted_concordance(time, event, risk, bootstrap_weights(n, n_boot, rng))
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
            sub["time"], sub["event"], sub["risk"], surv.n_boot, rng, acc.ci_level
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
