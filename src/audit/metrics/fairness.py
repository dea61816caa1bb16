"""Fairness of each model output across subgroups: values with subject-bootstrap CIs,
differences to the overall value with simultaneous bands, differences to a reference group,
and flags.

Group values are fairlearn ``MetricFrame`` results (one plain metric callable per metric, as
fairlearn intends). Their confidence intervals come from our vectorised subject bootstrap
(:mod:`audit.stats.bootstrap`): fairlearn's own ``n_boot`` refits every metric on every resample
(about 70 ms each on a 2-core machine) and resamples photos, not subjects. The same resamples
give the overall value, every group's value and so every difference, so a difference's CI
accounts for the group being part of the whole.

Groups: every attribute of the config where present (``age_band``, ``age_decade``, ``sex``,
``race``, ``cancer_type``, ``site``, ``camera``) and the intersections (``sex x race``,
``race x age_band``). Metrics:

- FaceAge (one row per photo; subjects resampled): ``mae``, ``mean_error`` (FaceAge - age),
  ``pearson_r``, ``within_5y``, and the same error corrected for regression to the mean:
  age estimators over-predict the young and under-predict the old, so an older group looks
  biased unless the error's overall linear trend in age is removed first
  (``mean_error_age_adjusted``: the group's mean residual of error on age, the trend refitted
  in every resample; ``mae_age_adjusted``: the mean absolute residual, the trend fitted once).
  The trend is a restricted cubic spline of age (Harrell's four knots), not a line: real age
  estimators bend at the ends of the age range, and a line leaves that bend to be flagged as
  a bias of the oldest (or youngest) groups. The bend itself is reported once, as its own
  finding: ``error_age_curvature`` (group ``all``), the root mean square in years of the
  spline trend minus the straight-line trend, with its bootstrap CI.
- Risk (one row per subject): Harrell's C (``c_index``) and calibration in the large
  (``calibration_oe``: observed deaths over those expected from a Cox model of the score,
  chronological age per decade and sex on the whole cohort; 1 overall by construction, so a
  group's O/E says whether the score under- or over-states its risk beyond what age and sex
  explain. A model of the score alone would make any score that does not contain age look
  miscalibrated across age groups).

A group is ``too_small`` below ``min_group_size`` subjects (reported, never flagged or
hidden). Among the other groups of an attribute, the differences to overall get max-t
simultaneous bootstrap bands (the band's width multiplier is the ``ci_level`` quantile of the
largest standardised deviation over the groups), so that many groups do not breed false
flags; a group is ``flagged`` when its band lies entirely beyond the tolerance on the worse
side (both sides for signed metrics).

References
----------
Weerts H et al. Fairlearn: assessing and improving fairness of AI systems. JMLR 24, 2023.
Smith SM et al. Estimation of brain age delta from brain imaging. NeuroImage 200, 2019
(regression to the mean in age estimation and its correction).
Westfall PH, Young SS. Resampling-based multiple testing. Wiley, 1993 (max-t bands).
Harrell FE. Regression modeling strategies, 2nd ed. Springer, 2015 (2.4.5: restricted cubic
splines, knots at the 5th, 35th, 65th and 95th percentiles).
Steyerberg EW. Clinical prediction models, 2nd ed. Springer, 2019 (calibration in the large,
observed/expected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit.data.cohort import age_band
from audit.metrics.engine import FACEAGE_METRICS, FaceAgeEngine, metric_frame
from audit.pipeline.schema import columns
from audit.stats.bootstrap import (
    SubjectBootstrap,
    bootstrap_weights,
    percentile_ci,
    resample_dot,
)
from audit.stats.concordance import concordance_resamples, weighted_concordance
from audit.stats.cox import CoxNotConverged, design_matrix, fit_cox
from audit.stats.groups import label_codes

FAIRNESS_COLUMNS = columns("fairness")
RISK_METRICS = ["c_index", "calibration_oe"]
# which side of the overall value is worse for a group
WORSE = {
    "mae": "higher",
    "mae_age_adjusted": "higher",
    "mean_error": "both",
    "mean_error_age_adjusted": "both",
    "pearson_r": "lower",
    "within_5y": "lower",
    "c_index": "lower",
    "calibration_oe": "both",
}
SEP = " x "


# ---------------------------------------------------------------------------- groups


def age_decade(age: pd.Series) -> pd.Series:
    """Decades of age as ``20-29``, ``30-39``, ...; missing stays missing."""
    a = pd.to_numeric(age, errors="coerce")
    lo = np.floor(a / 10) * 10
    return lo.map(lambda v: None if pd.isna(v) else f"{int(v)}-{int(v) + 9}")


def add_fairness_groups(frame: pd.DataFrame, age_cuts: list[float]) -> pd.DataFrame:
    out = frame.copy()
    if "age" in out.columns:
        out["age_band"] = age_band(out["age"], age_cuts)
        out["age_decade"] = age_decade(out["age"])
    return out


def groupings(frame: pd.DataFrame, config) -> list[tuple[str, pd.Series]]:
    """``(attribute, labels)`` for each attribute present and each intersection whose parts
    are present; labels are strings, missing values None (left out of that grouping)."""
    out = []
    present = [
        a
        for a in config.attributes
        if a in frame.columns and frame[a].notna().any() and frame[a].nunique() > 1
    ]
    for attribute in present:
        out.append((attribute, frame[attribute].map(lambda v: None if pd.isna(v) else str(v))))
    for parts in config.intersections:
        if all(p in frame.columns and frame[p].notna().any() for p in parts):
            cols = [frame[p].map(lambda v: None if pd.isna(v) else str(v)) for p in parts]
            joined = pd.Series(
                [None if any(v is None for v in vals) else SEP.join(vals) for vals in zip(*cols)],
                index=frame.index,
                dtype=object,
            )
            out.append((SEP.join(parts), joined))
    return out


def attribute_groupings(frame: pd.DataFrame, attributes: list[str]) -> list[tuple[str, pd.Series]]:
    """:func:`groupings` of single attributes only (no intersections)."""
    from types import SimpleNamespace

    return groupings(frame, SimpleNamespace(attributes=list(attributes), intersections=[]))


# ---------------------------------------------------------------------------- intervals


def maxt_band(
    point: np.ndarray, boot: np.ndarray, level: float, usable: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Simultaneous bands ``point -/+ c * se`` over the ``usable`` groups: ``se`` is each
    group's bootstrap standard deviation and ``c`` the ``level`` quantile over resamples of
    the largest standardised deviation ``max_g |boot - point| / se`` (Westfall and Young)."""
    low = np.full(point.shape, np.nan)
    high = np.full(point.shape, np.nan)
    if boot.shape[0] < 2:
        return low, high, float("nan")
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group without values: no band
        se = np.nanstd(boot, axis=0, ddof=1)
    use = usable & np.isfinite(se) & (se > 0) & np.isfinite(point)
    if not use.any():
        return low, high, float("nan")
    with np.errstate(all="ignore"):
        t = np.nanmax(np.abs(boot[:, use] - point[use]) / se[use], axis=1)
    c = float(np.nanquantile(t, level))
    low[use], high[use] = point[use] - c * se[use], point[use] + c * se[use]
    return low, high, c


