"""Performance estimated without outcomes (``audit.monitor.estimate``): the weighted measures
equal lifelines and scikit-survival under unit weights and a cohort with rows repeated under
integer weights; a cohort shifted in age and site with the same model behaviour is covered
by the estimate (at least 90% of 50 seeds in ``make test-all``); a model that behaves
differently shows a gap once the outcomes arrive; a cohort without overlap is not estimated;
a monitor run stores the estimates, and the next run of the same cohort with its outcomes
shows them beside the realised values; through the drift stage, an older cohort's drift is
explained by its case mix and darker photos' is not (``audit.monitor.casemix``)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_lung
from lifelines.utils import concordance_index

from audit.monitor.estimate import (
    ESTIMATED,
    POOR_OVERLAP,
    EstimateSettings,
    _censoring_weights,
    design,
    estimate_performance,
    importance_weights,
    kish_ess,
    unseen_categories,
    weighted_auc,
    weighted_km,
)
from audit.stats.concordance import weighted_concordance


def _lung():
    d = load_lung().dropna(subset=["ph.ecog"]).reset_index(drop=True)
    time = d["time"].to_numpy(float) / 365.25
    event = d["status"].to_numpy(int)
    score = d["ph.ecog"].to_numpy(float) + d["age"].to_numpy(float) / 100
    return time, event, score


def test_unit_weights_give_lifelines_and_scikit_survival_on_the_lung_data():
    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc
    from sksurv.nonparametric import CensoringDistributionEstimator
    from sksurv.util import Surv

    t, e, s = _lung()
    ones = np.ones((1, len(t)))
    y = Surv.from_arrays(e.astype(bool), t)
    for h in (0.5, 1.0):
        assert weighted_km(t, e, ones, h)[0] == pytest.approx(
            KaplanMeierFitter().fit(t, e).predict(h), abs=1e-12
        )
    tau = 1.5
    before = t < tau
    expected = np.zeros(len(t))
    expected[before] = (
        CensoringDistributionEstimator()
        .fit(y)
        .predict_ipcw(Surv.from_arrays(e[before].astype(bool), t[before]))
    )
    ipcw = _censoring_weights(t, e, np.ones(len(t)), tau)
    np.testing.assert_allclose(ipcw, expected, atol=1e-12)
    uno = weighted_concordance(t, e, s, ones, event_weight=ipcw**2, tau=tau)[0]
    assert uno == pytest.approx(concordance_index_ipcw(y, y, s, tau=tau)[0], abs=1e-9)
    harrell = weighted_concordance(t, e, s, ones)[0]
    assert harrell == pytest.approx(concordance_index(t, -s, e), abs=1e-12)
    full = _censoring_weights(t, e, np.ones(len(t)), np.inf)
    auc, _ = cumulative_dynamic_auc(y, y, s, [0.5, 1.0])
    mine = [weighted_auc(t, e, s, ones, full, h)[0] for h in (0.5, 1.0)]
    np.testing.assert_allclose(mine, auc, atol=1e-9)


def test_integer_weights_equal_the_cohort_with_rows_repeated():
    from sksurv.metrics import cumulative_dynamic_auc
    from sksurv.util import Surv

    t, e, s = _lung()
    w = np.random.default_rng(3).integers(1, 4, len(t)).astype(float)
    rep = np.repeat(np.arange(len(t)), w.astype(int))
    tr, er, sr = t[rep], e[rep], s[rep]
    assert weighted_km(t, e, w[None], 1.0)[0] == pytest.approx(
        KaplanMeierFitter().fit(tr, er).predict(1.0), abs=1e-12
    )
    assert weighted_concordance(t, e, s, w[None])[0] == pytest.approx(
        concordance_index(tr, -sr, er), abs=1e-12
    )
    y = Surv.from_arrays(er.astype(bool), tr)
    auc, _ = cumulative_dynamic_auc(y, y, sr, [1.0])
    ipcw = _censoring_weights(t, e, w, np.inf)
    assert weighted_auc(t, e, s, w[None], ipcw, 1.0)[0] == pytest.approx(auc[0], abs=1e-9)
    # non-integer weights: lifelines' weighted Kaplan-Meier
    u = np.random.default_rng(4).uniform(0.2, 3.0, len(t))
    with pytest.warns(Warning):  # lifelines warns that such weights are not counts
        km = KaplanMeierFitter().fit(t, e, weights=u).predict(1.0)
    assert weighted_km(t, e, u[None], 1.0)[0] == pytest.approx(km, abs=1e-12)
    assert kish_ess(np.ones(10)) == pytest.approx(10.0)


def _world(n, seed, age_mean, site_b, noise=0.5):
    """Subjects whose hazard rises with age, health and site b; the score sees age and
    health (with ``noise``) but not the site; FaceAge reads age and health. Two cohorts
    drawn with other ages and sites but the same ``noise`` differ only in case mix."""
    rng = np.random.default_rng(seed)
    age = rng.normal(age_mean, 10, n)
    site = np.where(rng.random(n) < site_b, "b", "a")
    health = rng.normal(0, 1, n)
    eta = 0.05 * (age - 60) + 0.6 * health + 0.4 * (site == "b")
    death = rng.exponential(1 / (0.15 * np.exp(eta)))
    censor = rng.uniform(1, 8, n)
    return pd.DataFrame(
        {
            "age": age,
            "sex": rng.choice(["female", "male"], n),
            "site": site,
            "time": np.minimum(death, censor),
            "event": (death <= censor).astype(int),
            "risk": 0.05 * (age - 60) + 0.6 * health + rng.normal(0, noise, n),
            "faceage": age + 4 * health + rng.normal(0, 3, n),
        }
    )


def _estimate(ref, cur, n_boot=200, outputs=("risk",)):
    settings = EstimateSettings(n_boot=n_boot)
    x_ref, x_cur, names = design(ref, cur, ["age"], ["sex", "site"])
    assert names == ["age", "sex = female", "sex = male", "site = a", "site = b"]
    weights = importance_weights(x_ref, x_cur, settings)
    table, notes = estimate_performance(ref, cur, list(outputs), weights, settings, (x_ref, x_cur))
    assert notes == []
    return table, weights


MEASURES = [("risk", "c_index", np.nan), ("risk", "calibration_in_the_large", 2.0)]


def _covered(table) -> list[bool]:
    """Whether each of :data:`MEASURES` was realised within its expected range."""
    out = []
    for output, metric, horizon in MEASURES:
        sel = table[(table["output"] == output) & (table["metric"] == metric)]
        if not np.isnan(horizon):
            sel = sel[sel["horizon"] == horizon]
        r = sel.iloc[0]
        out.append(bool(r["pred_low"] <= r["realised"] <= r["pred_high"]))
    return out


def test_a_cohort_shifted_in_age_and_site_is_estimated_from_the_reference():
    ref, cur = _world(2000, 7, 60, 0.3), _world(2000, 1007, 68, 0.6)
    table, weights = _estimate(ref, cur, outputs=("risk", "faceage"))
    assert 0.6 < weights.classifier_auc < 0.9 and weights.ok
    c = table[(table["output"] == "risk") & (table["metric"] == "c_index")].iloc[0]
    assert c["status"] == ESTIMATED and c["ci_low"] <= c["estimate"] <= c["ci_high"]
    assert c["pred_low"] <= c["realised"] <= c["pred_high"]
    # the score omits the site, so the older, site-b cohort dies sooner than it predicts:
    # calibrated on the reference, off on the new cohort, and the estimate says so
    cal = table[
        (table["output"] == "risk")
        & (table["metric"] == "calibration_in_the_large")
        & (table["horizon"] == 2.0)
    ].iloc[0]
    assert abs(cal["reference_value"]) < 0.01 and cal["ci_high"] < 0 and cal["realised"] < 0
    # FaceAge's accuracy is realised now (the new cohort has ages), and agrees
    mae = table[(table["output"] == "faceage") & (table["metric"] == "mae")].iloc[0]
    assert mae["gap_low"] <= 0 <= mae["gap_high"]
    # the same rows in another order give the same numbers
    again, _ = _estimate(
        ref.sample(frac=1, random_state=1).reset_index(drop=True),
        cur,
        outputs=("risk", "faceage"),
    )
    assert again["estimate"].to_numpy() == pytest.approx(table["estimate"].to_numpy(), abs=0.02)


@pytest.mark.slow
def test_the_estimate_covers_the_realised_values_in_at_least_45_of_50_seeds():
    hits = []
    for seed in range(50):
        table, _ = _estimate(_world(2000, seed, 60, 0.3), _world(2000, 1000 + seed, 68, 0.6))
        hits.append(_covered(table))
    assert (np.mean(hits, axis=0) >= 0.9).all(), np.mean(hits, axis=0)


def test_a_model_that_behaves_differently_shows_a_gap_once_outcomes_arrive():
    ref = _world(2000, 21, 60, 0.3)
    cur = _world(2000, 1021, 68, 0.6, noise=1.5)  # e.g. darker photos: a noisier score
    table, _ = _estimate(ref, cur)
    c = table[table["metric"] == "c_index"].iloc[0]
    assert c["gap_high"] < 0 and c["realised"] < c["pred_low"]


def test_a_cohort_the_reference_does_not_overlap_is_not_estimated():
    ref = _world(1500, 5, 50, 0.3)
    cur = _world(1500, 6, 90, 0.3)  # none of the reference is that old
    table, weights = _estimate(ref, cur.drop(columns=["time", "event"]))
    assert not weights.ok and "effective sample size" in weights.poor[0]
    assert (table["status"] == POOR_OVERLAP).all() and table["estimate"].isna().all()
    assert table["realised"].isna().all()  # no outcomes yet
    new_site = cur.assign(site="c")
    assert unseen_categories(ref, new_site, ["sex", "site"]) == [
        "site = c: 1500 new subjects, none in the reference"
    ]


@pytest.fixture(scope="module")
def monitor_runs(tmp_path_factory):
    """Rendered demo cohorts audited against a reference: a new, older cohort before its
    outcomes are known, then the same cohort with its outcomes, and a cohort with darker
    photos (30% less light) at the reference's mix."""
    import audit
    from audit.demo.world import WorldParams, write_cohort

    root = tmp_path_factory.mktemp("estimate")

    def cohort(name, seed, **params):
        return write_cohort(
            root / name, 600, seed, photos=True, oracle=True, params=WorldParams(**params)
        )

    ref_dir = cohort("ref", 11)
    new_dir = cohort("new", 12, age_mean=76.0)
    early = root / "early"
    shutil.copytree(new_dir, early)
    manifest = pd.read_csv(early / "manifest.csv")
    manifest.drop(columns=["followup_days", "death"]).to_csv(early / "manifest.csv", index=False)
    spec = yaml.safe_load((early / "cohort.yaml").read_text())
    spec["columns"] = {k: v for k, v in spec["columns"].items() if k not in ("time", "event")}
    (early / "cohort.yaml").write_text(yaml.safe_dump(spec))
    # (the stages this test does not read, off: it is about the estimate and the drift)
    config = {
        "preset": "quick",
        "fairness": {"enabled": False},
        "slices": {"enabled": False},
        "drift": {"html": False},
        "survival": {"n_boot": 0},
    }
    models = ["predictions:faceage,risk"]
    out = root / "out"
    first = audit.run(ref_dir, models, out=out, config=config)
    darker = cohort("darker", 13, light=0.7)
    runs = {
        name: audit.run(folder, models, out=out, config=config, reference=first.run_id)
        for name, folder in (("before", early), ("after", new_dir), ("darker", darker))
    }
    return runs, out


