"""Drift explained by case mix: what part of a cohort's drift comes only from whom it holds
(its age, sex and race mix), and what remains (how the photos were taken, how the model
behaves at the same age, sex and race).

An older cohort has older FaceAges; that is drift, and it is not a fault of the photos or of
the model. To tell the two apart, the reference is reweighted to the new cohort's case mix:
each reference photo gets the weight ``P(new | age, sex, race) / P(reference | age, sex,
race)`` from a cross-fitted logistic regression on those columns alone (the same classifier
as :mod:`audit.monitor.estimate`), and each feature of the new cohort is compared with the
reweighted reference as well as with the reference itself:

- numbers (image properties, model outputs, clinical covariates): the mean shift (new minus
  reference) before and after reweighting, the adjusted shift's bootstrap CI (resamples of
  both cohorts, the weights refitted on each), and the normed Wasserstein distance (over the
  reference's SD, as evidently's drift effect) before and after;
- categories (site, camera, cancer type): the Jensen-Shannon distance of the shares before and
  after.
- embeddings: the drift's MMD permutation test again, against the reference resampled to the
  new mix (:func:`explain_embeddings`).

The share explained is ``1 - |adjusted| / |raw|`` of the mean shift (numbers) or of the
distance (categories), within 0 and 1. A feature's drift is *explained by case mix* when,
after reweighting, it is no longer a drift: its adjusted shift's CI includes 0 or its adjusted
distance is under the drift's minimum effect; otherwise it is *not explained* (*partly
explained* when reweighting removed at least a quarter of it). The case-mix columns
themselves drift by definition and are not judged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.monitor.drift import embedding_drift
from audit.monitor.estimate import (
    EstimateSettings,
    design,
    importance_weights,
    kish_ess,
    resampled_weights,
)
from audit.stats.bootstrap import bootstrap_weights, percentile_ci

CASE_MIX_NUMERIC = ["age"]
CASE_MIX_CATEGORICAL = ["sex", "race"]
EXPLAINED, PARTLY, NOT_EXPLAINED, NO_DRIFT = (
    "explained by case mix",
    "partly explained",
    "not explained",
    "no drift",
)
CASE_MIX_COLUMNS = [
    "model",
    "feature",
    "kind",
    "drifted",
    "raw_shift",
    "adjusted_shift",
    "adjusted_low",
    "adjusted_high",
    "raw_distance",
    "adjusted_distance",
    "distance_method",
    "explained_share",
    "status",
    "ess",
    "n_reference",
    "n_current",
]


def _weighted_js(reference: pd.Series, current: pd.Series, w: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, as evidently) of the current shares against
    the reference's shares under the weights ``w``."""
    from scipy.spatial.distance import jensenshannon

    ref = reference.astype(str).to_numpy()
    cur = current.astype(str).to_numpy()
    levels = sorted(set(ref) | set(cur))
    p = np.array([w[ref == v].sum() for v in levels]) / w.sum()
    q = np.array([(cur == v).mean() for v in levels])
    return float(jensenshannon(p, q))


def case_mix_weights(reference: pd.DataFrame, current: pd.DataFrame, settings: EstimateSettings):
    """The reference's weights toward the new cohort's age, sex and race mix (the
    cross-fitted classifier on those columns alone) and its features; the note says why
    there are none (no such column, or too little overlap)."""
    x_ref, x_cur, names = design(
        reference, current, CASE_MIX_NUMERIC, CASE_MIX_CATEGORICAL, components=0
    )
    if not names:
        return None, x_ref, x_cur, "no age, sex or race to reweight by"
    weights = importance_weights(x_ref, x_cur, settings)
    if not weights.ok:
        return None, x_ref, x_cur, "drift not split by case mix: " + "; ".join(weights.poor)
    return weights, x_ref, x_cur, None


