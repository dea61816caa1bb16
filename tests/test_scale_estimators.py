"""Estimators for registry-sized sets, each against the exact path it replaces: linearised C
resamples (the influence values are the derivatives of the weighted C, and on 10,000 subjects
of the demo world every interval built from them agrees with the exact bootstrap's), and group
values from totals instead of fairlearn's MetricFrame (the same numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from audit.demo.world import WorldParams, simulate
from audit.metrics.accuracy import faceage_accuracy, risk_accuracy
from audit.metrics.fairness import faceage_fairness, paired_comparisons, risk_fairness
from audit.pipeline.config import SurvivalConfig, load_config
from audit.stats.bootstrap import bootstrap_weights
from audit.stats.concordance import (
    concordance_influence,
    concordance_resamples,
    weighted_concordance,
)
from audit.survival.metrics import uno_c_ci


def _tied(n, seed):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 15, n).astype(float)  # many tied times
    event = rng.integers(0, 2, n)
    risk = rng.integers(0, 8, n).astype(float)  # many tied scores
    return time, event, risk


@pytest.mark.parametrize("uno", [False, True], ids=["harrell", "event-weights-and-tau"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_influence_values_are_the_derivatives_of_the_weighted_c(seed, uno):
    n = 70
    time, event, risk = _tied(n, seed)
    ew = np.random.default_rng(seed + 10).uniform(0.5, 2.0, n) if uno else None
    tau = 10.0 if uno else None
    c, u = concordance_influence(time, event, risk, ew, tau)
    assert c == pytest.approx(weighted_concordance(time, event, risk, np.ones((1, n)), ew, tau)[0])
    if not uno:
        assert c == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)
    h = 1e-6  # C is a ratio of quadratics in the weights: central differences are exact to ~h^2
    w = np.ones((2 * n, n))
    w[2 * np.arange(n), np.arange(n)] += h
    w[2 * np.arange(n) + 1, np.arange(n)] -= h
    moved = weighted_concordance(time, event, risk, w, ew, tau)
    numeric = (moved[0::2] - moved[1::2]) / (2 * h)
    assert np.abs(numeric - u).max() < 1e-7
    assert abs(u.sum()) < 1e-12  # C does not change when every weight is scaled


def test_linear_resamples_are_the_first_order_expansion():
    time, event, risk = _tied(200, 5)
    w = bootstrap_weights(200, 50, np.random.default_rng(0))
    c, u = concordance_influence(time, event, risk)
    assert np.allclose(concordance_resamples(time, event, risk, w, 0), c + (w - 1) @ u)
    exact = concordance_resamples(time, event, risk, w, None)
    assert np.array_equal(exact, weighted_concordance(time, event, risk, w))
    # no comparable pair: NaN, as the exact C
    none = concordance_resamples(time, np.zeros(200), risk, w, 0)
    assert np.isnan(none).all()


def test_the_auto_threshold_is_per_analysed_set():
    cfg = SurvivalConfig()
    assert cfg.resamples == "auto" and cfg.linear_threshold() == 5_000
    assert SurvivalConfig(resamples="linear").linear_threshold() == 0
    assert SurvivalConfig(resamples="exact").linear_threshold() is None
    time, event, risk = _tied(300, 7)
    w = bootstrap_weights(300, 20, np.random.default_rng(0))
    exact = weighted_concordance(time, event, risk, w)
    assert np.array_equal(concordance_resamples(time, event, risk, w, 301), exact)
    assert not np.array_equal(concordance_resamples(time, event, risk, w, 300), exact)


@pytest.fixture(scope="module")
def registry():
    """10,000 subjects of the demo world (cancer population), the oracle's risk score, and a
    second, noisier score for the paired comparison."""
    df = simulate(10_000, 3, WorldParams.make("cancer"))
    df["time"] = df["time_days"] / 365.25
    df["risk_b"] = df["risk"] + np.random.default_rng(4).normal(0, 1.0, len(df))
    return df


def _agree(exact: pd.DataFrame, linear: pd.DataFrame, keys: list[str]) -> None:
    """The linearised bounds equal the exact ones up to the expansion's second-order terms,
    which shrink as 1/n: within 1e-3 of C in groups of 1,000 subjects or more, and within a
    tenth of the interval's width in groups of 250 or more (the default linearises only sets
    of 5,000 or more)."""
    a, b = exact.set_index(keys), linear.set_index(keys)
    assert len(a) == len(b) and (a.index == b.index).all()
    assert np.allclose(
        a["value"].astype(float), b["value"].astype(float), atol=1e-12, equal_nan=True
    )
    width = (a["ci_high"] - a["ci_low"]).astype(float)
    for bound in ("ci_low", "ci_high"):
        diff = (a[bound] - b[bound]).abs().astype(float)
        some = a["n"] >= 250
        assert (diff[some] < 0.1 * width[some]).all(), diff[some][diff >= 0.1 * width]
        big = a["n"] >= 1000
        assert big.sum() >= 3 and (diff[big] < 1e-3).all(), diff[big].max()


def test_accuracy_c_intervals_linear_vs_exact_on_ten_thousand(registry):
    cfg = load_config(accuracy={"n_boot": 200}, survival={"n_boot": 200})
    out = {}
    for mode in ("exact", "linear"):  # 'linear': every set, not only those of 5,000 or more
        surv = cfg.survival.model_copy(update={"resamples": mode})
        out[mode] = risk_accuracy(registry, "m", cfg.accuracy, surv)
    assert len(out["exact"]) > 10
    _agree(out["exact"], out["linear"], ["attribute", "group_name"])


def test_uno_c_interval_linear_vs_exact(registry):
    t, e, s = (registry[c].to_numpy(float) for c in ("time", "event", "risk"))
    exact = uno_c_ci(t, e.astype(int), s, 2.0, 200, np.random.default_rng(0))
    linear = uno_c_ci(t, e.astype(int), s, 2.0, 200, np.random.default_rng(0), linear_from=0)
    assert np.allclose(exact, linear, atol=1e-3)


def test_fairness_and_paired_c_intervals_linear_vs_exact(registry):
    cfg = load_config(fairness={"n_boot": 200}).fairness
    cuts = load_config().accuracy.age_bands
    tables = {
        linear: risk_fairness(registry, "m", cfg, cuts, linear_from=0 if linear else None)
        for linear in (False, True)
    }
    exact, lin = (tables[k][tables[k]["metric"] == "c_index"] for k in (False, True))
    assert len(exact) > 20
    _agree(exact, lin, ["metric", "attribute", "group_name"])
    # the same groups get the same verdicts (no group sits on a tolerance edge here)
    big = exact["n"].to_numpy() >= 250
    assert (exact["status"].to_numpy()[big] == lin["status"].to_numpy()[big]).all()
    frames = {
        "a": registry.drop(columns="risk_b"),
        "b": registry.drop(columns="risk").rename(columns={"risk_b": "risk"}),
    }
    pairs = {
        linear: paired_comparisons(frames, "risk", cfg, cuts, linear_from=0 if linear else None)
        for linear in (False, True)
    }
    _agree(
        pairs[False].rename(columns={"diff": "value"}),
        pairs[True].rename(columns={"diff": "value"}),
        ["attribute", "group_name"],
    )
    assert (pairs[False]["ci_low"] > 0).any()  # the noisier score is worse somewhere, both ways
    big = pairs[False]["n"] >= 250
    assert ((pairs[False]["ci_low"] > 0) == (pairs[True]["ci_low"] > 0))[big].all()


def test_group_values_from_totals_equal_fairlearns():
    """Above ``fairlearn_max_rows`` the accuracy and fairness tables take their group values
    from the engine's totals (FaceAge) or the metric callables on each group's rows (risk):
    every value equals fairlearn's MetricFrame to 1e-9, every interval is the same."""
    df = simulate(3000, 8, WorldParams.make("cancer"))
    df["time"] = df["time_days"] / 365.25
    small = {"n_boot": 50}
    tables = {}
    for rows in (50_000, 0):
        cfg = load_config(
            accuracy={**small, "fairlearn_max_rows": rows},
            fairness={**small, "fairlearn_max_rows": rows},
        )
        cuts = cfg.accuracy.age_bands
        tables[rows] = [
            faceage_accuracy(df, "m", cfg.accuracy),
            faceage_fairness(df, "m", cfg.fairness, cuts),
            risk_fairness(df, "m", cfg.fairness, cuts),
        ]
    for fairlearn, totals in zip(tables[50_000], tables[0]):
        assert len(fairlearn) > 30 and list(fairlearn.columns) == list(totals.columns)
        for column in fairlearn.columns:
            a, b = fairlearn[column], totals[column]
            if pd.api.types.is_float_dtype(a):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=column)
            else:
                assert (a.astype(str) == b.astype(str)).all(), column


