"""First survival models (lifelines): FaceAge per decade, risk quartiles, Kaplan-Meier.

On one photo per subject (the first by date), time in years:

* ``faceage_per_decade__unadjusted``, ``__age`` and ``__age_sex``: Cox models of FaceAge per
  10 years, alone and adjusted for chronological age and sex (the FaceAge paper's protocol);
  ``__clinical`` adds the cohort's declared covariates. ``age_per_decade__unadjusted`` is the
  yardstick: how much chronological age alone explains.
* ``risk_per_sd__*`` and ``risk_quartiles__*``: the risk score per standard deviation, and
  quartiles Q2-Q4 against Q1, unadjusted and adjusted for age and sex.
* Kaplan-Meier by risk quartile and by FaceAge band with numbers at risk; log-rank across
  quartiles and Q4 against Q1.

Each Cox model reports n, events, Harrell's C of its linear predictor (bootstrap CI over
subjects), log-likelihood and the smallest Schoenfeld-residual p-value of its terms.

References
----------
Cox DR. Regression models and life-tables. JRSS B 34, 1972.
Grambsch PM, Therneau TM. Proportional hazards tests and diagnostics based on weighted
residuals. Biometrika 81, 1994.
Bontempi D et al. FaceAge. Lancet Digit Health 7(6), 2025 (HR per decade, adjusted).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.data.cohort import age_band, natural_order
from audit.decisions.curves import COLUMNS as DECISION_COLUMNS
from audit.decisions.subgroups import (
    COLUMNS as DECISION_SUBGROUP_COLUMNS,
)
from audit.decisions.subgroups import (
    score_decision_analysis,
)
from audit.metrics.accuracy import bootstrap_c, harrell_c
from audit.metrics.fairness import add_fairness_groups, attribute_groupings
from audit.pipeline.config import SurvivalConfig
from audit.pipeline.schema import columns
from audit.stats.cox import (  # noqa: F401 (design_matrix: re-exported)
    CoxNotConverged,
    design_matrix,
    fit_cox,
    schoenfeld_test,
)
from audit.stats.groups import canonical_rows, empty_groups_note, quantile_groups
from audit.survival.metrics import score_metrics

MODEL_COLUMNS = columns("survival_models")
TERM_COLUMNS = columns("survival_terms")
TEST_COLUMNS = ["model", "test", "groups", "statistic", "df", "p_value"]
METRIC_COLUMNS = columns("survival_metrics")
CURVE_COLUMNS = columns("survival_curves")


@dataclass
class SurvivalResult:
    """The survival stage's tables, plus notes for the report (why something was not run)."""

    models: pd.DataFrame
    terms: pd.DataFrame
    tests: pd.DataFrame
    metrics: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    decisions: pd.DataFrame = field(  # decision_curves rows
        default_factory=lambda: pd.DataFrame(columns=DECISION_COLUMNS)
    )
    decision_subgroups: pd.DataFrame = field(  # decision_subgroups rows
        default_factory=lambda: pd.DataFrame(columns=DECISION_SUBGROUP_COLUMNS)
    )

    @classmethod
    def empty(cls, note: str) -> "SurvivalResult":
        return cls(
            pd.DataFrame(columns=MODEL_COLUMNS),
            pd.DataFrame(columns=TERM_COLUMNS),
            pd.DataFrame(columns=TEST_COLUMNS),
            pd.DataFrame(columns=METRIC_COLUMNS),
            pd.DataFrame(columns=CURVE_COLUMNS),
            [note],
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "survival_models": self.models,
            "survival_terms": self.terms,
            "survival_tests": self.tests,
            "survival_metrics": self.metrics,
            "survival_curves": self.curves,
            "decision_curves": self.decisions,
            "decision_subgroups": self.decision_subgroups,
        }


def ph_test(cph, data: pd.DataFrame, notes: list[str] | None = None) -> pd.Series:
    """Schoenfeld-residual test p-value per term (rank time transform;
    :func:`audit.stats.cox.schoenfeld_test`, lifelines' statistic from one sorted pass),
    empty when the test cannot run (it needs deaths at several times); why is appended to
    ``notes``."""
    terms = cph.params_.index
    try:
        _, p = schoenfeld_test(
            data[terms].to_numpy(float),
            data["time"].to_numpy(float),
            data["event"].to_numpy(int),
            cph.params_.to_numpy(float),
            cph.variance_matrix_.to_numpy(float),
            data["_stratum"].to_numpy() if "_stratum" in data.columns else None,
        )
    except ValueError as exc:  # the data's doing (too few deaths): said, not hidden
        if notes is not None:
            notes.append(f"Schoenfeld test not run ({exc})")
        return pd.Series(dtype=float)
    if not np.all(np.isfinite(p)):
        if notes is not None:
            notes.append("Schoenfeld test not run (a term's statistic is not finite)")
        return pd.Series(dtype=float)
    return pd.Series(p, index=[str(t) for t in terms], dtype=float)