@dataclass
class DifferenceBands:
    """Each group's difference to the overall value with its band: the simultaneous max-t
    band over the groups with at least ``min_group_size`` subjects (``usable``), else the
    marginal percentile interval; ``methods`` says which, per group."""

    diff: np.ndarray
    low: np.ndarray
    high: np.ndarray
    usable: np.ndarray
    methods: list[str]

    @classmethod
    def of(cls, values, boot, overall_value, overall_boot, subjects, config) -> DifferenceBands:
        """``values`` (G,) and ``boot`` (B, G) per group; ``overall_boot`` (B,) or (B, 1)."""
        diff = np.asarray(values, dtype=float) - overall_value
        diff_boot = np.asarray(boot) - np.asarray(overall_boot).reshape(-1, 1)
        usable = np.asarray(subjects) >= config.min_group_size
        band_low, band_high, c = maxt_band(diff, diff_boot, config.ci_level, usable)
        marg_low, marg_high = percentile_ci(diff_boot, config.ci_level)
        simultaneous = usable & np.isfinite(band_low)
        k = int(usable.sum())
        return cls(
            diff=diff,
            low=np.where(simultaneous, band_low, marg_low),
            high=np.where(simultaneous, band_high, marg_high),
            usable=usable,
            methods=[
                f"simultaneous max-t over {k} groups (c={c:.2f})" if s else "marginal percentile"
                for s in simultaneous
            ],
        )