@pytest.mark.parametrize("seed", [0, 1])
def test_net_benefit_influence_values_are_the_derivatives(seed):
    """Each subject's influence on the net benefit at every threshold equals the central
    difference of the weighted Kaplan-Meier net benefit (the weighted pass runs in float32,
    so the step is 1e-2 and the second-order error about 1e-5); acting on no one is 0, acting
    on all has no share term."""
    from audit.decisions.curves import net_benefit, net_benefit_influence

    rng = np.random.default_rng(seed)
    n = 90
    t = rng.integers(1, 20, n).astype(float)  # tied times
    e = rng.integers(0, 2, n).astype(float)
    p = rng.uniform(size=n)
    thresholds = np.array([0.1, 0.3, 0.5, 0.7, 0.999])
    positive = p[:, None] >= thresholds[None, :]
    positive[:, 1] = True  # acting on everyone at 0.3
    positive[:, 4] = False  # on no one at 0.999
    point, influence = net_benefit_influence(t, e, positive, thresholds, 10.0)
    np.testing.assert_allclose(point, net_benefit(t, e, positive, thresholds, 10.0)[0], atol=1e-12)
    h = 1e-2
    w = np.ones((2 * n, n))
    w[2 * np.arange(n), np.arange(n)] += h
    w[2 * np.arange(n) + 1, np.arange(n)] -= h
    moved = net_benefit(t, e, positive, thresholds, 10.0, w)
    numeric = (moved[0::2] - moved[1::2]) / (2 * h)
    assert np.abs(numeric - influence).max() < 1e-4
    assert np.abs(influence).max() > 1e-3 and np.abs(influence[:, 4]).max() < 1e-12
    # the follow-up stops short of the horizon: NaN, as the weighted pass says
    short, _ = net_benefit_influence(t, e, positive, thresholds, 25.0)
    assert np.isnan(net_benefit(t, e, positive, thresholds, 25.0)[0][0]) == np.isnan(short[0])