def _cox_rows(
    model: str,
    model_id: str,
    description: str,
    subjects: pd.DataFrame,
    terms: pd.DataFrame,
    config: SurvivalConfig,
    strata=None,
    note: str | None = None,
) -> tuple[dict, list[dict], pd.Series]:
    """One Cox model's ``survival_models`` row, ``survival_terms`` rows and Schoenfeld
    p-values. Its C's bootstrap draws the same resamples for every model of the same
    subjects (a fresh generator from ``config.seed``): the C of the score alone gets the very
    interval the accuracy table gives the score, and models' intervals compare."""
    fit = fit_cox(subjects, terms, config.penalizer, strata)
    if not fit.ok:  # a result, never hidden: the row says why, the stage goes on
        row = {
            "model": model,
            "model_id": model_id,
            "description": description,
            "n": int(len(fit.data)),
            "events": int(fit.data["event"].sum()),
            "status": "not_converged",
            "note": f"Cox fit not converged: {fit.reason}",
        }
        return row, [], pd.Series(dtype=float)
    cph, data = fit.fitter, fit.data
    said: list[str] = []
    lp = cph.predict_log_partial_hazard(data).to_numpy()
    c, low, high = bootstrap_c(
        data["time"],
        data["event"],
        lp,
        config.n_boot,
        np.random.default_rng(config.seed),
        linear_from=config.linear_threshold(),
    )
    ph = ph_test(cph, data, said)
    note = "; ".join([n for n in [note, *fit.notes, *said] if n]) or None
    row = {
        "model": model,
        "model_id": model_id,
        "description": description,
        "n": int(len(data)),
        "events": int(data["event"].sum()),
        "concordance": c,
        "concordance_low": low,
        "concordance_high": high,
        "log_likelihood": float(cph.log_likelihood_),
        "ph_test_min_p": float(ph.min()) if len(ph) else float("nan"),
        "status": "ok",
        "note": note,
    }
    return row, term_rows(model, model_id, cph.summary), ph


def term_rows(model: str, model_id: str, summary: pd.DataFrame) -> list[dict]:
    """``survival_terms`` rows of one fitted Cox model, from lifelines' ``summary``."""
    s = summary
    return [
        {
            "model": model,
            "model_id": model_id,
            "term": term,
            "coef": float(s.at[term, "coef"]),
            "se": float(s.at[term, "se(coef)"]),
            "hr": float(s.at[term, "exp(coef)"]),
            "hr_low": float(s.at[term, "exp(coef) lower 95%"]),
            "hr_high": float(s.at[term, "exp(coef) upper 95%"]),
            "p_value": float(s.at[term, "p"]),
        }
        for term in s.index
    ]


def km_curves(model: str, curve: str, subjects: pd.DataFrame, groups: pd.Series) -> list[dict]:
    """Kaplan-Meier steps per group with numbers at risk (lifelines)."""
    from lifelines import KaplanMeierFitter

    rows = []
    for name in natural_order(groups.dropna().unique()):
        mask = (groups == name).to_numpy()
        if mask.sum() == 0:
            continue
        kmf = KaplanMeierFitter()
        kmf.fit(subjects.loc[mask, "time"], subjects.loc[mask, "event"])
        sf = kmf.survival_function_.iloc[:, 0]
        at_risk = kmf.event_table["at_risk"].reindex(sf.index).fillna(0)
        for t, s, r in zip(sf.index, sf.to_numpy(), at_risk.to_numpy()):
            rows.append(
                {
                    "model": model,
                    "curve": curve,
                    "group_name": str(name),
                    "time": float(t),
                    "survival": float(s),
                    "at_risk": int(r),
                }
            )
    return rows


