"""Clinical utility by subgroup: a group on which the score's ranking is reversed is found
harmful where the score helps everyone else; groups that share the score's value are not
(the simultaneous bands hold false alarms down); a group's net benefit is the plain numpy
one on its own patients (an oracle by boolean mask); small groups are reported, not judged.
The rows, page and verdict of a run are checked in test_flow's end-to-end run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.decisions.curves import (
    decision_curve,
    default_thresholds,
    net_benefit,
    useful_thresholds,
)
from audit.decisions.subgroups import COLUMNS, subgroup_net_benefit

H = 2.0
GRID = default_thresholds()


def _cohort(n: int, seed: int, reversed_share: float = 0.0):
    """Exponential survival with rate ``0.25 exp(0.9 x)``; the score's risk is the true one,
    except in group ``B`` (a ``reversed_share`` of patients), where the score reads ``-x``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rate = 0.25 * np.exp(0.9 * x)
    t = rng.exponential(1 / rate)
    c = rng.uniform(0.5, 6.0, n)
    group = np.where(rng.random(n) < reversed_share, "B", "A")
    seen = np.where(group == "B", -x, x)
    p = 1 - np.exp(-0.25 * np.exp(0.9 * seen) * H)
    return np.minimum(t, c), (t <= c).astype(float), p, group


def test_a_group_whose_ranking_is_reversed_is_harmed():
    time, event, p, group = _cohort(4000, seed=1, reversed_share=0.25)
    overall = decision_curve("m", "risk", time, event, p, H, GRID, n_boot=200)
    useful = useful_thresholds(overall)
    assert len(useful) >= 3  # the score still helps the cohort as a whole
    rows = subgroup_net_benefit(
        "m", "risk", time, event, p, H, GRID, [("g", group)], overall_useful=useful, n_boot=200
    )
    assert list(rows.columns) == COLUMNS
    b = rows[(rows["group_name"] == "B") & rows["overall_useful"]]
    assert (b["status"] == "harmful").sum() >= 2, b
    a = rows[rows["group_name"] == "A"]
    assert (a["status"] == "harmful").sum() == 0
    assert (a["status"] == "useful").sum() >= 5
    assert (rows["band_low"] <= rows["gain_low"] + 1e-12).all()  # bands are wider


def test_groups_that_share_the_value_are_not_flagged():
    harmed = 0
    for seed in range(4):
        time, event, p, _ = _cohort(3000, seed=10 + seed)
        labels = np.random.default_rng(seed).choice(list("PQRST"), size=len(time))
        overall = decision_curve("m", "risk", time, event, p, H, GRID, n_boot=100)
        rows = subgroup_net_benefit(
            "m",
            "risk",
            time,
            event,
            p,
            H,
            GRID,
            [("g", labels)],
            overall_useful=useful_thresholds(overall),
            n_boot=200,
            seed=seed,
        )
        harmed += int(((rows["status"] == "harmful") & rows["overall_useful"]).any())
    assert harmed <= 1


def test_a_groups_net_benefit_is_that_of_its_own_patients():
    time, event, p, group = _cohort(1500, seed=3, reversed_share=0.4)
    labels = pd.Series(group, dtype=object)
    labels[::50] = None  # not in any group: left out
    rows = subgroup_net_benefit("m", "risk", time, event, p, H, GRID, [("g", labels)], n_boot=20)
    for name in ("A", "B"):
        mask = (labels == name).to_numpy()
        ours = rows[rows["group_name"] == name]
        ref = net_benefit(time[mask], event[mask], p[mask][:, None] >= np.array(GRID), GRID, H)[0]
        every = net_benefit(
            time[mask], event[mask], np.ones((mask.sum(), len(GRID)), bool), GRID, H
        )[0]
        np.testing.assert_allclose(ours["net_benefit"], ref)
        np.testing.assert_allclose(ours["gain"], ref - np.maximum(every, 0))
        assert (ours["n"] == mask.sum()).all()
    assert set(rows["group_name"]) == {"A", "B"}