def is_flagged(metric: str, low: float, high: float, tolerance: float) -> bool:
    """Whether a difference band lies entirely beyond ``tolerance`` on the worse side."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return False
    side = WORSE[metric]
    if side == "higher":
        return low > tolerance
    if side == "lower":
        return high < -tolerance
    return low > tolerance or high < -tolerance


# ---------------------------------------------------------------------------- FaceAge


def faceage_fairness(
    frame: pd.DataFrame, model: str, config, age_cuts: list[float]
) -> pd.DataFrame:
    """FaceAge fairness rows (one per metric and group, overall included).

    Parameters
    ----------
    frame : one row per photo with ``subject_id``, ``age``, ``faceage`` and the grouping
        columns.
    model : the model's name.
    config : the audit config's ``fairness`` section.
    age_cuts : the age-band cut points.
    """
    engine = FaceAgeEngine.of(
        add_fairness_groups(frame, age_cuts), config.n_boot, config.seed, config.fairlearn_max_rows
    )
    df = engine.frame
    if len(df) < 3:
        return pd.DataFrame(columns=FAIRNESS_COLUMNS)
    overall = engine.values()
    rows = [
        _overall_row(
            model,
            "faceage",
            m,
            float(overall.value[m][0]),
            len(df),
            engine.n_subjects,
            overall.boot[m][:, 0],
            config,
        )
        for m in FACEAGE_METRICS
    ]
    bend = engine.curvature()
    if bend is not None:  # the error's bend in age: a finding of its own, not a group's
        point, boot = bend
        rows.append(
            {
                **_overall_row(
                    model,
                    "faceage",
                    "error_age_curvature",
                    point,
                    len(df),
                    engine.n_subjects,
                    boot,
                    config,
                ),
                "tolerance": None,
            }
        )
    for attribute, labels in groupings(df, config):
        groups = engine.values(labels)
        for m in FACEAGE_METRICS:
            rows.extend(
                _group_rows(
                    model,
                    "faceage",
                    m,
                    attribute,
                    groups.names,
                    groups.n,
                    groups.subjects,
                    groups.value[m],
                    groups.boot[m],
                    overall.value[m][0],
                    overall.boot[m],
                    config,
                )
            )
    return pd.DataFrame(rows, columns=FAIRNESS_COLUMNS)


# ---------------------------------------------------------------------------- risk


def expected_deaths(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, adjust: pd.DataFrame | None = None
) -> np.ndarray:
    """Each subject's expected deaths by its own follow-up time under a Cox model of the
    score and the ``adjust`` terms (chronological age per decade and sex in
    :func:`risk_fairness`) on the whole cohort: Breslow cumulative hazard times the partial
    hazard. Their sum equals the observed deaths (the martingale residuals sum to zero at the
    estimate). Raises :class:`audit.stats.cox.CoxNotConverged` when the model does not converge."""
    design = pd.DataFrame({"risk": np.asarray(risk, float)})
    if adjust is not None:
        design = pd.concat([design, adjust.reset_index(drop=True)], axis=1)
    fit = fit_cox(pd.DataFrame({"time": time, "event": event}), design).require()
    cph = fit.fitter
    h0 = cph.baseline_cumulative_hazard_.iloc[:, 0]
    steps = np.searchsorted(h0.index.to_numpy(), time, side="right") - 1
    base = np.where(steps >= 0, h0.to_numpy()[np.clip(steps, 0, None)], 0.0)
    partial = cph.predict_partial_hazard(design[cph.params_.index]).to_numpy()
    return base * partial


def expected_deaths_terms(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The terms beside the score in the expected-deaths model, and their description:
    chronological age per decade and sex, where the cohort has them (complete cases), so that
    a group's O/E asks whether the score misjudges its risk beyond what age and sex explain."""
    numeric = ["age_decade"] if "age" in df.columns and df["age"].notna().any() else []
    frame = (
        df.assign(age_decade=pd.to_numeric(df["age"], errors="coerce") / 10.0) if numeric else df
    )
    categorical = {"sex": "male"} if "sex" in df.columns and df["sex"].nunique() > 1 else {}
    terms = design_matrix(frame, numeric, categorical)
    said = ["chronological age (per decade, linear)"] * bool(numeric) + ["sex"] * bool(categorical)
    return terms, "the score" + "".join(f" and {s}" for s in said)


