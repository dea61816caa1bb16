"""The synthetic world: deterministic for a seed, and its planted truth is recoverable."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.data.cohort import load_cohort
from audit.demo.world import CANCERS, WorldParams, simulate, write_cohort
from audit.stats.cox import fit_cox
from audit.survival.analysis import design_matrix


def test_same_seed_same_cohort_other_seed_other_cohort(tmp_path):
    a = write_cohort(tmp_path / "a", n=300, seed=11)
    b = write_cohort(tmp_path / "b", n=300, seed=11)
    c = write_cohort(tmp_path / "c", n=300, seed=12)
    for name in ("manifest.csv", "truth.csv", "cohort.yaml", "truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "manifest.csv").read_bytes() != (c / "manifest.csv").read_bytes()


def test_cohort_folder_loads_cleanly_and_keeps_truth_out_of_the_manifest(tmp_path):
    folder = write_cohort(tmp_path / "w", n=500, seed=1)
    c = load_cohort(folder)
    assert len(c.frame) == 500 and c.quarantine.empty
    assert c.spec.synthetic and "ORACLE" in c.spec.description
    manifest = pd.read_csv(folder / "manifest.csv")
    assert not {"biological_age", "health", "true_lp"} & set(manifest.columns)
    assert set(c.frame["sex"]) == {"male", "female"}
    assert c.frame["time"].max() <= 5.0 + 1e-9  # administrative censoring at 5 years
    assert 20 <= c.frame["age"].min() and c.frame["age"].max() <= 95
    assert set(c.frame["cancer_type"]) == set(CANCERS)
    truth = json.loads((folder / "truth.json").read_text())
    assert truth["hr_bio_per_decade"] == pytest.approx(np.exp(0.5))


def test_population_is_realistically_imbalanced():
    d = simulate(20000, seed=5)
    share = d["race"].value_counts(normalize=True)
    assert share["White"] > 0.6 and share["Other"] < 0.05
    assert d.loc[d.cancer_type == "breast", "sex"].eq("female").mean() > 0.95
    assert 55 < d["age"].mean() < 70
    assert 0.25 < d["event"].mean() < 0.6


def test_cox_on_the_true_predictors_recovers_the_planted_hazard_ratios():
    p = WorldParams()
    d = simulate(6000, seed=2, params=p)
    d["time"] = d["time_days"] / 365.25
    d["bio_decade"] = (d["biological_age"] - 62.0) / 10.0
    terms = design_matrix(d, ["bio_decade", "health"], {"cancer_type": "thoracic"})
    cph = fit_cox(d, terms).require().fitter
    s = cph.summary
    for term, planted in [
        ("bio_decade", p.beta_bio_per_decade),
        ("health", p.beta_health),
        ("cancer_type[breast]", p.cancer_log_hr["breast"]),
        ("cancer_type[genitourinary]", p.cancer_log_hr["genitourinary"]),
    ]:
        assert s.at[term, "coef lower 95%"] < planted < s.at[term, "coef upper 95%"], term


def test_oracle_faceage_error_is_the_planted_noise():
    p = WorldParams()
    d = simulate(8000, seed=4, params=p)
    err = d["faceage"] - d["biological_age"]
    assert abs(err.mean()) < 0.15
    assert err.std() == pytest.approx(p.oracle_faceage_sd, rel=0.05)
    # FaceAge runs ahead of chronological age for the sick (health offset 4 years per SD)
    gap = d["faceage"] - d["age"]
    assert np.corrcoef(gap, d["health"])[0, 1] > 0.6
