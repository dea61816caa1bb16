"""Survival: published coefficients on real data, Uno's C against scikit-survival, the trend
test, cross-fitting, calibration, incremental value, the PH remedy, and (slow) coverage of a
planted hazard ratio."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.pipeline.config import load_config
from audit.stats.cox import fit_cox
from audit.survival.analysis import _logrank_trend, design_matrix


def test_rossi_recidivism_matches_fox_and_weisberg():
    # Fox J, Weisberg S. Cox proportional-hazards regression for survival data in R (2011
    # appendix to An R Companion to Applied Regression), coxph(Surv(week, arrest) ~ fin +
    # age + race + wexp + mar + paro + prio, data = Rossi): coefficients below.
    from lifelines.datasets import load_rossi

    rossi = load_rossi().rename(columns={"week": "time", "arrest": "event"})
    cols = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
    cph = fit_cox(rossi, rossi[cols].astype(float)).require().fitter
    published = {
        "fin": -0.37942,
        "age": -0.05744,
        "race": 0.31390,
        "wexp": -0.14980,
        "mar": -0.43370,
        "paro": -0.08487,
        "prio": 0.09150,
    }
    for term, coef in published.items():
        assert cph.params_[term] == pytest.approx(coef, abs=5e-5), term


def _world(n=2000, seed=1):
    from audit.demo.world import simulate

    df = simulate(n, seed)
    df["time"] = df["time_days"] / 365.25
    return df


def test_uno_c_matches_scikit_survival_and_its_ci_is_sensible():
    from sksurv.metrics import concordance_index_ipcw

    from audit.survival.metrics import _surv, score_metrics

    df = _world(1500, seed=2)
    metrics, curves = score_metrics("m", "risk", df["time"], df["event"], df["risk"], n_boot=300)
    m = pd.DataFrame(metrics).set_index("metric")
    tau = m.loc["uno_c", "horizon"]
    cap = (tau + df["time"][df["time"] > tau].min()) / 2
    t = np.minimum(df["time"], cap)
    e = np.where(df["time"] > cap, 0, df["event"])
    y = _surv(e, t)
    assert m.loc["uno_c", "value"] == pytest.approx(
        concordance_index_ipcw(y, y, df["risk"].to_numpy(), tau=tau)[0]
    )
    assert m.loc["uno_c", "ci_low"] < m.loc["uno_c", "value"] < m.loc["uno_c", "ci_high"]
    assert m.loc["uno_c", "ci_high"] - m.loc["uno_c", "ci_low"] < 0.08
    # follow-up ends at 5 years: the 5-year horizon is not judged
    assert set(m[m.index == "auc"]["horizon"]) == {1.0, 2.0}
    # the oracle risk is well calibrated: observed minus predicted survival near 0
    assert abs(m.loc["calibration_in_the_large", "value"]) < 0.03
    cal = pd.DataFrame(curves)
    assert len(cal) == 10 and (cal["survival"] - cal["predicted"]).abs().mean() < 0.06
    assert cal["predicted"].is_monotonic_decreasing  # deciles of rising predicted risk


def test_weighted_uno_c_equals_scikit_survival():
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.nonparametric import CensoringDistributionEstimator

    from audit.stats.concordance import weighted_concordance
    from audit.survival.metrics import _surv

    df = _world(800, seed=3)
    y = _surv(df["event"], df["time"])
    tau = 2.0
    before = (df["time"] < tau).to_numpy()
    w = np.zeros(len(df))
    w[before] = (
        CensoringDistributionEstimator()
        .fit(y)
        .predict_ipcw(_surv(df["event"][before], df["time"][before]))
        ** 2
    )
    ours = weighted_concordance(
        df["time"], df["event"], df["risk"], np.ones((1, len(df))), event_weight=w, tau=tau
    )[0]
    assert ours == pytest.approx(concordance_index_ipcw(y, y, df["risk"].to_numpy(), tau=tau)[0])


def test_logrank_trend_with_two_groups_is_the_logrank_test():
    from lifelines.statistics import logrank_test

    df = _world(600, seed=4)
    group = (df["risk"] > df["risk"].median()).astype(float) + 1
    stat, p = _logrank_trend(df["time"].to_numpy(), df["event"].to_numpy(), group.to_numpy())
    hi, lo = group == 2, group == 1
    ref = logrank_test(df["time"][hi], df["time"][lo], df["event"][hi], df["event"][lo])
    assert stat == pytest.approx(ref.test_statistic, rel=1e-6)
    assert p == pytest.approx(ref.p_value, rel=1e-5)


def test_cross_fitting_never_uses_a_subjects_own_outcome():
    from audit.survival.metrics import crossfit_survival

    df = _world(500, seed=5)
    a = crossfit_survival(df["time"], df["event"], df["risk"], [1.0, 2.0], seed=0)
    changed = df.copy()
    changed.loc[0, "time"], changed.loc[0, "event"] = 0.01, 1
    b = crossfit_survival(changed["time"], changed["event"], changed["risk"], [1.0, 2.0], seed=0)
    assert np.array_equal(a[0], b[0])  # subject 0's prediction did not see its outcome
    assert not np.allclose(a, b)  # the other folds' models did


def test_incremental_value_is_a_real_likelihood_ratio_test():
    """The original FaceAge script compared a model with itself (always 0). Here the test
    statistic is twice the log-likelihood gain of separately fitted models."""
    from audit.data.cohort import Covariate
    from audit.survival.incremental import incremental_value

    df = _world(1500, seed=6)
    covs = [Covariate(name="ecog", type="numeric")]
    out = incremental_value(df, covs, faceage_model="fa", risk_model="rk", n_boot=100)
    models = out["survival_models"].set_index("model_id")
    tests = out["survival_tests"]
    first = tests.iloc[0]
    ll0 = models.loc["incremental__clinical", "log_likelihood"]
    ll1 = models.loc["incremental__clinical+faceage", "log_likelihood"]
    assert first["statistic"] == pytest.approx(2 * (ll1 - ll0)) and first["statistic"] > 20
    assert (models["n"] == len(df)).all()  # one common sample
    delta = out["survival_metrics"].iloc[0]
    assert delta["ci_low"] > 0  # FaceAge adds discrimination to the clinical model
    noise = df.assign(faceage=np.random.default_rng(0).normal(60, 10, len(df)))
    flat = incremental_value(noise, covs, faceage_model="fa", risk_model=None, n_boot=100)
    assert flat["survival_tests"].iloc[0]["p_value"] > 1e-3
    assert (
        flat["survival_metrics"].iloc[0]["ci_low"] < 0 < flat["survival_metrics"].iloc[0]["ci_high"]
    )


def test_a_non_proportional_categorical_term_is_stratified():
    from audit.survival.analysis import survival_analysis

    rng = np.random.default_rng(7)
    n = 1500
    sex = rng.choice(["female", "male"], n)
    age = rng.uniform(40, 85, n)
    faceage = age + rng.normal(0, 5, n)
    # women: early deaths (hazard 0.6 then 0.05 after a year); men: constant 0.15
    u = rng.exponential(1.0, n) / np.exp(0.3 * (faceage - 60) / 10)
    t_f = np.where(u < 0.6, u / 0.6, 1 + (u - 0.6) / 0.05)
    t = np.where(sex == "female", t_f, u / 0.15)
    df = pd.DataFrame(
        {
            "subject_id": range(n),
            "photo_id": range(n),
            "sex": sex,
            "age": age,
            "faceage": faceage,
            "time": np.minimum(t, 6.0),
            "event": (t <= 6.0).astype(int),
        }
    )
    res = survival_analysis(df, "m", ["faceage"], [], load_config(survival={"n_boot": 0}).survival)
    models = res.models.set_index("model_id")
    assert "stratified by sex" in models.loc["faceage_per_decade__age_sex", "note"]
    strat = models.loc["faceage_per_decade__age_sex__strata_sex"]
    assert strat["status"] == "ok"
    terms = res.terms[res.terms.model_id == "faceage_per_decade__age_sex__strata_sex"]
    assert "sex[female]" not in set(terms["term"])
    hr = terms.set_index("term").loc["faceage_decade"]
    assert hr["hr_low"] < np.exp(0.3) < hr["hr_high"]


@pytest.mark.slow
def test_the_ci_of_a_planted_hazard_ratio_covers_the_truth_about_95_percent():
    """FaceAge with a planted HR of 1.15 per decade given age and sex (the FaceAge paper's
    size): over 200 seeds the age- and sex-adjusted 95% CI covers 1.15 in about 95%."""
    covered = 0
    seeds = range(200)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = 800
        age = rng.uniform(40, 85, n)
        sex = rng.choice(["female", "male"], n)
        faceage = age + rng.normal(0, 7, n)
        lp = np.log(1.15) * faceage / 10 + 0.3 * age / 10 + 0.2 * (sex == "male")
        t = rng.exponential(1.0, n) / (0.02 * np.exp(lp))
        df = pd.DataFrame(
            {
                "time": np.minimum(t, 5.0),
                "event": (t <= 5.0).astype(int),
                "faceage_decade": faceage / 10,
                "age_decade": age / 10,
                "sex": sex,
            }
        )
        terms = design_matrix(df, ["faceage_decade", "age_decade"], {"sex": "male"})
        cph = fit_cox(df, terms).require().fitter
        s = cph.summary.loc["faceage_decade"]
        covered += s["exp(coef) lower 95%"] <= 1.15 <= s["exp(coef) upper 95%"]
    # binomial(200, 0.95): 95% of runs lie within 184-196
    assert 182 <= covered <= 198, covered


def test_face_aging_rate_is_the_slope_of_faceage_over_photo_dates():
    from audit.survival.longitudinal import face_aging_rates

    photos = pd.DataFrame(
        {
            "subject_id": ["a", "a", "a", "b", "b", "c"],
            "photo_date": pd.to_datetime(
                ["2020-01-01", "2021-01-01", "2022-01-01", "2020-06-01", "2020-08-01", "2020-01-01"]
            ),
            "faceage": [60.0, 61.5, 63.0, 50.0, 51.0, 40.0],
            "age": [58, 59, 60, 49, 49.2, 39],
            "sex": ["f", "f", "f", "m", "m", "m"],
            "time": [5.0, 4.0, 3.0, 2.0, 1.8, 1.0],
            "event": [1, 1, 1, 0, 0, 0],
        }
    )
    rates = face_aging_rates(photos).set_index("subject_id")
    assert list(rates.index) == ["a"]  # b's photos are 2 months apart, c has one photo
    assert rates.loc["a", "far"] == pytest.approx(1.5, rel=2e-3)  # 3 FaceAge years in 2 years
    assert rates.loc["a", "time"] == 3.0 and rates.loc["a", "age"] == 60  # the last photo


def test_a_faster_face_aging_rate_means_shorter_survival_in_the_demo_world():
    """The demo world ages the faces of sicker subjects faster (0.5 extra years a year per
    unit of illness), and illness shortens survival: the landmark HR of FAR is above 1."""
    from audit.demo.world import expand_photos, simulate
    from audit.survival.longitudinal import far_models

    subjects = simulate(1500, 13)
    photos = expand_photos(subjects, 3, 13)
    photos["time"] = photos["time_days"] / 365.25
    photos["photo_date"] = pd.to_datetime(photos["photo_date"])
    models, terms, metrics, notes = far_models(
        photos, "m", load_config(survival={"n_boot": 0}).survival
    )
    t = pd.DataFrame(terms).set_index(["model_id", "term"])
    far = t.loc[("face_aging_rate__age_sex", "far")]
    assert far["hr_low"] > 1.0
    assert pd.DataFrame(metrics).set_index("metric").loc["subjects", "value"] > 500
