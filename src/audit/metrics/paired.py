"""Agreement of a model's outputs on real repeated photos of the same person: before and
after make-up or cosmetic surgery, with and without glasses, under another light or pose, and
test-retest repeatability (the ``paired`` and ``paired_pairs`` tables).

The robustness suite perturbs photos synthetically; a paired study holds real second photos.
For each comparison the cohort declares (a ``condition`` against its ``reference``), each
subject contributes one pair: the photo under the reference condition and the one under the
compared condition (within the same ``pair`` id when the manifest gives one). On the
within-subject differences ``d = (compared - reference - expected change) / unit``:

- ``mean_shift`` with a subject-bootstrap percentile CI;
- Bland-Altman 95% limits of agreement ``mean +- 1.96 SD(d)`` and their CIs, each limit
  ``+- t(n-1) sqrt(3 SD^2 / n)`` (Bland and Altman 1986, section 4);
- the repeatability coefficient ``1.96 sqrt(sum d^2 / n)`` = ``1.96 sqrt(2) s_w`` with the
  within-subject SD ``s_w^2 = sum d^2 / 2n`` (Bland and Altman 1986; 1996): the value two
  photos of one person differ by less than for 95% of pairs; meaningful as repeatability for
  retakes, reported for every comparison;
- ICC(3,1) of the reference and compared outputs (the robustness suite's
  :func:`audit.robustness.suite.icc_3_1`);
- for risk: the share of subjects whose risk quartile changes (cut points from the reference
  photos) and the linearly weighted kappa of the two quartile assignments (Cohen 1968);
- the two one-sided tests (Schuirmann 1987) of ``|mean| < tolerance`` at level ``alpha``:
  ``equivalent`` when both reject (the ``1 - 2 alpha`` CI lies inside the margins), ``not
  equivalent`` when that CI lies entirely beyond one margin, else ``inconclusive``; with fewer
  than ``min_pairs`` pairs always ``inconclusive`` (too few pairs).

Units: FaceAge in years; risk in standard deviations of the reference photos' risk. Photos
taken apart in time (pre and post surgery) differ by the chronological age between them; the
expected change ``slope x age gap`` is taken off each difference, with slope 1 for FaceAge (a
biological age advances a year a year) and, for risk, the least-squares slope of risk on age
across the reference photos (the model's own age gradient).

References
----------
Bland JM, Altman DG. Statistical methods for assessing agreement between two methods of
clinical measurement. Lancet 1986;i:307-310.
Bland JM, Altman DG. Measurement error. BMJ 1996;313:744.
Schuirmann DJ. A comparison of the two one-sided tests procedure and the power approach for
assessing the equivalence of average bioavailability. J Pharmacokinet Biopharm 1987;15:657-680.
Cohen J. Weighted kappa. Psychol Bull 1968;70(4):213-220.
Shrout PE, Fleiss JL. Intraclass correlations. Psychol Bull 1979;86(2):420-428.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from audit.data.cohort import age_band, natural_order
from audit.pipeline.schema import columns
from audit.robustness.suite import icc_3_1
from audit.stats.bootstrap import bootstrap_weights, percentile_ci
from audit.stats.groups import ID_COLUMNS, canonical_rows, group_index, quantile_cuts

PAIRED_COLUMNS = [c for c in columns("paired") if c != "run_id"]
PAIR_COLUMNS = [c for c in columns("paired_pairs") if c != "run_id"]
LOA_Z = 1.96  # Bland and Altman's 95% limits

EQUIVALENT = "equivalent"
NOT_EQUIVALENT = "not equivalent"
INCONCLUSIVE = "inconclusive"


# ---------------------------------------------------------------------------- statistics


def limits_of_agreement(d: np.ndarray, level: float = 0.95, z: float = LOA_Z) -> dict:
    """Bland-Altman limits ``mean +- z SD`` of differences ``d`` (z 1.96; the 1986 paper's
    worked example rounds it to 2) and a ``level`` CI of each (standard error
    ``sqrt(3 SD^2 / n)``, t with n - 1 degrees of freedom; Bland and Altman 1986). NaN with
    fewer than two differences."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    keys = ("sd_diff", "loa_low", "loa_low_ci_low", "loa_low_ci_high")
    keys += ("loa_high", "loa_high_ci_low", "loa_high_ci_high")
    if n < 2:
        return dict.fromkeys(keys, np.nan)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * np.sqrt(3 * sd**2 / n))
    low, high = mean - z * sd, mean + z * sd
    return {
        "sd_diff": sd,
        "loa_low": low,
        "loa_low_ci_low": low - half,
        "loa_low_ci_high": low + half,
        "loa_high": high,
        "loa_high_ci_low": high - half,
        "loa_high_ci_high": high + half,
    }