def explain_embeddings(
    reference: np.ndarray,
    current: np.ndarray,
    w: np.ndarray,
    model: str,
    config,
    drifted: bool | None,
    raw: dict,
    level: float = 0.95,
) -> dict:
    """The embeddings' drift after reweighting: the reference resampled to the new
    cohort's case mix (drawn without replacement with probabilities proportional to ``w``,
    at most half the weights' effective sample size, so that few photos repeat their
    weight), then the drift's MMD permutation test against the new cohort (``raw``: the
    drift row of the unweighted test). Explained when that test no longer rejects at
    ``1 - level`` or reweighting removed at least three quarters of the MMD^2."""
    rng = np.random.default_rng(config.seed)
    size = int(min(config.embedding_max_n, len(current), kish_ess(w) // 2))
    row = {
        "model": model,
        "feature": "embeddings",
        "kind": "embeddings",
        "drifted": drifted,
        "raw_shift": np.nan,
        "adjusted_shift": np.nan,
        "adjusted_low": np.nan,
        "adjusted_high": np.nan,
        "raw_distance": raw["effect"],
        "distance_method": "MMD^2 (unbiased)",
        "ess": kish_ess(w),
        "n_reference": len(reference),
        "n_current": len(current),
    }
    if size < 10:
        return {**row, "adjusted_distance": np.nan, "explained_share": np.nan, "status": NO_DRIFT}
    drawn = rng.choice(len(reference), size=size, replace=False, p=w / w.sum())
    test = embedding_drift(reference[drawn], current, model, config)
    adjusted = test["effect"]
    share = _share(raw["effect"], adjusted)
    # MMD^2 has no effect-size floor (the drift judges it by its test): a remainder counts
    # when its test rejects and it keeps more than a quarter of the raw MMD^2
    residual = test["p_value"] < 1 - level and not (np.isfinite(share) and share >= 0.75)
    row.update(adjusted_distance=adjusted, explained_share=share)
    row["status"] = _status(row, residual)
    return row


def explain_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[tuple[str, str, str, str | None]],
    settings: EstimateSettings,
    drifted: dict | None = None,
    min_effect: tuple[float, float] = (0.1, 0.1),
    prepared: tuple | None = None,
) -> tuple[pd.DataFrame, str | None]:
    """For each ``(column, kind, type, model)`` (type ``num`` or ``cat``; the drift stage's
    features) other than the case-mix columns: its drift before and after reweighting the
    reference to the new cohort's age, sex and race mix. ``drifted``: the drift stage's
    decision per ``(model, column)``; ``min_effect``: the drift's minimum normed Wasserstein
    and Jensen-Shannon distances; ``prepared``: :func:`case_mix_weights`' result, when the
    caller has it. Returns the rows and a note (None, or why nothing was explained: no
    case-mix column, too little overlap)."""
    from scipy.stats import wasserstein_distance

    drifted = drifted or {}
    weights, x_ref, x_cur, note = prepared or case_mix_weights(reference, current, settings)
    if note:
        return pd.DataFrame(columns=CASE_MIX_COLUMNS), note
    rng = np.random.default_rng(settings.seed)
    nr, nc = len(reference), len(current)
    counts_ref = bootstrap_weights(nr, settings.n_boot, rng)
    counts_cur = bootstrap_weights(nc, settings.n_boot, rng)
    refit = resampled_weights(x_ref, x_cur, counts_ref, counts_cur) * counts_ref
    skip = set(CASE_MIX_NUMERIC) | set(CASE_MIX_CATEGORICAL)
    rows = []
    for column, kind, ftype, model in features:
        if column in skip or column not in reference.columns or column not in current.columns:
            continue
        row = {
            "model": model,
            "feature": column,
            "kind": kind,
            "drifted": drifted.get((model, column)),
            "ess": weights.ess,
        }
        if ftype == "num":
            r = pd.to_numeric(reference[column], errors="coerce").to_numpy(float)
            c = pd.to_numeric(current[column], errors="coerce").to_numpy(float)
            ok_r, ok_c = np.isfinite(r), np.isfinite(c)
            if ok_r.sum() < 2 or ok_c.sum() < 2:
                continue
            w, rv, cv = weights.w[ok_r], r[ok_r], c[ok_c]
            sd = max(float(np.std(rv)), 0.001)
            raw = float(cv.mean() - rv.mean())
            adjusted = float(cv.mean() - np.average(rv, weights=w))
            rows_r = refit[:, ok_r]
            cb = counts_cur[:, ok_c]
            samples = (cb @ cv) / cb.sum(1) - (rows_r @ rv) / rows_r.sum(1)
            low, high = percentile_ci(samples, settings.level)
            row.update(
                raw_shift=raw,
                adjusted_shift=adjusted,
                adjusted_low=float(low),
                adjusted_high=float(high),
                raw_distance=float(wasserstein_distance(rv, cv)) / sd,
                adjusted_distance=float(wasserstein_distance(rv, cv, u_weights=w)) / sd,
                distance_method="normed Wasserstein distance",
                explained_share=_share(raw, adjusted),
                n_reference=int(ok_r.sum()),
                n_current=int(ok_c.sum()),
            )
            residual = (low > 0 or high < 0) and row["adjusted_distance"] >= min_effect[0]
        else:
            r_ok, c_ok = reference[column].notna().to_numpy(), current[column].notna().to_numpy()
            if r_ok.sum() < 2 or c_ok.sum() < 2:
                continue
            ref_col, cur_col = reference[column][r_ok], current[column][c_ok]
            raw_d = _weighted_js(ref_col, cur_col, np.ones(int(r_ok.sum())))
            adj_d = _weighted_js(ref_col, cur_col, weights.w[r_ok])
            row.update(
                raw_shift=np.nan,
                adjusted_shift=np.nan,
                adjusted_low=np.nan,
                adjusted_high=np.nan,
                raw_distance=raw_d,
                adjusted_distance=adj_d,
                distance_method="Jensen-Shannon distance",
                explained_share=_share(raw_d, adj_d),
                n_reference=int(r_ok.sum()),
                n_current=int(c_ok.sum()),
            )
            residual = adj_d >= min_effect[1]
        row["status"] = _status(row, residual)
        rows.append(row)
    return pd.DataFrame(rows, columns=CASE_MIX_COLUMNS), None


def _share(raw: float, adjusted: float) -> float:
    if not np.isfinite(raw) or abs(raw) < 1e-12:
        return np.nan
    return float(np.clip(1 - abs(adjusted) / abs(raw), 0.0, 1.0))


def _status(row: dict, residual: bool) -> str:
    if not residual:
        return EXPLAINED if row["drifted"] else NO_DRIFT
    share = row["explained_share"]
    return PARTLY if np.isfinite(share) and share >= 0.25 else NOT_EXPLAINED
