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

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from audit.accuracy import bootstrap_c, harrell_c
from audit.cohort import age_band, natural_order
from audit.config import SurvivalConfig

MODEL_COLUMNS = ["model", "model_id", "description", "n", "events", "concordance",
                 "concordance_low", "concordance_high", "log_likelihood", "ph_test_min_p",
                 "status", "note"]
TERM_COLUMNS = ["model", "model_id", "term", "coef", "se", "hr", "hr_low", "hr_high", "p_value"]
TEST_COLUMNS = ["model", "test", "groups", "statistic", "df", "p_value"]
METRIC_COLUMNS = ["model", "model_id", "metric", "horizon", "value", "ci_low", "ci_high"]
CURVE_COLUMNS = ["model", "curve", "group_name", "time", "survival", "at_risk"]


@dataclass
class SurvivalResult:
    """The survival stage's tables, plus notes for the report (why something was not run)."""

    models: pd.DataFrame
    terms: pd.DataFrame
    tests: pd.DataFrame
    metrics: pd.DataFrame
    curves: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, note: str) -> "SurvivalResult":
        return cls(pd.DataFrame(columns=MODEL_COLUMNS), pd.DataFrame(columns=TERM_COLUMNS),
                   pd.DataFrame(columns=TEST_COLUMNS), pd.DataFrame(columns=METRIC_COLUMNS),
                   pd.DataFrame(columns=CURVE_COLUMNS), [note])

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"survival_models": self.models, "survival_terms": self.terms,
                "survival_tests": self.tests, "survival_metrics": self.metrics,
                "survival_curves": self.curves}


def design_matrix(df: pd.DataFrame, numeric: list[str], categorical: dict[str, str | None]
                  ) -> pd.DataFrame:
    """Numeric terms as they are; each categorical as 0/1 columns ``name[level]`` against its
    reference level (given, else the most frequent). Rows with a missing term are dropped
    (complete cases), as R's ``coxph`` does by default."""
    out = df[numeric].astype(float).copy()
    for name, reference in categorical.items():
        values = df[name].astype(object)
        levels = values.dropna().value_counts()
        if levels.empty:
            continue
        ref = reference if reference in levels.index else levels.index[0]
        for level in sorted(str(v) for v in levels.index if v != ref):
            col = values.map(lambda v, level=level: np.nan if v is None or v != v
                             else float(str(v) == level))
            out[f"{name}[{level}]"] = col
    return out


