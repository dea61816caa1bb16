"""Slice discovery (``audit.metrics.slices``): a planted failure in a combination nobody
declared (FaceAge +4 years for dim photos of women over 75, about 5% of subjects) is found
and confirmed in at least 9 of 10 seeds; cohorts without one confirm a slice in at most 1 of
20; the lattice's counts and effects equal a direct computation; Holm equals its definition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.data.cohort import age_band
from audit.metrics.slices import (
    SliceSettings,
    band_labels,
    condition_matrix,
    discover,
    holm,
    search,
)


def _cohort(n: int, seed: int, effect: float):
    """``n`` subjects: sex, age band (<=65, 65-75, >75), photo brightness, site, camera, and
    a FaceAge that is age + N(0, 5^2), plus ``effect`` years for women over 75 whose photos
    are in the dimmest third; returns the features, the age-adjusted error and the mask."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(40, 90, n)
    sex = rng.choice(["female", "male"], n)
    brightness = rng.normal(120, 35, n)
    features = pd.DataFrame(
        {
            "sex": sex,
            "age_band": age_band(pd.Series(age), [65.0, 75.0]),
            "brightness": brightness,
            "site": rng.choice(["a", "b", "c"], n),
            "camera": rng.choice(["x", "y"], n),
        }
    )
    dim = brightness <= np.quantile(brightness, 1 / 3)
    planted = (sex == "female") & (age > 75) & dim
    faceage = age + rng.normal(0, 5, n) + effect * planted
    slope, intercept = np.polyfit(age, faceage, 1)
    return features, faceage - (intercept + slope * age), planted


def _found(result: pd.DataFrame, features: pd.DataFrame) -> bool:
    dimmest = sorted(set(band_labels(features["brightness"], "brightness", 3).dropna()))
    dimmest = min(dimmest, key=lambda label: float(label.split(" to ")[0]))
    wanted = {"sex = female", "age_band = >75", f"brightness = {dimmest}"}
    confirmed = result[result["confirmed"]]
    return any(set(s.split(" & ")) == wanted for s in confirmed["slice"])


def test_a_planted_slice_is_found_and_confirmed_in_nine_of_ten_seeds():
    hits = 0
    for seed in range(10):
        features, loss, planted = _cohort(2000, 100 + seed, 4.0)
        assert 0.03 < planted.mean() < 0.07  # about 5% of subjects
        result = discover(features, loss, SliceSettings(seed=seed), signed=True)
        hits += _found(result, features)
        if _found(result, features):
            row = result[result["confirmed"]].iloc[0]
            assert row["ci_low"] <= 4.0 + 1.5 and row["ci_high"] >= 4.0 - 1.5
    assert hits >= 9


def test_cohorts_without_a_planted_slice_confirm_one_in_at_most_one_of_twenty_seeds():
    confirmed = 0
    for seed in range(20):
        features, loss, _ = _cohort(1000, 500 + seed, 0.0)
        result = discover(features, loss, SliceSettings(seed=seed), signed=True)
        confirmed += bool(result["confirmed"].any())
    assert confirmed <= 1


def test_the_lattice_equals_a_direct_computation():
    features, loss, _ = _cohort(400, 7, 4.0)
    x, names = condition_matrix(features, 3)
    found = search(x, names, loss, SliceSettings(min_size=10, min_share=0.0), signed=True)
    assert found["conditions"].map(len).max() == 3
    for row in found.head(25).itertuples():
        members = np.all(x[:, list(row.conditions)] > 0, axis=1)
        inside, outside = loss[members], loss[~members]
        assert row.n == members.sum()
        assert row.effect == pytest.approx(inside.mean() - outside.mean(), abs=1e-9)
        welch = stats.ttest_ind(inside, outside, equal_var=False)
        assert row.t == pytest.approx(welch.statistic, rel=1e-6)
        assert len({names[c][0] for c in row.conditions}) == len(row.conditions)


def test_holm_equals_its_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_the_risk_loss_is_the_deviance_residual_of_a_breslow_hand_computation():
    from lifelines import CoxPHFitter
    from lifelines.datasets import load_rossi

    from audit.metrics.slices import output_losses

    d = load_rossi()
    t, e, x = (d[c].to_numpy(float) for c in ("week", "arrest", "prio"))
    frame = pd.DataFrame({"t": t, "e": e, "x": x})
    beta = CoxPHFitter().fit(frame, "t", "e").params_["x"]
    r = np.exp(beta * x)
    deaths = np.unique(t[e == 1])
    step = np.array([e[t == u].sum() / r[t >= u].sum() for u in deaths])
    cumulative = np.array([step[deaths <= ti].sum() for ti in t])  # Breslow
    m = e - cumulative * r  # martingale residuals
    log_term = np.where(e == 1, np.log(np.where(e == 1, e - m, 1.0)), 0.0)
    deviance = np.sign(m) * np.sqrt(-2 * (m + e * log_term))
    losses, notes = output_losses(pd.DataFrame({"time": t, "event": e, "risk": x}), "risk")
    assert notes == [] and losses[0].name == "deviance_residual" and losses[0].signed
    np.testing.assert_allclose(losses[0].values, deviance, atol=1e-9)


def test_faceage_losses_and_the_features_of_a_subject():
    from audit.metrics.slices import output_losses, slice_features

    subjects = pd.DataFrame(
        {
            "photo_id": [f"p{i}" for i in range(40)],
            "age": np.linspace(40, 80, 40),
            "faceage": np.linspace(40, 80, 40) + np.tile([2.0, -2.0], 20),
            "sex": np.tile(["female", "male"], 20),
            "cancer_type": np.tile(["breast", "cns"], 20),
        }
    )
    losses, _ = output_losses(subjects, "faceage")
    assert [x.name for x in losses] == ["abs_error", "age_adjusted_error"]
    np.testing.assert_allclose(losses[0].values, 2.0)
    assert abs(losses[1].values.mean()) < 1e-9  # a residual: no bias left on average
    props = pd.DataFrame({"photo_id": subjects["photo_id"], "brightness": np.arange(40.0)})
    vectors = pd.DataFrame(
        {"photo_id": subjects["photo_id"], "vector": [np.r_[i % 2, 0.0] for i in range(40)]}
    )
    features = slice_features(subjects, [], props, None, vectors, clusters=2)
    assert list(features.columns) == ["sex", "brightness", "embedding_cluster"]
    assert set(features["embedding_cluster"]) == {"c1", "c2"}
    assert (features["embedding_cluster"] == features["embedding_cluster"][0]).sum() == 20
    assert "cancer_type" in slice_features(subjects, [], clinical=True).columns
