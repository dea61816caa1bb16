"""Decision curves (net benefit): equal to dcurves, the reference implementation of the
method's authors, on its own survival data; exact by counting without censoring; the weighted
Kaplan-Meier equal to lifelines'; a planted true-risk model recovered within its CIs; a
useless score never called useful. The rows, page, model card and export of a run are
checked in test_flow's end-to-end run."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from conftest import cli_run

from audit.decisions.curves import (
    COLUMNS,
    decision_curve,
    default_thresholds,
    net_benefit,
    score_decision_curves,
    threshold_runs,
    useful_thresholds,
)

THRESHOLDS = default_thresholds(0.05, 0.5, 0.05)


@pytest.fixture(scope="module")
def df_surv() -> pd.DataFrame:
    """dcurves' survival example (750 patients, time to cancer diagnosis in years), the
    data of R dcurves' vignette, shipped inside the Python package."""
    import dcurves

    return pd.read_csv(os.path.join(dcurves.data, "df_surv.csv"))


def test_net_benefit_equals_dcurves_on_its_survival_data(df_surv):
    # Python dcurves 1.1.7 (MSKCC, Vickers' group):
    #   dca(data=df_surv, outcome="cancer", modelnames=["cancerpredmarker"],
    #       thresholds=THRESHOLDS, time=1.5, time_to_outcome_col="ttcancer")
    from dcurves import dca

    ref = dca(
        data=df_surv,
        outcome="cancer",
        modelnames=["cancerpredmarker"],
        thresholds=THRESHOLDS,
        time=1.5,
        time_to_outcome_col="ttcancer",
    )
    p = df_surv["cancerpredmarker"].to_numpy()
    positive = p[:, None] >= np.array(THRESHOLDS)[None, :]
    event = df_surv["cancer"].astype(float)
    ours = net_benefit(df_surv["ttcancer"], event, positive, THRESHOLDS, 1.5)[0]
    treat_all = net_benefit(df_surv["ttcancer"], event, np.ones_like(positive), THRESHOLDS, 1.5)[0]
    np.testing.assert_allclose(
        ours, ref[ref["model"] == "cancerpredmarker"]["net_benefit"], atol=1e-12
    )
    np.testing.assert_allclose(treat_all, ref[ref["model"] == "all"]["net_benefit"], atol=1e-12)
    curve = decision_curve("m", "risk", df_surv["ttcancer"], event, p, 1.5, THRESHOLDS, n_boot=0)
    ia = ref[ref["model"] == "cancerpredmarker"]["net_intervention_avoided"].to_numpy()
    model = curve[curve["strategy"] == "model"]
    np.testing.assert_allclose(model["interventions_avoided"].to_numpy() / 100, ia, atol=1e-12)


def test_without_censoring_net_benefit_is_a_count():
    rng = np.random.default_rng(4)
    n = 500
    time = rng.exponential(2.0, n)
    event = np.ones(n)
    p = rng.random(n)
    h = 1.5
    nb = net_benefit(time, event, p[:, None] >= np.array(THRESHOLDS)[None, :], THRESHOLDS, h)[0]
    died = time <= h
    for j, pt in enumerate(THRESHOLDS):
        acted = p >= pt
        tp, fp = (acted & died).sum(), (acted & ~died).sum()
        assert nb[j] == pytest.approx(tp / n - fp / n * pt / (1 - pt), abs=1e-12)


def test_positives_who_all_died_before_the_horizon_have_risk_one():
    """Kaplan-Meier falls to 0 when everyone at risk dies, and stays there: the net benefit
    is defined at the horizon. A last subject censored before it leaves S(h) unknown."""
    time = np.array([0.2, 0.5, 0.8, 3.0, 4.0, 0.3])
    event = np.array([1, 1, 1, 0, 0, 0], float)
    died = np.array([True, True, True, False, False, False])[:, None]
    assert net_benefit(time, event, died, [0.5], 2.0)[0, 0] == pytest.approx(3 / 6)
    censored = np.array([True, False, False, False, False, True])[:, None]  # last: censored
    assert np.isnan(net_benefit(time, event, censored, [0.5], 2.0)[0, 0])