@pytest.mark.slow  # four photo cohorts audited (make test-all); estimates: the tests above
def test_a_monitor_run_estimates_and_the_next_shows_the_estimate_beside_the_realised(
    monitor_runs,
):
    runs, out = monitor_runs
    before, after = runs["before"], runs["after"]
    early = before.table("estimated_performance").set_index(["output", "metric", "horizon"])
    c = early.loc[("risk", "c_index")].iloc[0]
    assert c["status"] == ESTIMATED and np.isnan(c["realised"])
    assert early.loc[("faceage", "mae")].iloc[0]["realised"] > 0  # ages are known now
    late = after.table("estimated_performance").set_index(["output", "metric", "horizon"])
    c_late = late.loc[("risk", "c_index")].iloc[0]
    assert c_late["earlier_run"] == before.run_id
    assert c_late["earlier_estimate"] == pytest.approx(c["estimate"], abs=1e-12)
    assert c_late["pred_low"] <= c_late["realised"] <= c_late["pred_high"]
    page = before.report_path.read_text()
    assert "Performance estimated without outcomes" in page
    later_page = after.report_path.read_text()
    assert "earlier estimate" in later_page and before.run_id in later_page
    exported = pd.read_csv(after.report_path.parent / "data" / "estimated_performance.csv")
    assert len(exported) == len(late)
    (out / "page.html").write_text(later_page)  # (kept for a look)


@pytest.mark.slow  # the same audits (make test-all); case mix itself: test_casemix
def test_through_the_drift_stage_age_is_case_mix_and_darker_photos_are_not(monitor_runs):
    from audit.monitor.casemix import EXPLAINED, NOT_EXPLAINED

    runs, _ = monitor_runs
    older = runs["after"]
    mix = older.table("drift_case_mix").set_index("feature")
    drift = older.table("drift").set_index("feature")
    assert bool(drift.loc["faceage", "drifted"]) and bool(drift.loc["age", "drifted"])
    assert mix.loc["faceage", "status"] == EXPLAINED
    darker = runs["darker"]
    dark = darker.table("drift_case_mix").set_index("feature")
    assert bool(darker.table("drift").set_index("feature").loc["brightness", "drifted"])
    assert dark.loc["brightness", "status"] == NOT_EXPLAINED
    assert dark.loc["brightness", "adjusted_high"] < 0
    page = darker.report_path.read_text()
    assert "Drift explained by case mix" in page and "not explained" in page
