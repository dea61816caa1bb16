"""Drift explained by case mix (``audit.monitor.casemix``): a cohort that is only older
drifts in FaceAge, and the drift is explained by its age mix; a cohort with darker photos at
the same mix drifts in brightness, and it is not; a site share that follows age is explained
by the age mix; the raw distance is evidently's drift effect. Through the drift stage, on
rendered photos: ``tests/test_estimate.py`` (its monitor runs serve both)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.monitor.casemix import EXPLAINED, NO_DRIFT, NOT_EXPLAINED, explain_drift
from audit.monitor.estimate import EstimateSettings

FEATURES = [
    ("brightness", "images", "num", None),
    ("site", "metadata", "cat", None),
    ("m:faceage", "predictions", "num", "m"),
]


def _photos(n, seed, age_shift=0.0, darker=0.0):
    """Photos whose FaceAge reads age (plus noise), whose site is b more often when older,
    and whose brightness is the camera's alone (minus ``darker``)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60 + age_shift, 10, n)
    older = 1 / (1 + np.exp(-(age - 65) / 5))
    return pd.DataFrame(
        {
            "age": age,
            "sex": rng.choice(["female", "male"], n),
            "race": rng.choice(["White", "Black", "Asian"], n, p=[0.6, 0.2, 0.2]),
            "site": np.where(rng.random(n) < older, "b", "a"),
            "brightness": rng.normal(120 - darker, 30, n),
            "m:faceage": age + rng.normal(0, 5, n),
        }
    )


def _explain(cur, drifted):
    table, note = explain_drift(
        _photos(1500, 1), cur, FEATURES, EstimateSettings(n_boot=100), drifted
    )
    assert note is None
    return table.set_index("feature")


def test_an_older_cohort_drifts_and_its_case_mix_explains_it():
    drifted = {(None, "site"): True, ("m", "m:faceage"): True, (None, "brightness"): False}
    table = _explain(_photos(1500, 2, age_shift=10), drifted)
    face = table.loc["m:faceage"]
    assert face["raw_shift"] == pytest.approx(10, abs=1.5)  # FaceAge 10 years older
    assert face["adjusted_low"] <= 0 <= face["adjusted_high"]
    assert face["status"] == EXPLAINED and face["explained_share"] > 0.8
    assert table.loc["site", "status"] == EXPLAINED  # site b follows age
    assert table.loc["site", "adjusted_distance"] < table.loc["site", "raw_distance"] / 2
    assert table.loc["brightness", "status"] == NO_DRIFT
    assert "age" not in table.index and "sex" not in table.index  # the mix itself


def test_darker_photos_at_the_same_mix_are_not_explained_by_it():
    drifted = {(None, "brightness"): True, ("m", "m:faceage"): False, (None, "site"): False}
    table = _explain(_photos(1500, 3, darker=25), drifted)
    bright = table.loc["brightness"]
    assert bright["raw_shift"] == pytest.approx(-25, abs=4)
    assert bright["adjusted_high"] < 0 and bright["status"] == NOT_EXPLAINED
    assert bright["explained_share"] < 0.25
    assert table.loc["m:faceage", "status"] == NO_DRIFT


def test_the_raw_distance_is_evidentlys_drift_effect():
    from audit.monitor.drift import feature_drift

    ref, cur = _photos(800, 4), _photos(800, 5, age_shift=5, darker=10)
    rows, _ = feature_drift(ref, cur, FEATURES)
    effect = {r["feature"]: r["effect"] for r in rows}
    table, _ = explain_drift(ref, cur, FEATURES, EstimateSettings(n_boot=20))
    for row in table.itertuples():
        assert row.raw_distance == pytest.approx(effect[row.feature], abs=1e-9)


def test_embeddings_that_follow_age_are_explained_and_a_shift_at_the_same_mix_is_not():
    from audit.monitor.casemix import case_mix_weights, explain_embeddings
    from audit.monitor.drift import embedding_drift
    from audit.pipeline.config import DriftConfig

    config = DriftConfig(n_permutations=200, embedding_max_n=600)
    settings = EstimateSettings(n_boot=20)

    def vectors(frame, seed, offset=0.0):
        rng = np.random.default_rng(seed)
        age = (frame["age"].to_numpy() - 60) / 10
        return np.column_stack([age, -age, age**2]) + rng.normal(0, 1, (len(frame), 3)) + offset

    ref = _photos(1500, 11)
    older, shifted = _photos(1500, 12, age_shift=10), _photos(1500, 13)
    for cur, offset, status in ((older, 0.0, EXPLAINED), (shifted, 0.6, NOT_EXPLAINED)):
        weights = case_mix_weights(ref, cur, settings)[0]
        xr, xc = vectors(ref, 1), vectors(cur, 2, offset)
        raw = embedding_drift(xr, xc, "m", config)
        assert raw["p_value"] < 0.01  # both drift before reweighting
        row = explain_embeddings(xr, xc, weights.w, "m", config, True, raw)
        assert row["status"] == status, row
    assert row["adjusted_distance"] > 0.5 * row["raw_distance"]  # the shift stays