def test_weighted_kaplan_meier_equals_lifelines_with_weights():
    """Each bootstrap row goes through one vectorised Kaplan-Meier pass; lifelines with the
    same case weights on the real NCCTG lung data (ties and censoring) gives the same."""
    from lifelines import KaplanMeierFitter
    from lifelines.datasets import load_lung

    from audit.stats.bootstrap import bootstrap_weights

    lung = load_lung().dropna(subset=["time", "status"])
    time, event = lung["time"].to_numpy(float), (lung["status"] == 2).astype(float).to_numpy()
    h = 365.0
    w = bootstrap_weights(len(time), 5, np.random.default_rng(0))
    share = np.full((len(time), 1), True)
    nb = net_benefit(time, event, share, [0.2], h, w)[:, 0]
    for b in range(len(w)):
        keep = w[b] > 0
        km = KaplanMeierFitter().fit(time[keep], event[keep], weights=w[b][keep])
        risk = 1 - float(km.survival_function_at_times(h).iloc[0])
        assert nb[b] == pytest.approx(risk - (1 - risk) * 0.25, abs=1e-10)


def _planted(n: int, seed: int, censor: bool = True):
    """Exponential survival with a known rate per patient: the true risk of death within
    ``h`` is ``1 - exp(-rate h)``; independent uniform censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rate = 0.25 * np.exp(0.9 * x)
    t = rng.exponential(1 / rate)
    c = rng.uniform(0.5, 6.0, n) if censor else np.full(n, np.inf)
    return np.minimum(t, c), (t <= c).astype(float), x, rate


def test_planted_true_risk_recovered_within_its_intervals():
    h = 2.0
    time, event, _, rate = _planted(3000, seed=11)
    truth_p = 1 - np.exp(-rate * h)
    # the population net benefit of acting on the true risk, from a million patients
    _, _, _, big_rate = _planted(1_000_000, seed=99, censor=False)
    big_p = 1 - np.exp(-big_rate * h)
    grid = default_thresholds(0.05, 0.6, 0.05)
    expected = np.array(
        [np.mean((big_p >= pt) * (big_p - (1 - big_p) * pt / (1 - pt))) for pt in grid]
    )
    curve = decision_curve("oracle", "risk", time, event, truth_p, h, grid, n_boot=300, seed=1)
    model = curve[curve["strategy"] == "model"].reset_index(drop=True)
    covered = (model["ci_low"] <= expected) & (expected <= model["ci_high"])
    assert covered.sum() >= len(grid) - 1, model.assign(expected=expected)
    # the true risk is useful over a wide range, and it is never worse than treating all
    assert len(useful_thresholds(curve)) >= 8
    assert (model["diff_treat_all_high"] >= -1e-12).all()


def test_useless_score_is_never_called_useful():
    time, event, _, _ = _planted(2000, seed=5)
    noise = np.random.default_rng(6).normal(size=len(time))
    curves = score_decision_curves(
        "noise",
        "risk",
        time,
        event,
        noise,
        horizons=[2.0],
        thresholds=default_thresholds(),
        n_boot=200,
        seed=0,
    )
    assert set(curves["strategy"]) == {"model", "treat_all"}  # no age given
    assert useful_thresholds(curves) == []


def test_cross_fitted_score_beats_age_where_it_carries_the_signal():
    time, event, x, _ = _planted(2000, seed=21)
    age = 60 + 10 * np.random.default_rng(22).normal(size=len(time))  # unrelated to death
    curves = score_decision_curves(
        "m",
        "risk",
        time,
        event,
        x,
        age,
        horizons=[1.0, 2.0, 50.0],
        thresholds=default_thresholds(),
        n_boot=200,
        seed=0,
    )
    assert sorted(curves["horizon"].unique()) == [1.0, 2.0]  # 50 years: beyond follow-up
    assert list(curves.columns) == COLUMNS
    two = curves[curves["horizon"] == 2.0]
    assert len(useful_thresholds(two, "chronological_age")) >= 5
    age_rows = two[two["strategy"] == "chronological_age"]  # age says nothing here
    assert not ((age_rows["ci_low"] > 0) & (age_rows["diff_treat_all_low"] > 0)).any()


def test_threshold_runs_reads_as_ranges():
    grid = default_thresholds()
    assert threshold_runs([0.1, 0.15, 0.2, 0.5], grid) == "10-20%, 50%"
    assert threshold_runs([], grid) == "none"
    assert threshold_runs([0.9], grid) == "90%"


@pytest.fixture(scope="module")
def two_scores() -> pd.DataFrame:
    """Decision curves at 2 years of a score that carries the risk and of noise."""
    time, event, x, _ = _planted(2000, seed=31)
    noise = np.random.default_rng(32).normal(size=len(time))
    return pd.concat(
        [
            score_decision_curves(name, "risk", time, event, s, horizons=[2.0], n_boot=200, seed=0)
            for name, s in (("signal", x), ("noise", noise))
        ],
        ignore_index=True,
    )


def _net_benefit_verdicts(curves, has_outcomes=True, **thresholds):
    from audit.pipeline.config import Thresholds
    from audit.pipeline.verdict import Evidence, evaluate

    models = [{"name": n, "outputs": ["risk"], "needs_images": False} for n in ("signal", "noise")]
    v = evaluate(
        Evidence(
            models=models,
            n_manifest_rows=10,
            n_quarantined=0,
            has_outcomes=has_outcomes,
            thresholds=Thresholds(**thresholds),
            tables={
                "accuracy": pd.DataFrame(columns=["model", "output", "metric", "attribute"]),
                "survival_terms": pd.DataFrame(columns=["model", "model_id", "term"]),
                "decision_curves": curves,
            },
        )
    )
    return v[v["check_name"] == "risk_net_benefit"].set_index("model")


def test_declared_utility_range_passes_the_signal_and_fails_noise(two_scores):
    # 39% die within 2 years: below about 20% the best is to treat everyone
    v = _net_benefit_verdicts(two_scores, net_benefit_range=[0.25, 0.5], net_benefit_horizon=2.0)
    assert v.loc["signal", "status"] == "pass" and v.loc["signal", "value"] == 1.0
    assert "at 6 of 6 thresholds in 25% to 50% at 2 years" in v.loc["signal", "details"]
    assert v.loc["noise", "status"] == "fail" and v.loc["noise", "value"] == 0.0
    assert "not at 25-50%" in v.loc["noise", "details"]


def test_utility_is_not_judged_without_a_declared_range(two_scores):
    assert _net_benefit_verdicts(two_scores).empty


def test_utility_check_is_skipped_where_the_curve_is_missing(two_scores):
    v = _net_benefit_verdicts(two_scores, net_benefit_range=[0.1, 0.2], net_benefit_horizon=5.0)
    assert (v["status"] == "skipped").all()
    assert "no decision curve at 5 years" in v.loc["signal", "details"]
    v = _net_benefit_verdicts(None, has_outcomes=False, net_benefit_range=[0.1, 0.2])
    assert v.loc["signal", "details"] == "the cohort has no outcomes"


@pytest.mark.parametrize(
    "bad", [[0.3], [0.4, 0.2], [0.0, 0.5], [0.2, 1.0]], ids=["one-value", "reversed", "zero", "one"]
)
def test_a_bad_utility_range_is_refused_with_its_value(bad):
    from pydantic import ValidationError

    from audit.pipeline.config import Thresholds

    with pytest.raises(ValidationError, match="net_benefit_range takes two"):
        Thresholds(net_benefit_range=bad)


def test_a_config_error_prints_its_brackets(tmp_path, capfd):
    """The CLI prints error text as text: a message quoting ``[low, high]`` (or a term such
    as ``sex[female]``) is not eaten as console markup."""

    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds]\nnet_benefit_range = [0.4, 0.2]\n")
    assert cli_run(tmp_path, "predictions:faceage", tmp_path / "out", config=bad) == 2
    captured = capfd.readouterr()
    # the console wraps long lines anywhere (inside a long temporary path too)
    printed = "".join((captured.out + captured.err).split())
    assert "bad.toml" in printed and "[low,high]" in printed and "[0.4,0.2]" in printed


def _clinic(n: int, seed: int):
    """Death driven by a clinical factor ``c`` and, independently of it, a face signal
    ``x``: the true log-hazard is ``0.8 c + 0.9 x``; uniform censoring."""
    rng = np.random.default_rng(seed)
    c, x = rng.normal(size=n), rng.normal(size=n)
    rate = 0.25 * np.exp(0.8 * c + 0.9 * x)
    t = rng.exponential(1 / rate)
    cens = rng.uniform(0.5, 6.0, n)
    return np.minimum(t, cens), (t <= cens).astype(float), c, x


def test_a_face_signal_beyond_the_clinic_adds_net_benefit():
    """The planted face signal raises net benefit over the clinical model, with the gain's
    CI above zero over a range of thresholds; a noise 'face model' gains nothing."""
    from audit.decisions.curves import nested_decision_curves

    time, event, c, x = _clinic(3000, seed=41)
    noise = np.random.default_rng(42).normal(size=len(time))
    grid = default_thresholds()
    out = {}
    for name, face in (("signal", x), ("noise", noise)):
        out[name] = nested_decision_curves(
            name,
            [("clinical", c[:, None]), ("clinical+face", np.c_[c, face])],
            time,
            event,
            horizons=[2.0],
            thresholds=grid,
            n_boot=200,
            seed=0,
        )
    sig = out["signal"]
    assert list(sig.columns) == COLUMNS
    assert set(sig["model_id"]) == {"clinical", "clinical+face"}
    step = sig[(sig["model_id"] == "clinical+face") & (sig["strategy"] == "model")]
    assert (step["compared_to"] == "clinical").all()
    base = sig[(sig["model_id"] == "clinical") & (sig["strategy"] == "model")]
    assert base["compared_to"].isna().all()
    # the gain is the difference of the two curves, paired on the same resamples
    np.testing.assert_allclose(
        step["diff_compared"].to_numpy(),
        step["net_benefit"].to_numpy() - base["net_benefit"].to_numpy(),
    )
    seen = step["diff_compared"].notna()  # NaN: the few acted on at 90% are not followed to 2 y
    assert seen.sum() >= len(grid) - 2
    assert (step["diff_compared_low"][seen] <= step["diff_compared"][seen]).all()
    assert len(useful_thresholds(step, "compared")) >= 6
    noisy = out["noise"]
    noisy_step = noisy[(noisy["model_id"] == "clinical+face") & (noisy["strategy"] == "model")]
    assert useful_thresholds(noisy_step, "compared") == []
    # one treat-all curve per horizon, under the first step
    all_rows = sig[sig["strategy"] == "treat_all"]
    assert len(all_rows) == len(grid) and (all_rows["model_id"] == "clinical").all()


def test_cross_fitting_a_design_matrix_pairs_with_the_single_score():
    """One column as a matrix is the single score; a rare category missing from a fold's
    training subjects is left out of that fold, not a failed fit."""
    from audit.survival.metrics import crossfit_survival

    time, event, c, x = _clinic(400, seed=43)
    one = crossfit_survival(time, event, c, [1.0, 2.0], seed=3)
    np.testing.assert_allclose(crossfit_survival(time, event, c[:, None], [1.0, 2.0], seed=3), one)
    rare = np.zeros(len(time))
    rare[7] = 1.0  # one subject in the category: absent from the training of its own fold
    both = crossfit_survival(time, event, np.c_[c, rare], [1.0, 2.0], seed=3)
    assert np.isfinite(both).all() and ((both > 0) & (both < 1)).all()


def test_incremental_value_gives_the_nested_decision_curves():
    from audit.data.cohort import Covariate
    from audit.demo.world import simulate
    from audit.survival.incremental import incremental_value

    df = simulate(1500, 6)
    df["time"] = df["time_days"] / 365.25
    out = incremental_value(
        df,
        [Covariate(name="ecog", type="numeric")],
        faceage_model="fa",
        risk_model="rk",
        n_boot=50,
        decision_horizons=[1.0, 2.0],
    )
    d = out["decision_curves"]
    assert sorted(d["horizon"].unique()) == [1.0, 2.0]
    assert (d["model"] == "fa + rk").all() and (d["n"] == len(df)).all()
    chain = (
        d[d["strategy"] == "model"].drop_duplicates("model_id").set_index("model_id")["compared_to"]
    )
    assert chain.index.tolist() == [
        "incremental__clinical",
        "incremental__clinical+faceage",
        "incremental__clinical+faceage+risk",
    ]
    assert pd.isna(chain.iloc[0]) and chain.iloc[1:].tolist() == [
        "incremental__clinical",
        "incremental__clinical+faceage",
    ]
    assert incremental_value(df, [], faceage_model="fa", risk_model=None, n_boot=20)[
        "decision_curves"
    ].empty  # no horizons asked