def repeatability_coefficient(d: np.ndarray) -> float:
    """``1.96 sqrt(sum d^2 / n)``: 1.96 sqrt(2) times the within-subject SD of duplicate
    measurements (Bland and Altman 1986; 1996). NaN without differences."""
    d = np.asarray(d, dtype=float)
    return float(LOA_Z * np.sqrt(np.mean(d**2))) if len(d) else float("nan")


def weighted_kappa(a, b, k: int) -> float:
    """Cohen's kappa of two assignments to ``k`` ordered categories (codes 0..k-1) with linear
    weights ``1 - |i - j| / (k - 1)``. NaN when the expected agreement is complete."""
    a, b = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    if len(a) == 0 or k < 2:
        return float("nan")
    observed = np.zeros((k, k))
    np.add.at(observed, (a, b), 1.0)
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    disagree = np.abs(i - j) / (k - 1)
    denominator = float((disagree * expected).sum())
    if denominator <= 0:
        return float("nan")
    return float(1 - (disagree * observed).sum() / denominator)


@dataclass(frozen=True)
class Equivalence:
    """The two one-sided tests of ``|mean difference| < margin``."""

    p: float  # the larger of the two one-sided p-values
    ci_low: float  # the 1 - 2 alpha CI of the mean difference
    ci_high: float
    decision: str  # equivalent, not equivalent, inconclusive
    reason: str