def risk_fairness(
    subjects: pd.DataFrame,
    model: str,
    config,
    age_cuts: list[float],
    min_events: int = 10,
    notes: list[str] | None = None,
    linear_from: int | None = None,
) -> pd.DataFrame:
    """Risk fairness rows: Harrell's C and calibration in the large (observed / expected
    deaths) per group, on one row per subject with ``time``, ``event`` and ``risk``.
    ``linear_from``: C resamples from influence values in sets of this many subjects or more
    (:func:`audit.stats.concordance.concordance_resamples`)."""
    said = notes if notes is not None else []
    df, adjust, described = _risk_subjects(add_fairness_groups(subjects, age_cuts), model, said)
    if len(df) < 3 or df["event"].sum() < min_events:
        return pd.DataFrame(columns=FAIRNESS_COLUMNS)
    risk = _RiskValues(
        df, _expected_or_nan(df, adjust, described, model, said), config, linear_from
    )
    over, _ = risk.values()
    over_boot = risk.boot(np.arange(len(df)))
    rows = [
        _overall_row(model, "risk", m, float(over[m]), len(df), len(df), over_boot[m], config)
        for m in RISK_METRICS
    ]
    for attribute, labels in groupings(df, config):
        names, codes = label_codes(labels)
        _, by_group = risk.values(codes)
        per_group = [risk.boot(np.flatnonzero(codes == g)) for g in range(len(names))]
        keep = codes >= 0
        sizes = np.bincount(codes[keep], minlength=len(names))
        events = np.bincount(codes[keep], weights=risk.event[keep], minlength=len(names))
        # too few deaths in a group: its C and O/E are reported as too small
        enough = np.where(events >= min_events, sizes, 0)
        for m in RISK_METRICS:
            gb = (
                np.stack([pg[m] for pg in per_group], axis=1)
                if len(names)
                else np.zeros((risk.weights.shape[0], 0))
            )
            vals = by_group[m].reindex(range(len(names))).to_numpy(float)
            rows.extend(
                _group_rows(
                    model,
                    "risk",
                    m,
                    attribute,
                    names,
                    sizes,
                    enough,
                    vals,
                    gb,
                    float(over[m]),
                    over_boot[m],
                    config,
                    n_subjects_shown=sizes,
                )
            )
    out = pd.DataFrame(rows, columns=FAIRNESS_COLUMNS)
    return (
        out
        if np.isfinite(risk.expected).all()
        else out[out["metric"] != "calibration_oe"].reset_index(drop=True)
    )


