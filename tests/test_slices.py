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