def tost(d: np.ndarray, margin: float, alpha: float = 0.05, min_pairs: int = 20) -> Equivalence:
    """Schuirmann's two one-sided t-tests of the mean of ``d`` against ``+-margin``.

    ``equivalent`` when both one-sided tests reject at ``alpha`` (the ``1 - 2 alpha`` CI lies
    within the margins); ``not equivalent`` when that CI lies entirely beyond a margin (the
    shift exceeds the tolerance, one-sided at ``alpha``); otherwise, or with fewer than
    ``min_pairs`` differences, ``inconclusive``."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return Equivalence(np.nan, np.nan, np.nan, INCONCLUSIVE, f"too few pairs ({n})")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    t_crit = float(stats.t.ppf(1 - alpha, n - 1))
    low, high = mean - t_crit * se, mean + t_crit * se
    if se > 0:
        p_low = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
        p_high = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
        p = max(p_low, p_high)
    else:
        p = 0.0 if abs(mean) < margin else 1.0
    ci = f"{100 * (1 - 2 * alpha):g}% CI {low:+.2f} to {high:+.2f} against +-{margin:g}"
    if n < min_pairs:
        return Equivalence(p, low, high, INCONCLUSIVE, f"too few pairs ({n} < {min_pairs})")
    if p < alpha:
        return Equivalence(p, low, high, EQUIVALENT, ci)
    if low > margin or high < -margin:
        return Equivalence(p, low, high, NOT_EQUIVALENT, ci)
    return Equivalence(p, low, high, INCONCLUSIVE, f"{ci}: crosses the margin")


def agreement(
    reference: np.ndarray,
    compared: np.ndarray,
    *,
    unit: float,
    tolerance: float,
    expected: np.ndarray | None = None,
    quartile_edges: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    level: float = 0.95,
    alpha: float = 0.05,
    min_pairs: int = 20,
) -> dict:
    """Every agreement statistic of one comparison in one group.

    Parameters
    ----------
    reference, compared : the outputs of each subject's two photos (aligned).
    unit : differences are divided by it (1 for years, the reference SD for risk).
    tolerance : the equivalence margin, in ``unit``.
    expected : the change expected from the time between the photos (subtracted), or None.
    quartile_edges : risk quartile cut points (risk only).
    weights : ``(B, n)`` subject-bootstrap counts of these pairs (None: no bootstrap).
    """
    ref = np.asarray(reference, dtype=float)
    cmp_ = np.asarray(compared, dtype=float)
    if expected is not None:
        cmp_ = cmp_ - np.asarray(expected, dtype=float)
    d = (cmp_ - ref) / unit
    n = len(d)
    out = {"n_pairs": int(n), "mean_shift": float(d.mean()) if n else np.nan}
    if weights is not None and len(weights) and n:
        with np.errstate(invalid="ignore"):  # a group no resample drew: NaN, left out
            boot = (weights @ d) / weights.sum(axis=1)
        out["mean_shift_low"], out["mean_shift_high"] = map(float, percentile_ci(boot, level))
    else:
        out["mean_shift_low"] = out["mean_shift_high"] = np.nan
    out.update(limits_of_agreement(d, level))
    out["repeatability"] = repeatability_coefficient(d)
    out["icc"] = icc_3_1(np.column_stack([ref, cmp_])) if n else np.nan
    out["quartile_change"] = out["kappa"] = np.nan
    if quartile_edges is not None and n:
        before, after = group_index(ref, quartile_edges), group_index(cmp_, quartile_edges)
        out["quartile_change"] = float((before != after).mean())
        out["kappa"] = weighted_kappa(before, after, len(quartile_edges) + 1)
    eq = tost(d, tolerance, alpha=alpha, min_pairs=min_pairs)
    out.update(
        tolerance=float(tolerance),
        tost_p=eq.p,
        equivalence_low=eq.ci_low,
        equivalence_high=eq.ci_high,
        equivalence=eq.decision,
        reason=eq.reason,
        passed={EQUIVALENT: True, NOT_EQUIVALENT: False}.get(eq.decision),
    )
    return out


# ---------------------------------------------------------------------------- pairing


def pair_photos(frame: pd.DataFrame, condition: str, reference: str) -> tuple[pd.DataFrame, list]:
    """One pair per subject of ``frame``'s photos under ``reference`` and ``condition``.

    Photos pair within a subject, and within the same ``pair`` id when the manifest gives one.
    A subject with several complete pairs (or several photos of a condition) keeps the first
    by ``photo_date``, then by manifest row; the notes count what was left out.

    Returns ``(pairs, notes)``: one row per subject with ``subject_id``, ``photo_ref``,
    ``photo_cmp`` and ``age_gap`` (years between the photos: from ``age`` where both have it,
    else from ``photo_date``, else 0), in the order of the reference photos in ``frame``.
    """
    notes: list[str] = []
    cols = ["subject_id", "photo_ref", "photo_cmp", "age_gap"]
    if "condition" not in frame.columns:
        return pd.DataFrame(columns=cols), notes
    order = [c for c in ("photo_date", "_row") if c in frame.columns]
    rows = frame[frame["condition"].isin([condition, reference])]
    if order:
        rows = rows.sort_values(order, na_position="last", kind="stable")
    unit_cols = ["subject_id"] + (
        ["pair"] if "pair" in rows.columns and rows["pair"].notna().any() else []
    )
    keyed = rows.assign(
        _unit=rows[unit_cols]
        .astype(object)
        .where(rows[unit_cols].notna(), "")
        .astype(str)
        .agg("\x1f".join, axis=1)
    )
    ref = keyed[keyed["condition"] == reference].drop_duplicates("_unit")
    cmp_ = keyed[keyed["condition"] == condition].drop_duplicates("_unit")
    repeated = len(keyed) - len(ref) - len(cmp_)  # a condition twice in one visit
    if repeated:
        notes.append(
            f"{condition} vs {reference}: {repeated} further photo(s) of a condition already "
            "photographed in the same visit left out (the first by date kept)"
        )
    # the unit holds the subject, so a merged pair is always one subject's two photos
    merged = ref.merge(cmp_, on="_unit", suffixes=("_ref", "_cmp"))
    extra = int(merged["subject_id_ref"].duplicated().sum())
    merged = merged.drop_duplicates("subject_id_ref")
    if extra:
        notes.append(
            f"{condition} vs {reference}: {extra} further pair(s) of subjects with several "
            "left out (one pair per subject, the first by date)"
        )
    gap = pd.Series(0.0, index=merged.index)
    if "age_ref" in merged.columns:
        gap = (merged["age_cmp"] - merged["age_ref"]).astype(float)
    if "photo_date_ref" in merged.columns:
        days = (
            pd.to_datetime(merged["photo_date_cmp"], errors="coerce")
            - pd.to_datetime(merged["photo_date_ref"], errors="coerce")
        ).dt.days / 365.25
        gap = gap.where(gap.notna() & (gap != 0), days)
    pairs = pd.DataFrame(
        {
            "subject_id": merged["subject_id_ref"].astype(str),
            "photo_ref": merged["photo_id_ref"].astype(str),
            "photo_cmp": merged["photo_id_cmp"].astype(str),
            "age_gap": gap.fillna(0.0).astype(float),
        }
    )
    unpaired = len(ref) + len(cmp_) - 2 * len(merged) - 2 * extra
    if unpaired > 0:
        notes.append(f"{condition} vs {reference}: {unpaired} photo(s) without a partner left out")
    position = pd.Series(np.arange(len(frame)), index=frame["photo_id"].astype(str).to_numpy())
    position = position[~position.index.duplicated()]
    pairs = pairs.iloc[np.argsort(position.loc[pairs["photo_ref"]].to_numpy(), kind="stable")]
    return pairs.reset_index(drop=True), notes


# ---------------------------------------------------------------------------- the tables


def paired_tables(
    photos: pd.DataFrame, model: str, outputs: list[str], comparisons: list, config, age_cuts
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The ``paired`` and ``paired_pairs`` rows of one model.

    Parameters
    ----------
    photos : every good photo of the cohort (paired-study photos included) with the model's
        clean outputs as columns and the standard columns.
    comparisons : the cohort's :class:`audit.data.cohort.Comparison` list.
    config : the audit config's ``paired`` section.
    age_cuts : the accuracy section's age bands.
    """
    rows, pair_rows, notes = [], [], []
    # rows in an order fixed by their values: the bootstrap does not depend on the manifest's
    # row order or on the ids' names
    photos = canonical_rows(photos, ID_COLUMNS + ("pair",))
    by_photo = photos.drop_duplicates("photo_id").set_index("photo_id")
    for comparison in comparisons:
        pairs, said = pair_photos(photos, comparison.condition, comparison.reference)
        notes.extend(said)
        label = comparison.label
        if pairs.empty:
            notes.append(f"{label}: no subject has both photos")
            continue
        ref_rows = by_photo.loc[pairs["photo_ref"]].reset_index()
        cmp_rows = by_photo.loc[pairs["photo_cmp"]].reset_index()
        gap = pairs["age_gap"].to_numpy()
        adjust = comparison.adjust_age
        if adjust is None:  # auto: photos a month or more apart
            adjust = bool(np.nanmax(np.abs(gap)) >= config.age_gap_years) if len(gap) else False
        groups = _groups(ref_rows, config.groups, age_cuts)
        rng = np.random.default_rng([config.seed, _stable(label)])
        weights = bootstrap_weights(len(pairs), config.n_boot, rng)
        for output in outputs:
            if output not in photos.columns:
                continue
            ref = ref_rows[output].to_numpy(float)
            cmp_ = cmp_rows[output].to_numpy(float)
            ok = np.isfinite(ref) & np.isfinite(cmp_)
            slope = _age_slope(photos, comparison.reference, output) if adjust else 0.0
            expected = slope * gap if adjust else None
            reference_values = photos.loc[photos["condition"] == comparison.reference, output]
            unit, unit_name = 1.0, "years"
            if output != "faceage":
                unit = float(np.nanstd(reference_values.to_numpy(float), ddof=1))
                unit = unit if np.isfinite(unit) and unit > 0 else 1.0
                unit_name = "SD"
            tolerance = config.tolerance.get(output, config.tolerance.get("default", np.nan))
            edges = (
                quantile_cuts(reference_values.dropna().to_numpy(float), 4)
                if output == "risk"
                else None
            )
            for attribute, group_name, mask in groups:
                m = mask & ok
                stats_ = agreement(
                    ref[m],
                    cmp_[m],
                    unit=unit,
                    tolerance=tolerance,
                    expected=None if expected is None else expected[m],
                    quartile_edges=edges,
                    weights=weights[:, m] if len(weights) else None,
                    level=config.ci_level,
                    alpha=config.alpha,
                    min_pairs=config.min_pairs,
                )
                rows.append(
                    {
                        "model": model,
                        "output": output,
                        "comparison": label,
                        "condition": comparison.condition,
                        "reference": comparison.reference,
                        "attribute": attribute,
                        "group_name": group_name,
                        "unit": unit_name,
                        "unit_scale": unit,
                        "age_adjusted": bool(adjust),
                        "age_slope": float(slope),
                        "mean_age_gap": float(np.mean(gap[m])) if m.any() else np.nan,
                        **stats_,
                    }
                )
            for i in np.flatnonzero(ok):
                pair_rows.append(
                    {
                        "model": model,
                        "output": output,
                        "comparison": label,
                        "subject_id": pairs.at[i, "subject_id"],
                        "photo_ref": pairs.at[i, "photo_ref"],
                        "photo_cmp": pairs.at[i, "photo_cmp"],
                        "value_ref": ref[i],
                        "value_cmp": cmp_[i],
                        "age_gap": gap[i],
                        "expected_change": 0.0 if expected is None else float(expected[i]),
                        "difference": (cmp_[i] - ref[i] - (0 if expected is None else expected[i]))
                        / unit,
                    }
                )
    frame = pd.DataFrame(rows, columns=PAIRED_COLUMNS)
    frame["passed"] = frame["passed"].astype(object)
    return frame, pd.DataFrame(pair_rows, columns=PAIR_COLUMNS), notes


