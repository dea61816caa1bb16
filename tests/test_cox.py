"""The checked Cox layer (audit.stats.cox) and the value-based quantile groups
(audit.stats.groups), on real data that lifelines and scikit-survival ship.

References for the known answers: scikit-survival's ``CoxPHSurvivalAnalysis`` (Efron ties)
fitted in the test on the same terms; R's ``coxph`` output printed in the comments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.stats.cox import efron_loglik, fit_cox
from audit.stats.groups import empty_groups_note, quantile_groups


def _sksurv_coef(x: pd.DataFrame, time, event) -> np.ndarray:
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    z = (x - x.mean()) / x.std(ddof=1)
    est = CoxPHSurvivalAnalysis(ties="efron", n_iter=200, tol=1e-10).fit(
        z.to_numpy(float),
        Surv.from_arrays(event=np.asarray(event, bool), time=np.asarray(time, float)),
    )
    return est.coef_ / x.std(ddof=1).to_numpy()


@pytest.fixture(scope="module")
def flchain():
    """scikit-survival's flchain (7,874 subjects): serum free light chains, heavy-tailed
    (kappa's largest value 21 SD above its mean), censored at 5 years."""
    from sksurv.datasets import load_flchain

    x, y = load_flchain()
    df = (
        x[["kappa", "lambda", "age"]]
        .astype(float)
        .assign(time=y["futime"] / 365.25, event=y["death"].astype(int))
        .reset_index(drop=True)
    )
    df["event"] = np.where(df["time"] > 5, 0, df["event"])
    df["time"] = np.minimum(df["time"], 5.0)
    return df


@pytest.mark.parametrize("terms", [["kappa"], ["lambda"], ["kappa", "age"]])
def test_a_heavy_tailed_score_gets_the_maximum_not_a_wrong_sign(flchain, terms):
    """lifelines' default Newton step ends at kappa = -19.7 here with only a warning (the
    maximum is +0.272); the layer must find the maximum, agree with scikit-survival, and say
    that it refitted."""
    fit = fit_cox(flchain, flchain[terms], cross_check="always")
    assert fit.ok, fit.reason
    expected = _sksurv_coef(flchain[terms], flchain["time"], flchain["event"])
    np.testing.assert_allclose(fit.fitter.params_[terms].to_numpy(), expected, rtol=1e-4)
    assert fit.fitter.params_[terms[0]] > 0
    assert fit.newton_decrement < 1e-6 and fit.cross_check < 1e-3
    assert fit.method.startswith("damped") and any("refitted" in n for n in fit.notes)


def test_the_layer_reads_lifelines_warnings_on_the_failed_default(flchain):
    import warnings

    from lifelines import CoxPHFitter

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raw = CoxPHFitter().fit(flchain[["kappa", "time", "event"]], "time", "event")
    assert raw.params_["kappa"] < 0  # the defect: a wrong sign, raised as a warning only
    assert any("failed to converge" in str(w.message) for w in caught)
    fit = fit_cox(flchain, flchain[["kappa"]])
    assert fit.ok and "refitted with damped Newton-Raphson" in " ".join(fit.notes)


def test_the_efron_likelihood_by_hand_equals_lifelines_with_ties():
    # rossi: 432 subjects, weeks as whole numbers (many tied deaths)
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_rossi

    rossi = load_rossi()
    cols = ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
    cph = CoxPHFitter().fit(rossi, "week", "arrest")
    ll, grad = efron_loglik(
        rossi[cols].to_numpy(float), rossi["week"], rossi["arrest"], cph.params_[cols].to_numpy()
    )
    assert ll == pytest.approx(cph.log_likelihood_, abs=1e-8)
    assert np.abs(grad).max() < 1e-4  # the score at the maximum
    ll0, _ = efron_loglik(
        rossi[cols].to_numpy(float), rossi["week"], rossi["arrest"], np.zeros(len(cols))
    )
    assert ll0 == pytest.approx(cph._ll_null_, abs=1e-8)
    strata = rossi["race"].to_numpy()
    cph_s = CoxPHFitter().fit(rossi, "week", "arrest", strata=["race"])
    rest = [c for c in cols if c != "race"]
    ll_s, _ = efron_loglik(
        rossi[rest].to_numpy(float),
        rossi["week"],
        rossi["arrest"],
        cph_s.params_[rest].to_numpy(),
        strata,
    )
    assert ll_s == pytest.approx(cph_s.log_likelihood_, abs=1e-8)


def test_lung_through_the_layer_equals_r():
    # R: coxph(Surv(time, status) ~ age + sex + ph.ecog, data = lung): HR 1.011, 0.575, 1.590
    from lifelines.datasets import load_lung

    lung = load_lung().dropna(subset=["ph.ecog"]).rename(columns={"status": "event"})
    fit = fit_cox(lung, lung[["age", "sex", "ph.ecog"]].astype(float), cross_check="always")
    assert fit.ok and fit.method == "Newton-Raphson" and not fit.notes
    np.testing.assert_allclose(
        fit.summary["exp(coef)"].to_numpy(), [1.011, 0.575, 1.590], atol=5e-4
    )
    assert fit.log_likelihood > fit.log_likelihood_null


def test_a_separating_term_is_a_named_result_not_an_exception():
    rng = np.random.default_rng(4)
    n = 300
    x = rng.normal(size=n)
    flag = (np.arange(n) < 40).astype(float)
    time = rng.exponential(1.0, n) * np.exp(-0.3 * x)
    event = np.where(flag == 1, 0, (rng.random(n) < 0.7).astype(int))  # no death with flag
    df = pd.DataFrame({"time": time, "event": event, "x": x, "flag": flag})
    fit = fit_cox(df, df[["x", "flag"]])
    assert fit.status == "not_converged" and fit.separating == ["flag"]
    assert "flag" in fit.reason and "monotone likelihood" in fit.reason
    with pytest.raises(Exception, match="flag"):
        fit.require()


def test_collinear_terms_are_not_estimable():
    rng = np.random.default_rng(5)
    n = 200
    x = rng.normal(size=n)
    df = pd.DataFrame({"time": rng.exponential(1.0, n), "event": 1, "x": x, "twice": 2 * x + 1})
    fit = fit_cox(df, df[["x", "twice"]])
    assert fit.status == "not_converged" and fit.reason


def test_a_constant_term_is_left_out_and_named():
    rng = np.random.default_rng(6)
    df = pd.DataFrame(
        {"time": rng.exponential(1.0, 100), "event": 1, "x": rng.normal(size=100), "c": 3.0}
    )
    fit = fit_cox(df, df[["x", "c"]])
    assert fit.ok and fit.dropped == ["c"] and "c" in fit.notes[0]


# ----------------------------------------------------------------- quantile groups


def test_tied_scores_share_a_group_and_empty_quartiles_are_named():
    from lifelines.datasets import load_lung

    ecog = load_lung()["ph.ecog"].dropna()  # 0: 63, 1: 113, 2: 50, 3: 1 subjects
    q = quantile_groups(ecog)
    assert q.groupby(ecog).nunique().max() == 1  # one group per value
    assert dict(pd.crosstab(ecog, q).idxmax(axis=1)) == {0.0: "Q1", 1.0: "Q2", 2.0: "Q4", 3.0: "Q4"}
    note = empty_groups_note("risk quartiles", q)
    assert "Q3 empty" in note and "(Q1, Q2, Q4)" in note


def test_quartiles_do_not_depend_on_row_order():
    rng = np.random.default_rng(7)
    values = pd.Series(np.round(rng.gamma(1.0, 2.0, 999), 1))  # many ties
    perm = rng.permutation(len(values))
    q = quantile_groups(values)
    shuffled = quantile_groups(values.iloc[perm].reset_index(drop=True))
    assert (shuffled.to_numpy() == q.to_numpy()[perm]).all()
    # continuous values: four groups of about a quarter each, as pandas.qcut
    cont = pd.Series(rng.normal(size=1000))
    counts = quantile_groups(cont).value_counts()
    assert sorted(counts.index) == ["Q1", "Q2", "Q3", "Q4"] and (counts == 250).all()
    assert (
        quantile_groups(cont).to_numpy()
        == pd.qcut(cont, 4, labels=["Q1", "Q2", "Q3", "Q4"]).astype(object).to_numpy()
    ).all()


def test_the_fairness_interactions_on_a_heavy_tailed_real_score_finish(flchain):
    """The defect: flchain's kappa as the risk score ended the audit with exit 3 (lifelines'
    'delta contains nan' in the score x age band and score x sex interaction models). Each
    group's Q4 vs Q1 HR must now equal scikit-survival's on the same terms."""
    from sksurv.datasets import load_flchain

    from audit.pipeline.config import load_config
    from audit.survival.subgroups import survival_subgroups

    x, y = load_flchain()
    df = pd.DataFrame(
        {
            "age": x["age"].astype(float).to_numpy(),
            "sex": x["sex"].map({"F": "female", "M": "male"}).to_numpy(),
            "risk": x["kappa"].astype(float).to_numpy(),
            "time": y["futime"] / 365.25,
            "event": y["death"].astype(int),
        }
    )
    df["subject_id"] = df["photo_id"] = [f"s{i}" for i in range(len(df))]
    rows, tests = survival_subgroups(
        df, "m", ["risk"], load_config().fairness, 10, [65.0, 75.0, 85.0]
    )
    assert set(tests["test"]) == {
        "interaction: risk_per_sd x sex",
        "interaction: risk_per_sd x age_band",
    }
    assert tests["p_value"].notna().all()
    sex = rows[rows.attribute == "sex"].set_index("group_name")
    assert (sex.status == "ok").all()
    cuts = np.quantile(df["risk"], [0.25, 0.5, 0.75])
    q = np.searchsorted(cuts, df["risk"], side="left") + 1
    for group in ("female", "male"):
        sub = df[(df["sex"] == group) & np.isin(q, [1, 4])]
        terms = pd.DataFrame(
            {"q4": (q[sub.index] == 4).astype(float), "age": sub["age"] / 10.0}, index=sub.index
        )
        coef = _sksurv_coef(terms, sub["time"], sub["event"])
        assert np.log(sex.loc[group, "hr"]) == pytest.approx(coef[0], abs=1e-4)


def test_many_tied_times_fit_in_batch_mode_to_the_same_numbers():
    """Times in whole days over a registry-sized cohort: under half the rows have a time of
    their own, so the layer fits in lifelines' batch mode (five times faster at 100,000
    subjects); coefficients, standard errors and log-likelihood equal the one-time-at-a-time
    fit. Continuous times keep the loop."""
    from lifelines import CoxPHFitter

    from audit.demo.world import simulate
    from audit.stats.cox import batch_mode

    d = simulate(6000, seed=3)
    df = pd.DataFrame(
        {
            "time": d["time_days"] / 365.25,
            "event": d["event"],
            "faceage_decade": d["faceage"] / 10,
            "age_decade": d["age"] / 10,
        }
    )
    assert batch_mode(df["time"]) and not batch_mode(df["time"] + np.arange(len(df)) * 1e-7)
    fit = fit_cox(df, df[["faceage_decade", "age_decade"]]).require().fitter
    loop = CoxPHFitter().fit(df, "time", "event", batch_mode=False)
    cols = ["faceage_decade", "age_decade"]
    np.testing.assert_allclose(fit.params_[cols], loop.params_[cols], rtol=1e-8)
    np.testing.assert_allclose(fit.standard_errors_[cols], loop.standard_errors_[cols], rtol=1e-8)
    assert fit.log_likelihood_ == pytest.approx(loop.log_likelihood_, rel=1e-10)


def _lifelines_ph(cph, data) -> pd.DataFrame:
    """lifelines' test with R's rank of the death times (tied times: their average rank)."""
    from lifelines.statistics import proportional_hazard_test
    from scipy.stats import rankdata

    def average_rank(t, c, w):
        out = pd.Series(0.0, index=t.index)
        out[c.to_numpy(bool)] = rankdata(t.to_numpy(float)[c.to_numpy(bool)])
        return out

    return proportional_hazard_test(cph, data, time_transform=average_rank).summary


@pytest.mark.parametrize("case", ["rossi", "lung-stratified", "whole-days"])
def test_the_schoenfeld_test_equals_lifelines(case):
    """The proportional-hazards test from one sorted pass equals lifelines' Python loop given
    R's rank of the death times (statistic and p per term, to 1e-10) on real data with tied
    times, with strata, and on whole-day times of the demo world (many deaths per time:
    Efron's mean over l); shuffling the rows changes nothing. On continuous times, where no
    death times tie, it equals lifelines' own "rank" transform too (without strata: with
    them, lifelines numbers the deaths stratum after stratum rather than by time)."""
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_lung, load_rossi

    from audit.demo.world import simulate
    from audit.stats.cox import schoenfeld_test

    strata = None
    if case == "rossi":
        data, time, event = load_rossi(), "week", "arrest"
    elif case == "lung-stratified":
        data = load_lung()[["time", "status", "age", "ph.ecog", "sex"]].dropna()
        time, event, strata = "time", "status", "sex"
    else:
        d = simulate(3000, seed=5)
        data = pd.DataFrame(
            {"time": d["time_days"], "event": d["event"], "faceage": d["faceage"], "age": d["age"]}
        )
        time, event = "time", "event"
    cph = CoxPHFitter().fit(data, time, event, strata=[strata] if strata else None)
    terms = cph.params_.index

    def ours(frame, cph):
        return schoenfeld_test(
            frame[terms].to_numpy(float),
            frame[time].to_numpy(float),
            frame[event].to_numpy(int),
            cph.params_.to_numpy(),
            cph.variance_matrix_.to_numpy(),
            frame[strata].to_numpy() if strata else None,
        )

    statistic, p = ours(data, cph)
    want = _lifelines_ph(cph, data).reindex(terms)
    np.testing.assert_allclose(statistic, want["test_statistic"], rtol=1e-10)
    np.testing.assert_allclose(p, want["p"], rtol=1e-10, atol=1e-14)
    # rows in another order: the same test (lifelines' order is by time and event)
    shuffled = data.sample(frac=1.0, random_state=1)
    again, _ = ours(shuffled, cph)
    np.testing.assert_allclose(again, statistic, rtol=1e-10)
    if strata:  # lifelines' "rank" numbers deaths stratum after stratum, not by time
        return
    untied = data.assign(**{time: data[time] + np.arange(len(data)) * 1e-6})
    cph = CoxPHFitter().fit(untied, time, event, strata=[strata] if strata else None)
    statistic, _ = ours(untied, cph)
    from lifelines.statistics import proportional_hazard_test

    own = proportional_hazard_test(cph, untied, time_transform="rank").summary.reindex(terms)
    np.testing.assert_allclose(statistic, own["test_statistic"], rtol=1e-8)


def test_the_schoenfeld_test_needs_two_deaths():
    from audit.stats.cox import schoenfeld_test

    with pytest.raises(ValueError, match="two deaths"):
        schoenfeld_test(np.arange(4.0), [1, 2, 3, 4], [0, 1, 0, 0], [0.1], [[0.01]])