def fit_cox(df: pd.DataFrame, terms: pd.DataFrame, penalizer: float = 0.0):
    """Fit lifelines' ``CoxPHFitter`` (Efron ties, as R's ``coxph``) on ``terms``.

    ``df`` holds ``time`` and ``event``; rows with any missing term are left out.
    Returns the fitter and the frame it was fitted on.
    """
    from lifelines import CoxPHFitter

    data = terms.copy()
    data["time"] = df["time"].astype(float).values
    data["event"] = df["event"].astype(int).values
    data = data.dropna()
    # A constant column (e.g. a level absent after dropping rows) cannot be estimated.
    constant = [c for c in terms.columns if data[c].nunique() <= 1]
    data = data.drop(columns=constant)
    cph = CoxPHFitter(penalizer=penalizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph.fit(data, duration_col="time", event_col="event")
    return cph, data


def _ph_min_p(cph, data: pd.DataFrame) -> float:
    from lifelines.statistics import proportional_hazard_test

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = proportional_hazard_test(cph, data, time_transform="rank")
        return float(np.nanmin(res.summary["p"].to_numpy()))
    except Exception:  # the test needs events at several times; report it as unavailable
        return float("nan")


def _cox_rows(model: str, model_id: str, description: str, subjects: pd.DataFrame,
              terms: pd.DataFrame, config: SurvivalConfig, rng) -> tuple[dict, list[dict]]:
    try:
        cph, data = fit_cox(subjects, terms, config.penalizer)
    except Exception as exc:  # convergence failure: reported, never hidden
        row = {"model": model, "model_id": model_id, "description": description,
               "n": int(terms.dropna().shape[0]), "events": None, "status": "failed",
               "note": f"Cox fit failed: {type(exc).__name__}: {exc}"}
        return row, []
    lp = cph.predict_log_partial_hazard(data).to_numpy()
    c, low, high = bootstrap_c(data["time"], data["event"], lp, config.n_boot, rng)
    row = {
        "model": model, "model_id": model_id, "description": description,
        "n": int(len(data)), "events": int(data["event"].sum()),
        "concordance": c, "concordance_low": low, "concordance_high": high,
        "log_likelihood": float(cph.log_likelihood_), "ph_test_min_p": _ph_min_p(cph, data),
        "status": "ok", "note": None,
    }
    s = cph.summary
    terms_rows = [{
        "model": model, "model_id": model_id, "term": term, "coef": float(s.at[term, "coef"]),
        "se": float(s.at[term, "se(coef)"]), "hr": float(s.at[term, "exp(coef)"]),
        "hr_low": float(s.at[term, "exp(coef) lower 95%"]),
        "hr_high": float(s.at[term, "exp(coef) upper 95%"]), "p_value": float(s.at[term, "p"]),
    } for term in s.index]
    return row, terms_rows


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
            rows.append({"model": model, "curve": curve, "group_name": str(name),
                         "time": float(t), "survival": float(s), "at_risk": int(r)})
    return rows


def logrank_tests(model: str, subjects: pd.DataFrame, quartile: pd.Series) -> list[dict]:
    from lifelines.statistics import logrank_test, multivariate_logrank_test

    rows = []
    ok = quartile.notna().to_numpy()
    res = multivariate_logrank_test(subjects.loc[ok, "time"], quartile[ok],
                                    subjects.loc[ok, "event"])
    rows.append({"model": model, "test": "logrank", "groups": "Q1,Q2,Q3,Q4",
                 "statistic": float(res.test_statistic), "df": float(res.degrees_of_freedom),
                 "p_value": float(res.p_value)})
    q1, q4 = (quartile == "Q1").to_numpy(), (quartile == "Q4").to_numpy()
    if q1.any() and q4.any():
        res = logrank_test(subjects.loc[q4, "time"], subjects.loc[q1, "time"],
                           subjects.loc[q4, "event"], subjects.loc[q1, "event"])
        rows.append({"model": model, "test": "logrank", "groups": "Q4 vs Q1",
                     "statistic": float(res.test_statistic), "df": 1.0,
                     "p_value": float(res.p_value)})
    return rows


def risk_quartiles(risk: pd.Series) -> pd.Series:
    """Quartiles of the risk score in this cohort, labelled Q1 (lowest) to Q4."""
    ranks = risk.rank(method="first")
    return pd.qcut(ranks, 4, labels=["Q1", "Q2", "Q3", "Q4"]).astype(object)


def survival_analysis(subjects: pd.DataFrame, model: str, outputs: list[str],
                      covariates: list, config: SurvivalConfig,
                      age_cuts: list[float] | None = None) -> SurvivalResult:
    """Survival models of one model's outputs on one row per subject.

    Parameters
    ----------
    subjects : one row per subject with ``time`` (years), ``event``, ``age``, ``sex``, the
        outputs (``faceage``, ``risk``) and the covariates.
    model : the model's name.
    outputs : which of ``faceage``, ``risk`` the model produced.
    covariates : :class:`audit.cohort.Covariate` items for the ``__clinical`` adjustment.
    config : minimum events, bootstrap size, seed, penalizer.
    """
    if not {"time", "event"} <= set(subjects.columns) or subjects["event"].isna().all():
        return SurvivalResult.empty(
            "The cohort has no outcome columns (time, event): survival analysis was not run.")
    df = subjects.dropna(subset=["time", "event"]).reset_index(drop=True)
    events = int(df["event"].sum())
    if events < config.min_events:
        return SurvivalResult.empty(
            f"Only {events} events among {len(df)} subjects (minimum {config.min_events}): "
            "survival models were not fitted.")
    rng = np.random.default_rng(config.seed)
    models, terms, tests, metrics, curves = [], [], [], [], []
    has_sex = "sex" in df.columns and df["sex"].nunique() > 1
    base_num = ["age_decade"]
    df["age_decade"] = df["age"].astype(float) / 10.0
    adjustments = {
        "unadjusted": ([], {}),
        "age": (["age_decade"], {}),
    }
    if has_sex:
        adjustments["age_sex"] = (["age_decade"], {"sex": "male"})
    if covariates:
        num = ["age_decade"] + [c.name for c in covariates if c.type == "numeric"]
        cat = {"sex": "male"} if has_sex else {}
        if "cancer_type" in df.columns and df["cancer_type"].nunique() > 1:
            cat["cancer_type"] = None  # reference: the most frequent type
        cat.update({c.name: c.reference for c in covariates if c.type == "categorical"})
        adjustments["clinical"] = (num, cat)
    labels = {"unadjusted": "unadjusted", "age": "adjusted for chronological age",
              "age_sex": "adjusted for age and sex",
              "clinical": "adjusted for age, sex, cancer type and the cohort's clinical covariates"}

    def add(model_id, description, frame, design):
        row, trs = _cox_rows(model, model_id, description, frame, design, config, rng)
        models.append(row)
        terms.extend(trs)

    add("age_per_decade__unadjusted", "chronological age per decade (yardstick)", df,
        df[base_num])
    # Each output on the subjects that have it (complete cases, as for every term).
    if "faceage" in outputs:
        fa = df[np.isfinite(df["faceage"].astype(float))].reset_index(drop=True)
        fa["faceage_decade"] = fa["faceage"].astype(float) / 10.0
        for adj, (num, cat) in adjustments.items():
            add(f"faceage_per_decade__{adj}", f"FaceAge per decade, {labels[adj]}", fa,
                design_matrix(fa, ["faceage_decade"] + num, cat))
        c = harrell_c(fa["time"], fa["event"], fa["faceage"])
        metrics.append({"model": model, "model_id": "faceage", "metric": "harrell_c",
                        "horizon": None, "value": c, "ci_low": None, "ci_high": None})
        bands = age_band(fa["faceage"].astype(float), age_cuts or [65.0, 75.0, 85.0])
        curves.extend(km_curves(model, "faceage_band", fa, bands))
    if "risk" in outputs:
        rk = df[np.isfinite(df["risk"].astype(float))].reset_index(drop=True)
        risk = rk["risk"].astype(float)
        sd = risk.std(ddof=1)
        rk["risk_sd"] = (risk - risk.mean()) / (sd if sd > 0 else 1.0)
        quart = risk_quartiles(risk)
        for q in ("Q2", "Q3", "Q4"):
            rk[f"risk[{q}]"] = (quart == q).astype(float)
        qcols = ["risk[Q2]", "risk[Q3]", "risk[Q4]"]
        for adj, (num, cat) in adjustments.items():
            if adj == "age":
                continue
            add(f"risk_per_sd__{adj}", f"risk score per SD, {labels[adj]}", rk,
                design_matrix(rk, ["risk_sd"] + num, cat))
            add(f"risk_quartiles__{adj}", f"risk quartiles Q2-Q4 vs Q1, {labels[adj]}", rk,
                design_matrix(rk, qcols + num, cat))
        curves.extend(km_curves(model, "risk_quartile", rk, quart))
        tests.extend(logrank_tests(model, rk, quart))
    c = harrell_c(df["time"], df["event"], df["age"])
    metrics.append({"model": model, "model_id": "chronological_age", "metric": "harrell_c",
                    "horizon": None, "value": c, "ci_low": None, "ci_high": None})
    return SurvivalResult(
        models=pd.DataFrame(models, columns=MODEL_COLUMNS),
        terms=pd.DataFrame(terms, columns=TERM_COLUMNS),
        tests=pd.DataFrame(tests, columns=TEST_COLUMNS),
        metrics=pd.DataFrame(metrics, columns=METRIC_COLUMNS),
        curves=pd.DataFrame(curves, columns=CURVE_COLUMNS),
        notes=[f"{len(df)} subjects, {events} events; one photo per subject (the first)."],
    )