def _groups(ref_rows: pd.DataFrame, attributes: list[str], age_cuts) -> list:
    """``(attribute, group, mask)``: everyone, then each group of each attribute (from the
    reference photo; ``age_band`` from its age)."""
    n = len(ref_rows)
    groups = [("all", "all", np.ones(n, dtype=bool))]
    for attribute in attributes:
        if attribute == "age_band" and "age" in ref_rows.columns:
            col = age_band(ref_rows["age"], age_cuts)
        elif attribute in ref_rows.columns:
            col = ref_rows[attribute]
        else:
            continue
        for value in natural_order(col.dropna().unique()):
            groups.append((attribute, str(value), (col == value).to_numpy()))
    return groups


def _age_slope(photos: pd.DataFrame, reference: str, output: str) -> float:
    """Change of ``output`` per year of age expected between two photos: 1 for FaceAge; for
    another output its least-squares slope on age across the reference photos (0 when it
    cannot be estimated)."""
    if output == "faceage":
        return 1.0
    if "age" not in photos.columns:
        return 0.0
    ref = photos[photos["condition"] == reference][["age", output]].dropna()
    if len(ref) < 3 or ref["age"].std() == 0:
        return 0.0
    return float(np.polyfit(ref["age"].to_numpy(float), ref[output].to_numpy(float), 1)[0])


def _stable(text: str) -> int:
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