def _risk_subjects(
    df: pd.DataFrame, model: str, notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The subjects with a finite score, an event and a time, the expected-deaths model's
    terms for them (complete cases only: a note says how many were left) and their
    description."""
    df = df[
        np.isfinite(pd.to_numeric(df["risk"], errors="coerce"))
        & df["event"].notna()
        & df["time"].notna()
    ].reset_index(drop=True)
    adjust, described = expected_deaths_terms(df)
    complete = adjust.notna().all(axis=1).to_numpy()
    if not complete.all():
        notes.append(
            f"{model}: risk fairness on the {int(complete.sum())} of {len(df)} subjects "
            "with age and sex (the expected-deaths model's terms)"
        )
    return (
        df[complete].reset_index(drop=True),
        adjust[complete].reset_index(drop=True),
        described,
    )


def _expected_or_nan(
    df: pd.DataFrame, adjust: pd.DataFrame, described: str, model: str, notes: list[str]
) -> np.ndarray:
    """Each subject's expected deaths (:func:`expected_deaths`), or NaN for all when the
    model does not converge; a note says which."""
    try:
        expected = expected_deaths(
            df["time"].to_numpy(float),
            df["event"].to_numpy(int),
            df["risk"].to_numpy(float),
            adjust,
        )
    except CoxNotConverged as exc:
        notes.append(
            f"{model}: the expected-deaths model of {described} did not converge "
            f"({exc.reason}); observed/expected deaths are not computed"
        )
        return np.full(len(df), np.nan)
    notes.append(
        f"{model}: expected deaths per group (calibration_oe) from a Cox model of {described}"
    )
    return expected


def _c_index(y_true, y_pred, time) -> float:
    """Harrell's C of ``y_pred`` (higher = earlier death): a fairlearn metric callable."""
    return float(weighted_concordance(time, y_true, y_pred, np.ones((1, len(time))))[0])


def _calibration_oe(y_true, y_pred) -> float:
    """Observed over expected deaths (``y_pred``: expected deaths): a fairlearn metric."""
    return float(np.sum(y_true) / np.sum(y_pred)) if np.sum(y_pred) > 0 else float("nan")


class _RiskValues:
    """Harrell's C and O/E of one score: fairlearn values overall or by group, and their
    subject-bootstrap resamples (one draw of weights shared by every group)."""

    def __init__(self, df: pd.DataFrame, expected: np.ndarray, config, linear_from=None):
        self.linear_from = linear_from
        self.by_fairlearn = len(df) <= config.fairlearn_max_rows
        self.time = df["time"].to_numpy(float)
        self.event = df["event"].to_numpy(int)
        self.risk = df["risk"].to_numpy(float)
        self.expected = expected
        self.weights = bootstrap_weights(
            len(df), config.n_boot, np.random.default_rng(config.seed), compact=True
        )

    def values(self, codes: np.ndarray | None = None) -> tuple[pd.Series, pd.DataFrame | None]:
        """Overall and by-group values: one MetricFrame per prediction (the score for C,
        the expected deaths for O/E), or above ``fairlearn_max_rows`` subjects the same two
        metric callables on each group's rows (fairlearn stacks each column element by
        element)."""
        if not self.by_fairlearn:
            return self._direct(codes)
        c_all, c_by = metric_frame(
            {"c_index": _c_index}, self.event, self.risk, codes, {"c_index": {"time": self.time}}
        )
        e_all, e_by = metric_frame(
            {"calibration_oe": _calibration_oe}, self.event, self.expected, codes
        )
        by = None if codes is None else pd.concat([c_by, e_by], axis=1)
        return pd.concat([c_all, e_all]), by

    def _direct(self, codes: np.ndarray | None) -> tuple[pd.Series, pd.DataFrame | None]:
        def both(rows) -> dict:
            return {
                "c_index": _c_index(self.event[rows], self.risk[rows], self.time[rows]),
                "calibration_oe": _calibration_oe(self.event[rows], self.expected[rows]),
            }

        overall = pd.Series(both(slice(None)))
        if codes is None:
            return overall, None
        present = np.unique(codes[codes >= 0])
        by = pd.DataFrame([both(codes == g) for g in present], index=present)
        return overall, by

    def boot(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """(B,) resampled C and O/E of the subjects ``idx``."""
        ww = self.weights[:, idx]
        with np.errstate(all="ignore"):
            oe = resample_dot(ww, self.event[idx]) / resample_dot(ww, self.expected[idx])
        c = concordance_resamples(
            self.time[idx], self.event[idx], self.risk[idx], ww, self.linear_from
        )
        return {"c_index": c, "calibration_oe": oe}


# ---------------------------------------------------------------------------- rows


def _overall_row(model, output, metric, value, n, n_subjects, boot, config) -> dict:
    low, high = percentile_ci(np.asarray(boot).reshape(-1, 1), config.ci_level)
    return {
        "model": model,
        "output": output,
        "metric": metric,
        "attribute": "all",
        "group_name": "all",
        "n": int(n),
        "n_subjects": int(n_subjects),
        "value": value,
        "ci_low": float(low[0]),
        "ci_high": float(high[0]),
        "diff_to_overall": 0.0,
        "diff_ci_low": None,
        "diff_ci_high": None,
        "diff_ci_method": None,
        "reference_group": None,
        "diff_to_reference": None,
        "ref_ci_low": None,
        "ref_ci_high": None,
        "tolerance": config.tolerances.get(metric),
        "status": "ok",
    }


def _group_rows(
    model,
    output,
    metric,
    attribute,
    names,
    n,
    subjects,
    values,
    boot,
    overall_value,
    overall_boot,
    config,
    n_subjects_shown=None,
) -> list[dict]:
    """Rows of one metric over the groups of one attribute.

    ``boot``: (B, G) group values per resample; ``overall_boot``: (B,) or (B, 1)."""
    boot = np.asarray(boot)
    low, high = percentile_ci(boot, config.ci_level)
    d = DifferenceBands.of(values, boot, overall_value, overall_boot, subjects, config)
    # A correlation within a band of age is lowered by the band's narrow range, not by the
    # model: such rows are reported but never flagged.
    flaggable = not (metric == "pearson_r" and "age" in attribute)
    to_reference = _to_reference(names, values, boot, subjects, d.usable, config.ci_level)
    tol = config.tolerances.get(metric)
    rows = []
    shown = n_subjects_shown if n_subjects_shown is not None else subjects
    for g, name in enumerate(names):
        lo, hi = d.low[g], d.high[g]
        flagged = flaggable and tol is not None and is_flagged(metric, lo, hi, tol)
        status = "too_small" if not d.usable[g] else ("flagged" if flagged else "ok")
        rows.append(
            {
                "model": model,
                "output": output,
                "metric": metric,
                "attribute": attribute,
                "group_name": name,
                "n": int(n[g]),
                "n_subjects": int(shown[g]),
                "value": float(values[g]),
                "ci_low": float(low[g]),
                "ci_high": float(high[g]),
                "diff_to_overall": float(d.diff[g]),
                "diff_ci_low": float(lo),
                "diff_ci_high": float(hi),
                "diff_ci_method": d.methods[g],
                **to_reference[g],
                "tolerance": tol,
                "status": status,
            }
        )
    return rows


def _to_reference(names, values, boot, subjects, usable, level: float) -> list[dict]:
    """Each group's difference to the reference group (the largest usable one) with its
    percentile CI (none for the reference itself); all None without a usable group."""
    if not usable.any():
        return [
            dict.fromkeys(("reference_group", "diff_to_reference", "ref_ci_low", "ref_ci_high"))
            for _ in names
        ]
    ref = int(np.argmax(np.where(usable, subjects, -1)))
    low, high = percentile_ci(boot - boot[:, [ref]], level)
    return [
        {
            "reference_group": names[ref],
            "diff_to_reference": float(values[g] - values[ref]),
            "ref_ci_low": None if g == ref else float(low[g]),
            "ref_ci_high": None if g == ref else float(high[g]),
        }
        for g in range(len(names))
    ]


# ---------------------------------------------------------------------------- two models

COMPARISON_COLUMNS = columns("comparisons")


def paired_comparisons(
    frames: dict[str, pd.DataFrame],
    output: str,
    config,
    age_cuts: list[float],
    min_events: int = 10,
    linear_from: int | None = None,
) -> pd.DataFrame:
    """Paired differences between every two models with the same ``output``, on the photos
    (FaceAge: MAE) or subjects (risk: Harrell's C) both predicted, overall and per group; the
    CI comes from resampling subjects once for both models, so it reflects the pairing.

    ``frames``: model name -> frame with ``photo_id``, ``subject_id``, the output and
    ``age`` (FaceAge) or ``time``/``event`` (risk), plus the grouping columns.
    ``linear_from``: C resamples from influence values in sets of this many subjects or more
    (:func:`audit.stats.concordance.concordance_resamples`)."""
    from itertools import combinations

    rows = []
    for a, b in combinations(sorted(frames), 2):
        fa, fb = frames[a], frames[b]
        both = fa.merge(fb[["photo_id", output]], on="photo_id", suffixes=("_a", "_b"))
        both = add_fairness_groups(both, age_cuts)
        pair = (a, b)
        if output == "faceage":
            rows.extend(_faceage_pairs(both, pair, config))
        else:
            rows.extend(_risk_pairs(both, pair, config, min_events, linear_from))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _all_and_groupings(frame: pd.DataFrame, config) -> list[tuple[str, pd.Series]]:
    return [("all", pd.Series(["all"] * len(frame)))] + groupings(frame, config)


def _faceage_pairs(both: pd.DataFrame, pair: tuple[str, str], config) -> list[dict]:
    """MAE of model a minus model b on the photos both predicted, overall and per group."""
    va, vb = both["faceage_a"].to_numpy(float), both["faceage_b"].to_numpy(float)
    x = both["age"].to_numpy(float)
    # the paired difference is totalled as its own column: two identical models give
    # exactly 0 in every resample (a difference of two totals is 0 only up to the
    # BLAS kernel's summation order, -2.4e-15 on some machines)
    ea, eb = np.abs(va - x), np.abs(vb - x)
    cols = np.column_stack([np.ones(len(both)), ea, eb, ea - eb])
    boot = SubjectBootstrap.draw(
        both["subject_id"].to_numpy(), config.n_boot, np.random.default_rng(config.seed)
    )
    rows = []
    for attribute, labels in _all_and_groupings(both, config):
        names, codes = label_codes(labels)
        point, samples = boot.totals(cols, codes, len(names))
        subjects = boot.subjects_per_group(codes, len(names))
        with np.errstate(all="ignore"):
            pa, pb = point[:, 1] / point[:, 0], point[:, 2] / point[:, 0]
            d = samples[..., 3] / samples[..., 0]
        low, high = percentile_ci(d, config.ci_level)
        for g, name in enumerate(names):
            rows.append(
                _comparison_row(
                    "faceage",
                    "mae",
                    *pair,
                    attribute,
                    name,
                    int(point[g, 0]),
                    pa[g],
                    pb[g],
                    low[g],
                    high[g],
                    subjects[g] >= config.min_group_size,
                )
            )
    return rows


def _risk_pairs(
    both: pd.DataFrame, pair: tuple[str, str], config, min_events: int, linear_from
) -> list[dict]:
    """Harrell's C of model a minus model b on the subjects both scored, overall and per
    group, from one draw of subject weights shared by both models."""
    both = both[both["time"].notna() & both["event"].notna()].reset_index(drop=True)
    va, vb = both["risk_a"].to_numpy(float), both["risk_b"].to_numpy(float)
    t, ev = both["time"].to_numpy(float), both["event"].to_numpy(int)
    w = bootstrap_weights(
        len(both), config.n_boot, np.random.default_rng(config.seed), compact=True
    )
    rows = []
    for attribute, labels in _all_and_groupings(both, config):
        names, codes = label_codes(labels)
        for g, name in enumerate(names):
            idx = np.flatnonzero(codes == g)
            one = np.ones((1, len(idx)))
            ca = weighted_concordance(t[idx], ev[idx], va[idx], one)[0]
            cb = weighted_concordance(t[idx], ev[idx], vb[idx], one)[0]
            d = concordance_resamples(
                t[idx], ev[idx], va[idx], w[:, idx], linear_from
            ) - concordance_resamples(t[idx], ev[idx], vb[idx], w[:, idx], linear_from)
            low, high = percentile_ci(d.reshape(-1, 1), config.ci_level)
            ok = len(idx) >= config.min_group_size and ev[idx].sum() >= min_events
            rows.append(
                _comparison_row(
                    "risk", "c_index", *pair, attribute, name, len(idx), ca, cb, low[0], high[0], ok
                )
            )
    return rows


def _comparison_row(output, metric, a, b, attribute, name, n, va, vb, low, high, ok) -> dict:
    return {
        "output": output,
        "metric": metric,
        "model_a": a,
        "model_b": b,
        "attribute": attribute,
        "group_name": name,
        "n": int(n),
        "value_a": float(va),
        "value_b": float(vb),
        "diff": float(va - vb),
        "ci_low": float(low),
        "ci_high": float(high),
        "status": "ok" if ok else "too_small",
    }
