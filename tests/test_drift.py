"""Drift: Holm and the MMD permutations against plain recomputations, planted shifts found
and unrelated features left alone, the monitor command end to end, and (slow) the measured
false-alarm rate."""

from __future__ import annotations

import numpy as np
import pytest

from audit.demo.world import WorldParams, simulate
from audit.monitor.drift import decide, embedding_drift, feature_drift, holm, permuted_mmd2u
from audit.pipeline.config import load_config

CFG = load_config().drift
META = [("age", "metadata", "num", None)] + [
    (c, "metadata", "cat", None) for c in ("sex", "race", "cancer_type")
]
PRED = [("faceage", "predictions", "num", "oracle"), ("risk", "predictions", "num", "oracle")]


def test_holm_adjusted_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([np.nan, 0.2])[0]) and holm([np.nan, 0.2])[1] == pytest.approx(0.2)


def test_vectorised_permutations_equal_evidently_mmd2u_on_permuted_kernels():
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import MMD2u
    from sklearn.metrics import pairwise_kernels

    x = np.random.default_rng(0).normal(size=(40, 5))
    k = pairwise_kernels(x, metric="rbf", gamma=0.2)
    values = permuted_mmd2u(k, 15, 4, np.random.default_rng(5))
    idx = np.argsort(np.random.default_rng(5).random((4, 40)), axis=1)[:, :15]
    for j in range(4):
        p = np.r_[idx[j], np.setdiff1d(np.arange(40), idx[j])]
        assert values[j] == pytest.approx(MMD2u(k[np.ix_(p, p)], 15, 25))


def _drift(reference, current, features=META + PRED):
    rows, snapshot = feature_drift(reference, current, features)
    return decide(rows, CFG).set_index("feature"), snapshot


@pytest.mark.parametrize(
    "shift,expected", [("older", {"age", "faceage"}), ("site", {"race"})], ids=["older", "site"]
)
def test_a_planted_shift_is_flagged_and_unrelated_features_are_not(shift, expected):
    reference = simulate(3000, 1)
    current = simulate(3000, 2, WorldParams.make("cancer", shifts=[shift]))
    table, snapshot = _drift(reference, current)
    assert set(table.index[table["drifted"]]) >= expected
    unrelated = {"sex", "cancer_type"} | ({"age"} if shift == "site" else {"race"})
    assert not table.loc[sorted(unrelated), "drifted"].any()
    assert table.loc["age", "method"].startswith("Kolmogorov-Smirnov")
    assert snapshot is not None


def test_the_same_population_drifts_nowhere():
    table, _ = _drift(simulate(3000, 3), simulate(3000, 4))
    assert not table["drifted"].any()


def test_embedding_drift_finds_a_shifted_cloud_and_not_a_resample():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(800, 32)).astype(np.float32)
    same = rng.normal(size=(800, 32)).astype(np.float32)
    moved = same + np.r_[0.25, np.zeros(31)].astype(np.float32)
    cfg = load_config(drift={"n_permutations": 999}).drift
    a = embedding_drift(ref, same, "m", cfg)
    b = embedding_drift(ref, moved, "m", cfg)
    assert a["p_value"] > 0.01 and b["p_value"] == pytest.approx(1 / 1000)
    assert b["statistic"] > a["statistic"]
    assert embedding_drift(ref, moved, "m", cfg) == b  # seeded: the same numbers again


