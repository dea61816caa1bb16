"""Survival stage on planted truth, its notes, and the verdict's checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.data.cohort import Covariate
from audit.demo.world import simulate
from audit.pipeline.config import SurvivalConfig, Thresholds
from audit.pipeline.verdict import Evidence, evaluate, overall
from audit.survival.analysis import risk_quartiles, survival_analysis


@pytest.fixture(scope="module")
def world():
    d = simulate(3000, seed=21)
    d["time"] = d["time_days"] / 365.25
    return d


@pytest.fixture(scope="module")
def result(world):
    return survival_analysis(
        world,
        "oracle",
        ["faceage", "risk"],
        [
            Covariate(name="ecog"),
            Covariate(name="treatment_intent", type="categorical", reference="curative"),
        ],
        SurvivalConfig(n_boot=30),
    )


def _term(result, model_id, term):
    t = result.terms
    return t[(t.model_id == model_id) & (t.term == term)].iloc[0]


def test_every_model_is_fitted_with_n_and_events(result, world):
    m = result.models.set_index("model_id")
    assert (m["status"] == "ok").all()
    assert (m["n"] == len(world)).all() and (m["events"] == world["event"].sum()).all()
    assert {
        "faceage_per_decade__unadjusted",
        "faceage_per_decade__age",
        "faceage_per_decade__age_sex",
        "faceage_per_decade__clinical",
        "risk_per_sd__age_sex",
        "risk_quartiles__unadjusted",
        "risk_quartiles__clinical",
        "age_per_decade__unadjusted",
    } <= set(m.index)
    assert m["ph_test_min_p"].between(0, 1).all()
    assert (m["concordance_low"] < m["concordance"]).all()


def test_faceage_beyond_age_recovers_the_planted_direction(result):
    # FaceAge = biological age + noise, and death depends on biological age beyond
    # chronological age: adjusted for age and sex, FaceAge must still carry risk.
    t = _term(result, "faceage_per_decade__age_sex", "faceage_decade")
    assert t.hr_low > 1.0
    # the clinical model includes cancer type dummies against the most frequent type
    terms = set(result.terms[result.terms.model_id == "faceage_per_decade__clinical"].term)
    assert {"ecog", "treatment_intent[palliative]", "sex[female]"} <= terms
    assert any(x.startswith("cancer_type[") for x in terms)


def test_risk_quartiles_are_ordered(result):
    hrs = [_term(result, "risk_quartiles__unadjusted", f"risk[{q}]").hr for q in ("Q2", "Q3", "Q4")]
    assert 1 < hrs[0] < hrs[1] < hrs[2]
    tests = result.tests.set_index("groups")
    assert tests.loc["Q1,Q2,Q3,Q4", "df"] == 3 and tests.loc["Q4 vs Q1", "p_value"] < 1e-6


def test_km_curves_start_full_and_never_rise(result):
    for (curve, group), g in result.curves.groupby(["curve", "group_name"]):
        s = g.sort_values("time")["survival"].to_numpy()
        assert s[0] <= 1 and np.all(np.diff(s) <= 1e-12), (curve, group)
        assert g["at_risk"].is_monotonic_decreasing
    assert set(result.curves[result.curves.curve == "risk_quartile"].group_name) == {
        "Q1",
        "Q2",
        "Q3",
        "Q4",
    }


def test_the_oracle_risk_discriminates_as_the_truth_does(result, world):
    from audit.metrics.accuracy import harrell_c

    c_true = harrell_c(world.time, world.event, world.true_lp)
    c = result.models.set_index("model_id").loc["risk_per_sd__unadjusted", "concordance"]
    assert abs(c - c_true) < 0.03


def test_too_few_events_and_no_outcomes_are_said_plainly(world):
    few = world.copy()
    few["event"] = 0
    few.loc[few.index[:5], "event"] = 1
    r = survival_analysis(few, "m", ["faceage"], [], SurvivalConfig(min_events=10))
    assert r.models.empty and "Only 5 events" in r.notes[0]
    r = survival_analysis(
        world.drop(columns=["time", "event"]), "m", ["faceage"], [], SurvivalConfig()
    )
    assert r.models.empty and "no outcome columns" in r.notes[0]


def test_quartiles_are_equal_sized():
    q = risk_quartiles(pd.Series(np.random.default_rng(0).normal(size=1000)))
    assert q.value_counts().tolist() == [250] * 4


def _acc(model, output, metric, value, low, high):
    return {
        "model": model,
        "output": output,
        "metric": metric,
        "attribute": "all",
        "group_name": "all",
        "n": 100,
        "value": value,
        "ci_low": low,
        "ci_high": high,
    }


def test_verdict_checks_pass_fail_and_skip():
    acc = pd.DataFrame(
        [
            _acc("m", "faceage", "mae", 4.0, 3.5, 4.5),
            _acc("m", "faceage", "mean_error", -6.0, -6.5, -5.5),
            _acc("m", "faceage", "pearson_r", 0.9, 0.88, 0.92),
        ]
    )
    terms = pd.DataFrame(columns=["model", "model_id", "term", "hr", "hr_low", "hr_high"])
    v = evaluate(
        Evidence(
            models=[{"name": "m", "outputs": ["faceage"]}],
            n_manifest_rows=100,
            n_quarantined=2,
            has_outcomes=False,
            thresholds=Thresholds(),
            tables={"accuracy": acc, "survival_terms": terms},
        )
    )
    status = v.set_index("check_name")["status"]
    assert status["quarantine_fraction"] == "pass"
    assert status["faceage_mae"] == "pass"
    assert status["faceage_abs_mean_error"] == "fail"  # |-6| > 5
    assert status["faceage_pearson_r"] == "pass"
    assert status["faceage_adjusted_hr_per_decade"] == "skipped"
    assert (
        "no outcomes" in v.set_index("check_name").loc["faceage_adjusted_hr_per_decade", "details"]
    )
    assert overall(v) == "fail"
    v2 = evaluate(
        Evidence(
            models=[{"name": "m", "outputs": ["faceage"]}],
            n_manifest_rows=100,
            n_quarantined=10,
            has_outcomes=False,
            thresholds=Thresholds(max_quarantine_fraction=0.2),
            tables={"accuracy": acc.iloc[[0, 2]], "survival_terms": terms},
        )
    )
    assert overall(v2) == "pass"
    assert v2.set_index("check_name").loc["faceage_abs_mean_error", "status"] == "skipped"


@pytest.mark.parametrize("broken", ["risk", "faceage"])
def test_a_constant_output_is_named_and_its_models_left_out(world, broken):
    """A broken model whose output never varies (a failed export, a stuck head) ranks no
    one: the stage says so and analyses the other output, instead of failing on a Cox fit
    that cannot converge."""
    sub = world.iloc[:600].copy()
    sub[broken] = 0.7
    other = {"risk": "faceage", "faceage": "risk"}[broken]
    result = survival_analysis(sub, "m", ["faceage", "risk"], [], SurvivalConfig(n_boot=10))
    assert any(n.startswith(f"{broken} takes a single value") for n in result.notes)
    assert (
        not result.models["model_id"]
        .str.startswith("faceage_" if broken == "faceage" else "risk_")
        .any()
    )
    assert set(result.decisions["model_id"]) == {other}
    assert not result.metrics["model_id"].eq(broken).any()
    assert (
        result.models["model_id"]
        .str.startswith("faceage_" if other == "faceage" else "risk_")
        .any()
    )


def test_an_undefined_metric_is_skipped_and_says_why():
    """Harrell's C of a cohort without deaths, Pearson r of a constant output: NaN in the
    accuracy table, a skipped check that says so (not "C nan must be at least 0.6")."""
    acc = pd.DataFrame(
        [
            _acc("m", "faceage", "pearson_r", np.nan, np.nan, np.nan),
            _acc("m", "risk", "c_index", np.nan, np.nan, np.nan),
        ]
    )
    terms = pd.DataFrame(columns=["model", "model_id", "term", "hr", "hr_low", "hr_high"])
    v = evaluate(
        Evidence(
            models=[{"name": "m", "outputs": ["faceage", "risk"]}],
            n_manifest_rows=10,
            n_quarantined=0,
            has_outcomes=True,
            thresholds=Thresholds(),
            tables={"accuracy": acc, "survival_terms": terms},
        )
    ).set_index("check_name")
    for check in ("faceage_pearson_r", "risk_c_index"):
        assert v.loc[check, "status"] == "skipped"
        assert "undefined on this cohort" in v.loc[check, "details"]
        assert "nan" not in v.loc[check, "details"]


def test_follow_up_short_of_every_decision_horizon_is_said(world):
    short = world.iloc[:600].copy()
    short["event"] = np.where(short["time"] > 0.8, 0, short["event"])
    short["time"] = short["time"].clip(upper=0.8)
    result = survival_analysis(short, "m", ["risk"], [], SurvivalConfig(n_boot=10))
    assert result.decisions.empty
    assert any(
        n.startswith("no decision curve: the follow-up (longest 0.8 years)") for n in result.notes
    )


def test_a_hazard_ratio_on_too_few_deaths_is_inconclusive_and_value_is_the_estimate():
    """The estimate is `value`, the judged lower bound `judged_value`; an HR of 39 (CI 1.7 to
    894) on 18 deaths is inconclusive, never a pass, and says how many deaths would do."""
    from audit.pipeline.config import Thresholds
    from audit.pipeline.verdict import Evidence, evaluate, overall

    def run(hr, low, high, events):
        terms = pd.DataFrame(
            [
                {
                    "model": "m",
                    "model_id": "faceage_per_decade__age_sex",
                    "term": "faceage_decade",
                    "hr": hr,
                    "hr_low": low,
                    "hr_high": high,
                }
            ]
        )
        models = pd.DataFrame(
            [{"model": "m", "model_id": "faceage_per_decade__age_sex", "events": events}]
        )
        empty = pd.DataFrame(
            columns=["model", "output", "metric", "attribute", "value", "ci_low", "ci_high", "n"]
        )
        v = evaluate(
            Evidence(
                models=[{"name": "m", "outputs": ["faceage"], "needs_images": False}],
                n_manifest_rows=100,
                n_quarantined=0,
                has_outcomes=True,
                thresholds=Thresholds(),
                tables={"accuracy": empty, "survival_terms": terms, "survival_models": models},
            )
        )
        return v.set_index("check_name").loc["faceage_adjusted_hr_per_decade"], overall(v)

    row, verdict = run(39.0, 1.702, 893.883, 18)
    assert row["status"] == "inconclusive" and row["passed"] is None and verdict == "fail"
    assert row["value"] == pytest.approx(39.0) and row["judged_value"] == pytest.approx(1.702)
    assert "18 deaths" in row["details"] and "would settle it" in row["details"]
    row, _ = run(1.3, 1.1, 1.55, 240)
    assert row["status"] == "pass" and row["value"] == pytest.approx(1.3)
    assert row["judged_value"] == pytest.approx(1.1)
    row, _ = run(1.3, 1.1, 1.55, 12)  # a tight CI does not make up for 12 deaths
    assert row["status"] == "inconclusive"


def test_tied_risk_scores_keep_q4_vs_q1_on_the_lung_data():
    """The lung data with the ECOG score as the risk (4 values): quartiles by value, so Q3 is
    empty and named; Q4 vs Q1 is still estimated within subgroups (every row was not_fitted
    with the old ties-pushed-up rule), and shuffled rows give the same numbers."""
    from lifelines.datasets import load_lung

    from audit.pipeline.config import load_config
    from audit.survival.subgroups import survival_subgroups

    lung = load_lung().dropna(subset=["ph.ecog"]).reset_index(drop=True)
    df = pd.DataFrame(
        {
            "subject_id": [f"s{i}" for i in range(len(lung))],
            "age": lung["age"].astype(float),
            "sex": lung["sex"].map({1: "male", 2: "female"}),
            "risk": lung["ph.ecog"].astype(float),
            "time": lung["time"] / 365.25,
            "event": lung["status"].astype(int),
        }
    )
    df["photo_id"] = df["subject_id"]
    cfg = load_config(survival={"n_boot": 0, "decision_horizons": []}).survival
    res = survival_analysis(df, "m", ["risk"], [], cfg)
    assert any("Q3 empty" in n for n in res.notes)
    terms = res.terms[res.terms.model_id == "risk_quartiles__unadjusted"].set_index("term")
    assert sorted(terms.index) == ["risk[Q2]", "risk[Q4]"]
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    again = survival_analysis(shuffled, "m", ["risk"], [], cfg)
    pd.testing.assert_frame_equal(res.terms, again.terms, rtol=1e-9, atol=1e-12)
    pd.testing.assert_frame_equal(res.tests, again.tests, rtol=1e-9, atol=1e-12)
    key = ["curve", "group_name", "time"]
    pd.testing.assert_frame_equal(
        res.curves.sort_values(key).reset_index(drop=True),
        again.curves.sort_values(key).reset_index(drop=True),
        rtol=1e-9,
        atol=1e-12,
    )
    fair = load_config().fairness
    rows, _ = survival_subgroups(df, "m", ["risk"], fair, 10, [65.0, 75.0, 85.0])
    sex = rows[(rows.predictor == "risk_q4_vs_q1") & (rows.attribute == "sex")]
    assert (sex.status == "ok").all() and (sex.hr > 1).all()