def test_small_groups_are_reported_not_judged():
    time, event, p, _ = _cohort(600, seed=4)
    labels = np.array(["big"] * 580 + ["tiny"] * 20, dtype=object)
    rows = subgroup_net_benefit(
        "m", "risk", time, event, p, H, GRID, [("g", labels)], min_group_size=30, n_boot=50
    )
    tiny = rows[rows["group_name"] == "tiny"]
    assert (tiny["status"] == "too_small").all() and tiny["net_benefit"].isna().all()
    assert (tiny["n"] == 20).all()
    assert (rows.loc[rows["group_name"] == "big", "status"] != "too_small").all()


@pytest.mark.parametrize(
    "attribute",
    [
        "sex",
        pytest.param("race", marks=pytest.mark.slow),
        pytest.param("site", marks=pytest.mark.slow),
    ],
)
def test_survival_analysis_judges_each_score_within_groups(attribute):
    from audit.demo.world import simulate
    from audit.pipeline.config import SurvivalConfig
    from audit.survival.analysis import survival_analysis

    df = simulate(1200, 5)
    df["time"] = df["time_days"] / 365.25
    df["site"] = np.where(np.arange(len(df)) % 3 == 0, "north", "south")  # two sites
    result = survival_analysis(
        df,
        "oracle",
        ["faceage", "risk"],
        [],
        SurvivalConfig(n_boot=50),
        decision_groups=[attribute],
        min_group_size=30,
    )
    sub = result.decision_subgroups
    assert set(sub["model_id"]) == {"faceage", "risk"}
    assert set(sub["attribute"]) == {attribute}
    assert set(sub["group_name"]) == set(df[attribute].dropna().astype(str))
    assert sorted(sub["horizon"].unique()) == sorted(result.decisions["horizon"].unique())
    none = survival_analysis(df, "oracle", ["risk"], [], SurvivalConfig(n_boot=20))
    assert none.decision_subgroups.empty  # no groups asked
    one_site = survival_analysis(
        df.assign(site="north"),
        "oracle",
        ["risk"],
        [],
        SurvivalConfig(n_boot=20),
        decision_groups=["site"],
    )
    assert one_site.decision_subgroups.empty  # one site: nothing to compare


def _verdict(rows, **thresholds):
    from audit.pipeline.config import Thresholds
    from audit.pipeline.verdict import Evidence, evaluate

    v = evaluate(
        Evidence(
            models=[{"name": "m", "outputs": ["risk"], "needs_images": False}],
            n_manifest_rows=10,
            n_quarantined=0,
            has_outcomes=True,
            thresholds=Thresholds(**thresholds),
            tables={
                "accuracy": pd.DataFrame(columns=["model", "output", "metric", "attribute"]),
                "survival_terms": pd.DataFrame(columns=["model", "model_id", "term"]),
                "decision_subgroups": rows,
            },
        )
    )
    return v[v["check_name"] == "risk_net_benefit_subgroups"]


@pytest.fixture(scope="module")
def harmed_rows() -> pd.DataFrame:
    time, event, p, group = _cohort(3000, seed=7, reversed_share=0.3)
    small = np.where(np.arange(len(time)) < 15, "few", "many")
    return subgroup_net_benefit(
        "m", "risk", time, event, p, H, GRID, [("g", group), ("size", small)], n_boot=200
    )


def test_the_verdict_fails_a_harmed_group_and_names_it(harmed_rows):
    v = _verdict(harmed_rows, net_benefit_range=[0.3, 0.5], net_benefit_horizon=H).iloc[0]
    assert v["status"] == "fail" and v["value"] >= 1
    assert "g = B at 30-50%" in v["details"]
    assert "too small to judge: size = few (15 subjects" in v["details"]
    fine = harmed_rows[harmed_rows["group_name"] != "B"]
    v = _verdict(fine, net_benefit_range=[0.3, 0.5], net_benefit_horizon=H).iloc[0]
    assert v["status"] == "pass" and v["value"] == 0 and "none of 2 groups harmed" in v["details"]


def test_the_subgroup_verdict_needs_a_declared_range_and_its_horizon(harmed_rows):
    assert _verdict(harmed_rows).empty  # no range declared: not judged
    assert _verdict(None, net_benefit_range=[0.3, 0.5]).empty  # fairness off
    v = _verdict(harmed_rows, net_benefit_range=[0.3, 0.5], net_benefit_horizon=5.0).iloc[0]
    assert v["status"] == "skipped" and "no subgroup decision curve" in v["details"]