def test_decision_curve_intervals_linear_vs_exact_on_ten_thousand(registry):
    """On 10,000 subjects every strategy's net benefit, its differences to treat-all and to
    age keep their values, and the linearised intervals agree with the exact ones within a
    tenth of their width (and within 2e-4 of net benefit; measured: 3e-5)."""
    from audit.decisions.curves import decision_curve

    t = registry["time"].to_numpy(float)
    e = registry["event"].to_numpy(float)
    prob = 1 / (1 + np.exp(-(registry["risk"].to_numpy(float) - 1.0)))
    age = np.clip((registry["age"].to_numpy(float) - 30) / 70, 0.01, 0.99)
    grid = [0.1, 0.2, 0.3, 0.4, 0.5]
    curves = {
        linear: decision_curve(
            "m",
            "risk",
            t,
            e,
            prob,
            1.0,
            grid,
            age_probability=age,
            n_boot=200,
            linear_from=0 if linear else None,
        )  # fmt: skip
        for linear in (False, True)
    }
    exact, lin = curves[False], curves[True]
    assert (
        len(exact) == 15
        and (exact[["strategy", "threshold"]] == lin[["strategy", "threshold"]]).all().all()
    )
    np.testing.assert_allclose(exact["net_benefit"], lin["net_benefit"], atol=1e-12)
    for low, high in (("ci_low", "ci_high"), ("diff_treat_all_low", "diff_treat_all_high")):
        width = (exact[high] - exact[low]).to_numpy(float)
        for bound in (low, high):
            diff = np.abs(exact[bound] - lin[bound]).to_numpy(float)
            ok = np.isfinite(diff)
            assert ok.sum() >= 5
            assert (diff[ok] < 2e-4).all() and (diff[ok] <= 0.1 * width[ok]).all(), bound
