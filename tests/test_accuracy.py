"""Accuracy: the vectorised subject bootstrap against fairlearn, planted biases, clustering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.metrics.accuracy import bootstrap_c, faceage_accuracy, harrell_c, risk_accuracy
from audit.pipeline.config import AccuracyConfig, SurvivalConfig
from audit.stats.bootstrap import SubjectBootstrap, percentile_ci


def _cohort(n=2000, seed=0, bias=None, photos_per_subject=1):
    rng = np.random.default_rng(seed)
    subjects = n // photos_per_subject
    sid = np.repeat([f"S{i}" for i in range(subjects)], photos_per_subject)
    group = np.repeat(
        rng.choice(["A", "B", "C"], size=subjects, p=[0.6, 0.3, 0.1]), photos_per_subject
    )
    age = np.repeat(rng.uniform(30, 90, subjects), photos_per_subject)
    subject_error = np.repeat(rng.normal(0, 4, subjects), photos_per_subject)
    faceage = age + subject_error + rng.normal(0, 1, len(sid))
    if bias:
        for g, years in bias.items():
            faceage = faceage + np.where(group == g, years, 0.0)
    return pd.DataFrame(
        {
            "photo_id": [f"P{i}" for i in range(len(sid))],
            "subject_id": sid,
            "race": group,
            "age": age,
            "faceage": faceage,
        }
    )


def _get(frame, metric, attribute="all", group="all"):
    return frame[
        (frame.metric == metric) & (frame.attribute == attribute) & (frame.group_name == group)
    ].iloc[0]


def test_point_estimates_equal_a_boolean_mask_oracle():
    df = _cohort()
    res = faceage_accuracy(df, "m", AccuracyConfig(n_boot=0, groups=["race"]))
    for g in "ABC":
        sub = df[df.race == g]
        e = sub.faceage - sub.age
        assert _get(res, "mae", "race", g).value == pytest.approx(np.abs(e).mean())
        assert _get(res, "mean_error", "race", g).value == pytest.approx(e.mean())
        assert _get(res, "within_5y", "race", g).value == pytest.approx((np.abs(e) <= 5).mean())
        assert _get(res, "pearson_r", "race", g).value == pytest.approx(
            np.corrcoef(sub.age, sub.faceage)[0, 1]
        )


def test_bootstrap_cis_agree_with_fairlearn():
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import mean_absolute_error

    df = _cohort(n=1500, seed=1)
    ours = faceage_accuracy(df, "m", AccuracyConfig(n_boot=2000, groups=["race"], seed=3))
    mf = MetricFrame(
        metrics={"mae": mean_absolute_error},
        y_true=df.age,
        y_pred=df.faceage,
        sensitive_features=df.race,
        n_boot=150,
        ci_quantiles=[0.025, 0.975],
        random_state=7,
    )
    low, high = mf.by_group_ci
    for g in "ABC":
        row = _get(ours, "mae", "race", g)
        width = row.ci_high - row.ci_low
        fl_width = high.loc[g, "mae"] - low.loc[g, "mae"]
        assert row.value == pytest.approx(mf.by_group.loc[g, "mae"])
        assert width == pytest.approx(fl_width, rel=0.2)  # 150 fairlearn resamples are noisy
        assert row.ci_low == pytest.approx(low.loc[g, "mae"], abs=0.15 * width)


def test_planted_subgroup_bias_is_recovered_within_its_ci():
    df = _cohort(n=3000, seed=2, bias={"B": 3.0})
    res = faceage_accuracy(df, "m", AccuracyConfig(n_boot=1000, groups=["race"]))
    b = _get(res, "mean_error", "race", "B")
    a = _get(res, "mean_error", "race", "A")
    assert b.ci_low < 3.0 < b.ci_high
    assert a.ci_low < 0.0 < a.ci_high


def test_subjects_not_photos_are_resampled():
    # 5 photos per subject share the subject's error: a photo bootstrap would be too narrow.
    df = _cohort(n=2000, seed=4, photos_per_subject=5)
    res = faceage_accuracy(df, "m", AccuracyConfig(n_boot=1000, groups=[]))
    row = _get(res, "mean_error")
    assert row.n == 2000 and row.n_subjects == 400
    width = row.ci_high - row.ci_low
    naive = 2 * 1.96 * (df.faceage - df.age).std() / np.sqrt(len(df))
    clustered = 2 * 1.96 * (df.faceage - df.age).groupby(df.subject_id).mean().std() / np.sqrt(400)
    assert width == pytest.approx(clustered, rel=0.15)
    assert width > 1.8 * naive


def test_small_groups_are_marked_not_judged():
    df = _cohort(n=300, seed=5)
    res = faceage_accuracy(df, "m", AccuracyConfig(n_boot=50, groups=["race"], min_group_size=40))
    small = res[(res.attribute == "race") & (res.group_name == "C")]
    assert (small.status == "too_small").all() and (small.n_subjects < 40).all()
    assert (res[res.attribute == "all"].status == "ok").all()


def test_bootstrap_totals_match_explicit_resampling():
    rng = np.random.default_rng(0)
    ids = np.array(["a", "a", "b", "c", "c", "c"])
    values = np.arange(6, dtype=float)
    boot = SubjectBootstrap.draw(ids, n_boot=5, rng=rng)
    point, samples = boot.totals(values)
    assert point[0, 0] == values.sum()
    uniques = np.unique(ids)
    per_subject = np.array([values[ids == u].sum() for u in uniques])
    assert np.allclose(samples[:, 0, 0], boot.counts @ per_subject)
    assert (boot.counts.sum(axis=1) == 3).all()
    low, high = percentile_ci(np.arange(101.0)[:, None], 0.9)
    assert low[0] == pytest.approx(5.0) and high[0] == pytest.approx(95.0)


def test_harrell_c_known_values():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 1, 0])
    assert harrell_c(time, event, np.array([4.0, 3.0, 2.0, 1.0])) == 1.0
    assert harrell_c(time, event, np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert np.isnan(harrell_c(time, np.zeros(4), time))
    c, low, high = bootstrap_c(time, event, -time, 50, np.random.default_rng(0))
    assert c == 1.0 and low == 1.0 and high == 1.0


def test_risk_c_index_per_group(tmp_path):
    from audit.demo.world import simulate

    d = simulate(1500, seed=8)
    d["time"] = d["time_days"] / 365.25
    res = risk_accuracy(d, "oracle", AccuracyConfig(groups=["sex"]), SurvivalConfig(n_boot=50))
    overall = _get(res, "c_index")
    assert overall.value == pytest.approx(harrell_c(d.time, d.event, d.risk))
    assert 0.6 < overall.ci_low < overall.value < overall.ci_high
    assert set(res.group_name) == {"all", "female", "male"}