@pytest.mark.slow  # 90 s; the monitor flow stays in `make test` (the inbox flow, test_monitor)
def test_monitor_command_flags_a_darker_site(prefect_harness, tmp_path, capsys):
    from audit.cli import main
    from audit.data.hashing import sha256_file
    from audit.demo.world import write_cohort
    from audit.pipeline.store import Store

    ref = write_cohort(tmp_path / "ref", 110, seed=31, photos=True)
    cur = write_cohort(
        tmp_path / "cur",
        110,
        seed=32,
        photos=True,
        params=WorldParams.make("cancer", shifts=["dark"]),
    )
    config = tmp_path / "c.toml"
    config.write_text(
        "[robustness]\nenabled = false\n[accuracy]\nn_boot = 50\n"
        "[survival]\nn_boot = 20\n[fairness]\nn_boot = 50\n"
    )
    out = tmp_path / "out"
    rc = main(
        [
            "monitor",
            "--cohort",
            str(cur),
            "--reference",
            str(ref),
            "--model",
            "demo:faceage",
            "--out",
            str(out),
            "--config",
            str(config),
        ]
    )
    assert rc == 1
    store = Store(out / "audit.duckdb")
    runs = store.runs()
    assert runs["flow"].tolist() == ["audit", "monitor"]  # the reference folder audited first
    run_id = runs["run_id"].iloc[-1]
    drift = store.table("drift", run_id).set_index("feature")
    assert drift.loc["brightness", "drifted"]
    assert not drift.loc[
        ["age", "sex", "race", "cancer_type", "ecog", "treatment_intent"], "drifted"
    ].any()  # covariates compared too, from the cohort folders
    assert (drift["reference"] == runs["run_id"].iloc[0]).all()
    verdicts = store.table("verdicts", run_id).set_index("check_name")
    assert verdicts.loc["drift_images", "status"] == "fail"
    assert verdicts.loc["drift_metadata", "status"] == "pass"
    # the terminal names the drift check that failed and the features that drifted
    said = " ".join(capsys.readouterr().err.split())
    assert "FAIL demo-faceage: drift_images" in said or "FAIL drift_images" in said, said
    n_drifted = int(store.table("drift", run_id)["drifted"].sum())
    assert f"drift: {n_drifted} of {len(drift)} tests drifted (" in said
    assert "brightness" in said.split("drift: ")[1]
    # the monitor page leads with drift, right after the verdict
    page = (out / "runs" / run_id / "index.html").read_text()
    assert page.index('id="verdict"') < page.index('id="drift"') < page.index('id="validation"')
    assert page.count('id="drift"') == 1
    art = store.table("artifacts", run_id).set_index("kind").loc["evidently_html"]
    assert sha256_file(out / art["path"]) == art["sha256"]
    # a second monitor run reuses the reference run instead of auditing it again
    main(
        [
            "monitor",
            "--cohort",
            str(cur),
            "--reference",
            str(ref),
            "--model",
            "demo:faceage",
            "--out",
            str(out),
            "--config",
            str(config),
        ]
    )
    assert store.runs()["flow"].tolist() == ["audit", "monitor", "monitor"]


@pytest.mark.slow
def test_the_false_alarm_rate_over_20_seeds_stays_under_the_level():
    """Same population, new seed: a run raises any drift alarm (familywise, Holm at alpha
    0.01 and the effect-size floor) in at most 2 of 20 pairs (binomial(20, 0.01): 2 or more
    happens with probability 1.7%)."""
    alarms = 0
    for seed in range(20):
        table, _ = _drift(simulate(2000, 100 + seed), simulate(2000, 200 + seed))
        alarms += bool(table["drifted"].any())
    assert alarms <= 2, alarms


@pytest.mark.parametrize(
    "shift,expected", [("jpeg", "jpeg_quality"), ("dark", "brightness")], ids=["jpeg", "dark"]
)
def test_planted_photo_shifts_drift_their_image_property(tmp_path, shift, expected):
    """Rendered photos: heavier JPEG compression drifts the estimated JPEG quality, darker
    light the brightness; age and the other shift's property stay put."""
    from audit.data.cohort import load_cohort
    from audit.data.images import image_properties
    from audit.demo.world import write_cohort

    def frame(folder):
        c = load_cohort(folder)
        props = image_properties(
            [(p, c.image_file(i)) for p, i in zip(c.frame["photo_id"], c.frame["image_path"])],
            workers=1,
        )
        return c.frame.merge(props, on="photo_id")

    ref = frame(write_cohort(tmp_path / "ref", 150, seed=41, photos=True))
    cur = frame(
        write_cohort(
            tmp_path / "cur",
            150,
            seed=42,
            photos=True,
            params=WorldParams.make("cancer", shifts=[shift]),
        )
    )
    other = "brightness" if shift == "jpeg" else "jpeg_quality"
    feats = [("age", "metadata", "num", None)] + [
        (c, "images", "num", None) for c in ("brightness", "jpeg_quality")
    ]
    table, _ = _drift(ref, cur, feats)
    assert table.loc[expected, "drifted"]
    assert not table.loc[["age", other], "drifted"].any()


def test_a_feature_constant_in_the_reference_gets_a_labelled_bounded_effect():
    """evidently's normed Wasserstein divides by the reference's spread: a feature constant
    there gave effects of 32,000 that flattened the drift chart. Its effect is now the share
    of current values that differ from the reference's one value, labelled so."""
    import pandas as pd

    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"ecog": np.ones(400), "age": rng.normal(60, 10, 400)})
    current = pd.DataFrame(
        {"ecog": np.where(rng.random(400) < 0.3, 2.0, 1.0), "age": rng.normal(60, 10, 400)}
    )
    features = [("ecog", "metadata", "num", None), ("age", "metadata", "num", None)]
    table, _ = _drift(reference, current, features)
    ecog = table.loc["ecog"]
    assert 0.2 < ecog["effect"] < 0.4  # about 30% of the current values changed
    assert ecog["effect_method"].startswith("share of values other than 1")
    assert bool(ecog["drifted"])
    assert table.loc["age", "effect_method"] == "Wasserstein distance (normed)"
    same, _ = _drift(reference, reference.copy(), features)
    assert same.loc["ecog", "effect"] == pytest.approx(0.0, abs=1e-12)
    assert not bool(same.loc["ecog", "drifted"])