def km_medians(
    model: str, name: str, subjects: pd.DataFrame, groups: pd.Series | None = None
) -> list[dict]:
    """Kaplan-Meier median survival (years) with its 95% CI (lifelines: where the pointwise
    CI of the curve crosses 0.5), overall (``groups`` None; model_id ``name``) or per group
    (model_id ``name:group``). A median the curve never reaches is NULL (not reached)."""
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    parts = (
        [(name, np.ones(len(subjects), dtype=bool))]
        if groups is None
        else [
            (f"{name}:{g}", (groups == g).to_numpy())
            for g in natural_order(groups.dropna().unique())
        ]
    )
    rows = []
    for model_id, mask in parts:
        if not mask.any():
            continue
        kmf = KaplanMeierFitter().fit(subjects.loc[mask, "time"], subjects.loc[mask, "event"])
        ci = median_survival_times(kmf.confidence_interval_).iloc[0].to_numpy(float)

        def finite(v):
            return float(v) if np.isfinite(v) else None

        rows.append(
            {
                "model": model,
                "model_id": model_id,
                "metric": "median_survival",
                "horizon": None,
                "value": finite(kmf.median_survival_time_),
                "ci_low": finite(ci[0]),
                "ci_high": finite(ci[1]),
            }
        )
    return rows


def _missing_note(df: pd.DataFrame, adjustments: dict, notes: list[str]) -> None:
    """Complete-case analysis: say how many subjects each covariate's missing values drop,
    and the reference level of each categorical term."""
    used_num = sorted({c for num, _ in adjustments.values() for c in num})
    used_cat = {}
    for _, cat in adjustments.values():
        used_cat.update(cat)
    missing = {
        c: int(df[c].isna().sum())
        for c in used_num + list(used_cat)
        if c in df.columns and df[c].isna().any()
    }
    if missing:
        notes.append(
            "complete cases per model; subjects missing "
            + ", ".join(f"{c}: {n}" for c, n in missing.items())
        )
    refs = []
    for name, ref in used_cat.items():
        if name in df.columns and df[name].notna().any():
            levels = df[name].dropna().astype(str).value_counts()
            refs.append(f"{name} = {ref if ref in levels.index else levels.index[0]}")
    if refs:
        notes.append("reference levels: " + ", ".join(refs))


def logrank_tests(model: str, subjects: pd.DataFrame, quartile: pd.Series) -> list[dict]:
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    rows = []
    ok = quartile.notna().to_numpy()
    present = natural_order(quartile[ok].unique())
    if len(present) < 2:
        return rows
    res = multivariate_logrank_test(
        subjects.loc[ok, "time"], quartile[ok], subjects.loc[ok, "event"]
    )
    rows.append(
        {
            "model": model,
            "test": "logrank",
            "groups": ",".join(present),
            "statistic": float(res.test_statistic),
            "df": float(res.degrees_of_freedom),
            "p_value": float(res.p_value),
        }
    )
    trend = _logrank_trend(
        subjects.loc[ok, "time"].to_numpy(float),
        subjects.loc[ok, "event"].to_numpy(int),
        quartile[ok].map({"Q1": 1, "Q2": 2, "Q3": 3, "Q4": 4}).to_numpy(float),
    )
    rows.append(
        {
            "model": model,
            "test": "logrank trend",
            "groups": "<".join(present),
            "statistic": trend[0],
            "df": 1.0,
            "p_value": trend[1],
        }
    )
    q1, q4 = (quartile == "Q1").to_numpy(), (quartile == "Q4").to_numpy()
    if q1.any() and q4.any():
        res = logrank_test(
            subjects.loc[q4, "time"],
            subjects.loc[q1, "time"],
            subjects.loc[q4, "event"],
            subjects.loc[q1, "event"],
        )
        rows.append(
            {
                "model": model,
                "test": "logrank",
                "groups": "Q4 vs Q1",
                "statistic": float(res.test_statistic),
                "df": 1.0,
                "p_value": float(res.p_value),
            }
        )
    return rows


