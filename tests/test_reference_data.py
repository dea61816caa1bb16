"""Known answers on real data: a real model's predictions (UTKFace) and R's lung results."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_lung_cohort

from audit.data.cohort import load_cohort
from audit.metrics.accuracy import faceage_accuracy
from audit.pipeline.config import AccuracyConfig, SurvivalConfig
from audit.stats.cox import fit_cox
from audit.survival.analysis import design_matrix, survival_analysis


def _row(frame, metric, attribute="all", group="all"):
    sel = frame[
        (frame.metric == metric) & (frame.attribute == attribute) & (frame.group_name == group)
    ]
    assert len(sel) == 1, (metric, attribute, group)
    return sel.iloc[0]


@pytest.fixture
def utk_accuracy(utk_cohort):
    cohort = load_cohort(utk_cohort)
    assert len(cohort.frame) == 2547 and cohort.quarantine.empty
    return faceage_accuracy(cohort.frame, "faceage-keras", AccuracyConfig(n_boot=500))


def test_utk_overall_accuracy_matches_the_published_figures(utk_accuracy):
    # shared/data/README.md: MAE 7.46 years, mean signed error +4.47, Pearson r 0.90.
    mae = _row(utk_accuracy, "mae")
    assert round(mae.value, 2) == 7.46
    assert mae.ci_low < 7.46 < mae.ci_high and mae.ci_high - mae.ci_low < 1.0
    assert round(_row(utk_accuracy, "mean_error").value, 2) == 4.47
    assert round(_row(utk_accuracy, "pearson_r").value, 2) == 0.90
    assert mae.n == 2547 and mae.n_subjects == 2547


@pytest.mark.parametrize(
    "race,mae",
    [("White", 6.85), ("Black", 8.74), ("Asian", 7.26), ("Indian", 7.63), ("Others", 8.69)],
)
def test_utk_mae_by_race_matches_the_published_figures(utk_accuracy, race, mae):
    row = _row(utk_accuracy, "mae", "race", race)
    assert round(row.value, 2) == mae
    assert row.ci_low < row.value < row.ci_high


def test_utk_subgroups_equal_a_plain_numpy_oracle(utk_cohort, utk_accuracy):
    raw = load_cohort(utk_cohort).frame
    for sex in ("male", "female"):
        mask = (raw["sex"] == sex).to_numpy()
        err = raw["faceage"].to_numpy()[mask] - raw["age"].to_numpy()[mask]
        row = _row(utk_accuracy, "mae", "sex", sex)
        assert row.value == pytest.approx(np.abs(err).mean(), rel=1e-12)
        assert row.n == mask.sum()
        r = np.corrcoef(raw["age"].to_numpy()[mask], raw["faceage"].to_numpy()[mask])[0, 1]
        assert _row(utk_accuracy, "pearson_r", "sex", sex).value == pytest.approx(r, rel=1e-9)


def test_utk_survival_says_there_are_no_outcomes(utk_cohort):
    cohort = load_cohort(utk_cohort)
    result = survival_analysis(
        cohort.subjects(), "faceage-keras", ["faceage"], [], SurvivalConfig()
    )
    assert result.models.empty and result.terms.empty
    assert "no outcome columns" in result.notes[0]


@pytest.fixture(scope="module")
def lung(tmp_path_factory):
    return load_cohort(write_lung_cohort(tmp_path_factory.mktemp("lung") / "lung"))


def test_lung_cohort_loads_with_value_mapping_and_days_to_years(lung):
    assert len(lung.frame) == 228 and lung.quarantine.empty
    assert set(lung.frame["sex"]) == {"male", "female"}
    assert lung.frame["time"].max() == pytest.approx(1022 / 365.25)
    assert lung.frame["event"].sum() == 165
    assert lung.frame["ph.ecog"].isna().sum() == 1


def test_lung_cox_equals_r(lung):
    # R 4.x, survival 3.x:
    #   coxph(Surv(time, status) ~ age + sex + ph.ecog, data = lung)
    #              coef exp(coef) se(coef)      z        p
    #   age      0.011067  1.011128 0.009267  1.194 0.232416
    #   sex     -0.552612  0.575445 0.167739 -3.294 0.000986
    #   ph.ecog  0.463728  1.589991 0.113577  4.083 4.45e-05
    #   n= 227, number of events= 164 (1 observation deleted due to missingness)
    #   Concordance= 0.637; Loglik(model)= -729.2
    # (time is in years here; hazard ratios do not depend on the time scale)
    terms = design_matrix(lung.frame, ["age", "ph.ecog"], {"sex": "male"})
    fit = fit_cox(lung.frame, terms).require()
    cph, data = fit.fitter, fit.data
    s = cph.summary
    expected = {
        "age": (0.011067, 0.009267, 0.232416),
        "sex[female]": (-0.552612, 0.167739, 0.000986),
        "ph.ecog": (0.463728, 0.113577, 4.45e-05),
    }
    for term, (coef, se, p) in expected.items():
        assert s.at[term, "coef"] == pytest.approx(coef, abs=5e-6)
        assert s.at[term, "se(coef)"] == pytest.approx(se, abs=5e-6)
        assert s.at[term, "p"] == pytest.approx(p, rel=5e-3)
    assert len(data) == 227 and data["event"].sum() == 164
    assert round(cph.concordance_index_, 3) == 0.637
    assert round(cph.log_likelihood_, 1) == -729.2


def test_lung_logrank_by_sex_and_km_median_equal_r(lung):
    # R: survdiff(Surv(time, status) ~ sex, data = lung) -> Chisq= 10.3 on 1 df, p= 0.001
    # R: survfit(Surv(time, status) ~ 1, data = lung) -> median 310 days (95% CI 284, 361)
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    f = lung.frame
    m, w = f["sex"] == "male", f["sex"] == "female"
    res = logrank_test(f.loc[m, "time"], f.loc[w, "time"], f.loc[m, "event"], f.loc[w, "event"])
    assert round(res.test_statistic, 1) == 10.3
    kmf = KaplanMeierFitter().fit(f["time"] * 365.25, f["event"])
    assert kmf.median_survival_time_ == pytest.approx(310)
