"""Slice discovery (``audit.metrics.slices``): a planted failure in a combination nobody
declared (FaceAge +4 years for dim photos of women over 75, about 5% of subjects) is found
and confirmed in at least 9 of 10 seeds; cohorts without one confirm a slice in at most 1 of
20; the lattice's counts and effects equal a direct computation; Holm equals its definition."""

from __future__ import annotations

import base64
import html
import io

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


def _table(rows):
    """A ``slices`` table of (loss, conditions, confirmed) for one model and output."""
    import json

    return pd.DataFrame(
        [
            {
                "model": "m",
                "output": "faceage",
                "loss": loss,
                "slice": " & ".join(f"{f} = {v}" for f, v in conds),
                "conditions": json.dumps([list(c) for c in conds]),
                "confirmed": confirmed,
            }
            for loss, conds, confirmed in rows
        ]
    )


def test_a_confirmed_slice_is_a_finding_unless_declared_a_narrowing_or_on_a_health_feature():
    from audit.metrics.slices import judged

    table = _table(
        [
            ("abs_error", [("age_band", "65-75")], True),  # a declared subgroup
            ("abs_error", [("age_band", "65-75"), ("sex", "male")], True),  # narrows it
            ("abs_error", [("brightness", "3 to 80"), ("camera", "x")], True),  # a finding
            ("abs_error", [("site", "a")], False),
            ("age_adjusted_error", [("embedding_cluster", "c2")], True),  # health: reported
            ("abs_error", [("embedding_cluster", "c2")], True),  # judged on absolute error
            ("age_adjusted_error", [("sex", "female"), ("race", "Black")], True),  # declared
        ]
    )
    out = judged(
        table,
        [["age_band"], ["sex"], ["sex", "race"]],
        ["abs_error", "age_adjusted_error"],
        ["embedding_cluster"],
    )
    assert list(out["standing"]) == [
        "declared",
        "refines",
        "finding",
        "not confirmed",
        "finding",
        "finding",
        "declared",
    ]
    assert list(out["judged"]) == [True, True, True, True, False, True, True]
    # a row of a schema-17 file (no conditions stored) reads its slice's text
    legacy = judged(table.assign(conditions=None), [["age_band"]], ["abs_error"], [])
    assert list(legacy["standing"])[:3] == ["declared", "refines", "finding"]


def test_a_cluster_is_described_by_the_metadata_that_distinguishes_it():
    from audit.metrics.slices import describe_clusters

    features = pd.DataFrame(
        {
            "sex": ["female"] * 30 + ["male"] * 10 + ["female"] * 10 + ["male"] * 30,
            "camera": ["x", "y"] * 40,
            "embedding_cluster": ["c1"] * 40 + ["c2"] * 40,
        }
    )
    text = describe_clusters(features, bands=3, top=1)
    assert text["c1"] == "c1 (40 subjects): 75% sex = female (vs 25%)"
    assert text["c2"] == "c2 (40 subjects): 75% sex = male (vs 25%)"


@pytest.fixture(scope="module")
def planted_cohort(tmp_path_factory):
    """A 1,200-subject demo cohort with rendered photos whose FaceAge (a precomputed column)
    is age + N(0, 5^2), plus 4 years for women over 75 whose photo is in the dimmest third
    (brightness measured as the audit measures it)."""
    from audit.data.cohort import load_cohort
    from audit.data.images import image_properties
    from audit.demo.world import write_cohort

    folder = write_cohort(tmp_path_factory.mktemp("s") / "planted", 1200, 31, photos=True)
    cohort = load_cohort(folder)
    frame = cohort.frame
    props = image_properties(
        [(p, cohort.image_file(i)) for p, i in zip(frame["photo_id"], frame["image_path"])]
    ).set_index("photo_id")
    brightness = props.loc[frame["photo_id"], "brightness"].to_numpy()
    planted = (
        (frame["sex"] == "female").to_numpy()
        & (frame["age"] > 75).to_numpy()
        & (brightness <= np.quantile(brightness, 1 / 3))
    )
    rng = np.random.default_rng(31)
    manifest = pd.read_csv(folder / "manifest.csv")
    assert (manifest["photo_id"] == frame["photo_id"]).all()
    manifest["faceage"] = manifest["age"] + rng.normal(0, 5, len(manifest)) + 4.0 * planted
    manifest.to_csv(folder / "manifest.csv", index=False)
    return folder, planted


def test_an_audit_finds_confirms_and_judges_a_planted_slice(planted_cohort, tmp_path):
    import audit

    folder, planted = planted_cohort
    assert 0.03 < planted.mean() < 0.08  # about 5% of the subjects
    config = {
        "preset": "quick",
        "accuracy": {"age_bands": [65.0, 75.0]},
        "fairness": {"n_boot": 0},
        "slices": {"min_size": 15},
    }
    run = audit.run(folder, ["predictions:faceage"], out=tmp_path / "out", config=config)
    slices = run.table("slices")
    mine = slices[slices["loss"] == "age_adjusted_error"]
    wanted = {"sex", "age_band", "brightness"}
    hit = mine[
        mine["confirmed"]
        & mine["slice"].map(lambda s: {c.split(" = ")[0] for c in s.split(" & ")} == wanted)
    ]
    assert len(hit) == 1
    row = hit.iloc[0]
    assert "sex = female" in row["slice"] and "age_band = >75" in row["slice"]
    assert row["ci_low"] <= 4.0 <= row["ci_high"] + 1.0  # held-out effect near the planted 4 y
    check = run.table("verdicts").set_index("check_name").loc["slices_faceage"]
    assert check["status"] == "fail" and "sex = female" in check["details"]
    page = run.report_path.read_text()
    assert 'id="slices"' in page and html.escape(row["slice"]) in page
    card = (run.report_path.parent / "model_card.html").read_text()
    assert "Slices beyond the declared subgroups" in card
    exported = pd.read_csv(run.report_path.parent / "data" / "slices.csv")
    assert len(exported) == len(slices)


def test_a_clusters_average_face_is_kept_only_over_enough_photos(tmp_path):
    from PIL import Image

    from audit.data.cohort import load_cohort
    from audit.demo.world import write_cohort
    from audit.models import create_model
    from audit.models.inference import decode_image
    from audit.stages.slices import cluster_faces

    cohort = load_cohort(write_cohort(tmp_path / "c", 40, 77, photos=True))
    subjects = cohort.subjects()
    model = create_model("demo:faceage")
    clusters = np.array(["c1"] * 25 + ["c2"] * 15, dtype=object)
    rows = cluster_faces(
        cohort, model, subjects, clusters, {"c1", "c2"}, min_faces=20, sample=100, seed=0
    )
    assert [r["figure"] for r in rows] == ["slice_cluster_face:demo-faceage:c1"]  # c2: 15
    assert "average of 25 photos" in rows[0]["alt"]
    crop, size = model.crop_for(cohort), model.input_size
    mean = np.mean(
        [decode_image(cohort.image_file(p), size, crop) for p in subjects["image_path"][:25]],
        axis=0,
    )
    expected = np.asarray(Image.fromarray(mean.round().astype(np.uint8)).resize((96, 96)))
    shown = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(rows[0]["uri"].split(",", 1)[1])))
    ).astype(float)
    assert np.abs(shown - expected).mean() < 3.0  # the same image, through JPEG
    predictions_only = create_model("predictions:faceage")
    assert (
        cluster_faces(
            cohort, predictions_only, subjects, clusters, {"c1"}, min_faces=20, sample=100, seed=0
        )
        == []
    )