def _logrank_trend(time: np.ndarray, event: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """Log-rank test for trend across ordered groups with scores 1..k (Collett 2015, 2.7):
    U = sum over death times of sum_k w_k (d_k - e_k), V its hypergeometric variance;
    U^2 / V against chi-square with 1 df. Written by hand: lifelines has no trend test."""
    from scipy.stats import chi2

    order = np.argsort(time, kind="stable")
    time, event, score = time[order], event[order], score[order]
    u = v = 0.0
    at_risk = np.ones(len(time), dtype=bool)
    for t in np.unique(time[event == 1]):
        r = at_risk & (time >= t)
        d = (time == t) & (event == 1)
        n, dt = r.sum(), d.sum()
        s1, s2 = score[r].sum(), (score[r] ** 2).sum()
        u += score[d].sum() - dt * s1 / n
        if n > 1:
            v += dt * (n - dt) / (n - 1) * (s2 / n - (s1 / n) ** 2)
    stat = u * u / v if v > 0 else float("nan")
    return float(stat), float(chi2.sf(stat, 1)) if v > 0 else float("nan")


def risk_quartiles(risk: pd.Series) -> pd.Series:
    """Quartiles of the risk score in this cohort, Q1 (lowest) to Q4, by value
    (:func:`audit.stats.groups.quantile_groups`: tied scores share a group; a score with few
    distinct values leaves some quartiles empty)."""
    return quantile_groups(risk, 4, "Q")


def _stack(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The non-empty frames stacked, or an empty frame with ``columns``."""
    full = [f for f in frames if len(f)]
    return pd.concat(full, ignore_index=True) if full else pd.DataFrame(columns=columns)


def _decision_groups(
    frame: pd.DataFrame, attributes: list[str] | None, age_cuts: list[float] | None
) -> list[tuple[str, pd.Series]] | None:
    """``(attribute, labels)`` of the fairness groupings present in ``frame``."""
    if not attributes:
        return None
    return attribute_groupings(
        add_fairness_groups(frame, age_cuts or [65.0, 75.0, 85.0]), attributes
    )


ADJUSTMENT_LABELS = {
    "unadjusted": "unadjusted",
    "age": "adjusted for chronological age",
    "age_sex": "adjusted for age and sex",
    "age_sex_cancer": "adjusted for age, sex and cancer type",
    "clinical": "adjusted for age, sex, cancer type and the cohort's clinical covariates",
}


def _adjustments(df: pd.DataFrame, covariates: list) -> dict[str, tuple[list[str], dict]]:
    """The adjustment sets the cohort supports: ``{name: (numeric terms, categorical terms
    with their reference level)}``, from unadjusted to the cohort's clinical covariates."""
    has_sex = "sex" in df.columns and df["sex"].nunique() > 1
    has_cancer = "cancer_type" in df.columns and df["cancer_type"].nunique() > 1
    out = {"unadjusted": ([], {}), "age": (["age_decade"], {})}
    if has_sex:
        out["age_sex"] = (["age_decade"], {"sex": "male"})
    if has_cancer:
        out["age_sex_cancer"] = (
            ["age_decade"],
            {**({"sex": "male"} if has_sex else {}), "cancer_type": None},
        )
    if covariates:
        num = ["age_decade"] + [c.name for c in covariates if c.type == "numeric"]
        cat = {"sex": "male"} if has_sex else {}
        if has_cancer:
            cat["cancer_type"] = None  # reference: the most frequent type
        cat.update({c.name: c.reference for c in covariates if c.type == "categorical"})
        out["clinical"] = (num, cat)
    return out


@dataclass
class _Fits:
    """What one model's survival analysis collects (rows and notes), and the three things
    it does over and over: fit a Cox model, score an output, note a Harrell's C."""

    model: str
    config: SurvivalConfig
    age_cuts: list[float] | None
    decision_groups: list[str] | None
    min_group_size: int
    models: list = field(default_factory=list)
    terms: list = field(default_factory=list)
    tests: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    curves: list = field(default_factory=list)
    decisions: list = field(default_factory=list)
    subgroup_decisions: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def cox(self, model_id, description, frame, design, categorical=None) -> None:
        """One Cox model; a categorical term that breaks proportional hazards gets a
        stratified refit beside it, any other such term a note."""
        row, trs, ph = _cox_rows(self.model, model_id, description, frame, design, self.config)
        self.models.append(row)
        self.terms.extend(trs)
        if row["status"] == "ok" and row["events"] < 10 * design.shape[1]:
            row["note"] = (
                f"{row['events']} events for {design.shape[1]} terms: under 10 "
                "events per variable, estimates may be unstable"
            )
        violated = ph[ph < 0.05]
        for var in categorical or {}:
            hits = [t for t in violated.index if t.startswith(f"{var}[")]
            if not hits:
                continue
            kept = design[[c for c in design.columns if not c.startswith(f"{var}[")]]
            row["note"] = ((row["note"] + "; ") if row["note"] else "") + (
                f"proportional hazards violated by {', '.join(hits)} (Schoenfeld p = "
                f"{violated[hits].min():.3g}); refitted stratified by {var}"
            )
            srow, strs, _ = _cox_rows(
                self.model,
                f"{model_id}__strata_{var}",
                f"{description}, stratified by {var}",
                frame,
                kept,
                self.config,
                strata=frame[var],
                note=f"remedy for non-proportional hazards of {var}",
            )
            self.models.append(srow)
            self.terms.extend(strs)
        for term in violated.index:
            if not any(term.startswith(f"{v}[") for v in (categorical or {})):
                row["note"] = ((row["note"] + "; ") if row["note"] else "") + (
                    f"proportional hazards questionable for {term} (Schoenfeld p = "
                    f"{violated[term]:.3g}); not a categorical covariate to stratify on, so "
                    "reported as fitted"
                )

    def score(self, frame: pd.DataFrame, model_id: str, column: str) -> None:
        """Uno's C, time-dependent AUC, Brier, calibration and decision curves of a score
        (cross-fitted)."""
        config = self.config
        m, c = score_metrics(
            self.model,
            model_id,
            frame["time"],
            frame["event"],
            frame[column],
            horizons=config.horizons,
            n_boot=config.n_boot,
            seed=config.seed,
            k=config.folds,
            calibration_horizon=config.calibration_horizon,
            notes=self.notes,
            linear_from=config.linear_threshold(),
        )
        self.metrics.extend(m)
        self.curves.extend(c)
        if config.decision_horizons:
            self._decisions(frame, model_id, column)

    def _decisions(self, frame: pd.DataFrame, model_id: str, column: str) -> None:
        config = self.config
        try:
            d, sub = score_decision_analysis(
                self.model,
                model_id,
                frame["time"],
                frame["event"],
                frame[column],
                frame["age"],
                groups=_decision_groups(frame, self.decision_groups, self.age_cuts),
                horizons=config.decision_horizons,
                thresholds=config.decision_thresholds,
                n_boot=config.n_boot,
                seed=config.seed,
                k=config.folds,
                min_group_size=self.min_group_size,
                min_events=config.min_events,
                linear_from=config.linear_threshold(),
            )
        except CoxNotConverged as exc:
            self.notes.append(
                f"{model_id}: the cross-fitted Cox model behind the decision "
                f"curves did not converge ({exc.reason}): no decision curve"
            )
            return
        self.subgroup_decisions.append(sub)
        self.decisions.append(d)
        if d.empty and not any(n.startswith("no decision curve") for n in self.notes):
            self.notes.append(
                f"no decision curve: the follow-up (longest "
                f"{frame['time'].max():.2g} years) does not reach a decision "
                f"horizon ({', '.join(f'{h:g}' for h in config.decision_horizons)} "
                "years) with subjects still followed and deaths before it"
            )

    def harrell(self, model_id: str, frame: pd.DataFrame, column: str) -> None:
        self.metrics.append(
            {
                "model": self.model,
                "model_id": model_id,
                "metric": "harrell_c",
                "horizon": None,
                "value": harrell_c(frame["time"], frame["event"], frame[column]),
                "ci_low": None,
                "ci_high": None,
            }
        )

    def result(self, n_subjects: int, events: int) -> SurvivalResult:
        return SurvivalResult(
            models=pd.DataFrame(self.models, columns=MODEL_COLUMNS),
            terms=pd.DataFrame(self.terms, columns=TERM_COLUMNS),
            tests=pd.DataFrame(self.tests, columns=TEST_COLUMNS),
            metrics=pd.DataFrame(self.metrics, columns=METRIC_COLUMNS),
            curves=pd.DataFrame(self.curves, columns=CURVE_COLUMNS),
            decisions=_stack(self.decisions, DECISION_COLUMNS),
            decision_subgroups=_stack(self.subgroup_decisions, DECISION_SUBGROUP_COLUMNS),
            notes=[f"{n_subjects} subjects, {events} events; one photo per subject (the first)."]
            + self.notes,
        )


def _varying(df: pd.DataFrame, outputs: list[str], notes: list[str]) -> list[str]:
    """The outputs that take more than one value (a constant ranks no one), with a note
    for each that does not."""
    kept = list(outputs)
    for output in [o for o in ("faceage", "risk") if o in outputs]:
        values = pd.to_numeric(df[output], errors="coerce")
        if values[np.isfinite(values)].nunique() < 2:  # a broken model's constant output
            notes.append(
                f"{output} takes a single value in this cohort: it ranks no one, so "
                "no survival model, curve or metric of it is computed"
            )
            kept = [o for o in kept if o != output]
    return kept


def _faceage_frame(df: pd.DataFrame, age_cuts) -> pd.DataFrame:
    """The subjects with a finite FaceAge, with FaceAge and the age gap per decade and the
    FaceAge band."""
    cuts = age_cuts or [65.0, 75.0, 85.0]
    fa = df[np.isfinite(df["faceage"].astype(float))].reset_index(drop=True)
    fa["faceage_decade"] = fa["faceage"].astype(float) / 10.0
    fa["faceage_gap_decade"] = (fa["faceage"].astype(float) - fa["age"].astype(float)) / 10
    fa["faceage_band"] = age_band(fa["faceage"].astype(float), cuts)
    return fa


def _faceage_models(fits: _Fits, fa: pd.DataFrame, adjustments: dict) -> None:
    """FaceAge per decade under every adjustment; the age gap and FaceAge bands unadjusted
    and by age and sex; Harrell's C and KM curves by FaceAge band (the score's metrics are
    :meth:`_Fits.score`)."""
    labels = ADJUSTMENT_LABELS
    for adj, (num, cat) in adjustments.items():
        design = design_matrix(fa, ["faceage_decade"] + num, cat)
        fits.cox(f"faceage_per_decade__{adj}", f"FaceAge per decade, {labels[adj]}", fa, design,
                 cat)  # fmt: skip
    for adj in ("unadjusted", "age_sex"):
        if adj not in adjustments:
            continue
        num, cat = adjustments[adj]
        fits.cox(
            f"age_gap_per_decade__{adj}",
            f"age gap (FaceAge - age) per decade, {labels[adj]}",
            fa,
            design_matrix(fa, ["faceage_gap_decade"] + num, cat),
            cat,
        )
        band_ref = {"faceage_band": natural_order(fa["faceage_band"].dropna().unique())[0]}
        fits.cox(
            f"faceage_bands__{adj}",
            f"FaceAge bands against the youngest, {labels[adj]}",
            fa,
            design_matrix(fa, num, {**band_ref, **cat}),
            cat,
        )
    fits.harrell("faceage", fa, "faceage")
    fits.curves.extend(km_curves(fits.model, "faceage_band", fa, fa["faceage_band"]))


def _risk_frame(df: pd.DataFrame, notes: list[str]) -> tuple[pd.DataFrame, pd.Series]:
    """The subjects with a finite risk score, the score per SD and its quartile indicators,
    and the quartiles (empty ones named in ``notes``)."""
    rk = df[np.isfinite(df["risk"].astype(float))].reset_index(drop=True)
    risk = rk["risk"].astype(float)
    sd = risk.std(ddof=1)
    rk["risk_sd"] = (risk - risk.mean()) / (sd if sd > 0 else 1.0)
    quart = risk_quartiles(risk)
    empty = empty_groups_note("risk quartiles", quart)
    if empty:
        notes.append(empty + ("; Q4 vs Q1 is not estimable" if not (quart == "Q4").any() else ""))
    for q in ("Q2", "Q3", "Q4"):
        if (quart == q).any():
            rk[f"risk[{q}]"] = (quart == q).astype(float)
    return rk, quart


def _risk_models(fits: _Fits, rk: pd.DataFrame, quart: pd.Series, adjustments: dict) -> None:
    """The risk score per SD and its quartiles (Q2-Q4 against Q1) under every adjustment
    but age alone; KM curves, medians and log-rank tests by quartile (the score's metrics
    are :meth:`_Fits.score`)."""
    qcols = [f"risk[{q}]" for q in ("Q2", "Q3", "Q4") if f"risk[{q}]" in rk.columns]
    for adj, (num, cat) in adjustments.items():
        if adj == "age":
            continue
        label = ADJUSTMENT_LABELS[adj]
        fits.cox(f"risk_per_sd__{adj}", f"risk score per SD, {label}", rk,
                 design_matrix(rk, ["risk_sd"] + num, cat), cat)  # fmt: skip
        fits.cox(f"risk_quartiles__{adj}", f"risk quartiles Q2-Q4 vs Q1, {label}", rk,
                 design_matrix(rk, qcols + num, cat), cat)  # fmt: skip
    fits.curves.extend(km_curves(fits.model, "risk_quartile", rk, quart))
    fits.metrics.extend(km_medians(fits.model, "km_risk_quartile", rk, quart))
    fits.tests.extend(logrank_tests(fits.model, rk, quart))


def survival_analysis(
    subjects: pd.DataFrame,
    model: str,
    outputs: list[str],
    covariates: list,
    config: SurvivalConfig,
    age_cuts: list[float] | None = None,
    *,
    decision_groups: list[str] | None = None,
    min_group_size: int = 30,
    part: str | None = None,
) -> SurvivalResult:
    """Survival models of one model's outputs on one row per subject.

    Parameters
    ----------
    subjects : one row per subject with ``time`` (years), ``event``, ``age``, ``sex``, the
        outputs (``faceage``, ``risk``) and the covariates.
    model : the model's name.
    outputs : which of ``faceage``, ``risk`` the model produced.
    covariates : :class:`audit.data.cohort.Covariate` items for the ``__clinical`` adjustment.
    config : minimum events, bootstrap size, seed, penalizer.
    decision_groups : attributes (e.g. ``sex``, ``race``, ``age_band``) within whose groups
        each score's decision curves are judged too (``decision_subgroups``); groups under
        ``min_group_size`` subjects or ``config.min_events`` deaths are too small.
    part : one of :data:`PARTS`, computed alone (independent pieces for the flow's task
        runner; their results concatenated in the order of :data:`PARTS` hold the same rows
        as the whole, which None computes): ``base`` (the subjects and events, the yardstick
        of chronological age, Kaplan-Meier overall), ``faceage_models``, ``faceage_score``,
        ``risk_models``, ``risk_score``.
    """
    if not {"time", "event"} <= set(subjects.columns) or subjects["event"].isna().all():
        return SurvivalResult.empty(
            "The cohort has no outcome columns (time, event): survival analysis was not run."
        )
    # rows in an order fixed by their values: resamples and folds do not depend on row order
    df = canonical_rows(subjects.dropna(subset=["time", "event"]))
    events = int(df["event"].sum())
    if events < config.min_events:
        return SurvivalResult.empty(
            f"Only {events} event{'' if events == 1 else 's'} among {len(df)} "
            f"subject{'' if len(df) == 1 else 's'} (minimum {config.min_events}): survival "
            "models were not fitted."
        )
    df["age_decade"] = df["age"].astype(float) / 10.0
    adjustments = _adjustments(df, covariates)
    fits = _Fits(model, config, age_cuts, decision_groups, min_group_size)
    wanted = PARTS if part is None else (part,)
    said: list[str] = []
    outputs = _varying(df, outputs, said)
    if "base" in wanted:
        _missing_note(df, adjustments, fits.notes)
        fits.cox("age_per_decade__unadjusted", "chronological age per decade (yardstick)", df,
                 df[["age_decade"]])  # fmt: skip
        fits.notes.extend(said)
        fits.metrics.extend(km_medians(model, "km_overall", df))
        fits.harrell("chronological_age", df, "age")
    if "faceage" in outputs:
        fa = _faceage_frame(df, fits.age_cuts)
        if "faceage_models" in wanted:
            _faceage_models(fits, fa, adjustments)
        if "faceage_score" in wanted:
            fits.score(fa, "faceage", "faceage")
    if "risk" in outputs:
        rk, quart = _risk_frame(df, fits.notes if "risk_models" in wanted else [])
        if "risk_models" in wanted:
            _risk_models(fits, rk, quart, adjustments)
        if "risk_score" in wanted:
            fits.score(rk, "risk", "risk")
    result = fits.result(len(df), events)
    if "base" not in wanted:  # the subjects and events are said once, by the base part
        result.notes = result.notes[1:]
    return result


PARTS = ("base", "faceage_models", "faceage_score", "risk_models", "risk_score")


def median_followup(time, event) -> float:
    """Median follow-up by the reverse Kaplan-Meier method (censoring as the event), one
    value per subject; NaN when no subject has both."""
    from lifelines import KaplanMeierFitter

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    keep = np.isfinite(time) & np.isfinite(event)
    if not keep.any():
        return float("nan")
    kmf = KaplanMeierFitter().fit(time[keep], 1 - event[keep].astype(int))
    return float(kmf.median_survival_time_)
