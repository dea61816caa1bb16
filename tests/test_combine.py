"""The combined audit (``audit.pipeline.combine``): signed bundles of simulated sites pooled
by random effects. Known answers: pooled numbers equal a hand inverse-variance and
DerSimonian-Laird computation; three sites with one true hazard ratio cover it with I^2 near
0, a fourth with a planted other hazard ratio is flagged and raises I^2; a tampered bundle,
a foreign key and another model's digest are named and left out; a planted subgroup bias
shared by every site is pooled and flagged; the bundles' order changes nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.pipeline.bundle import FORMAT
from audit.pipeline.combine import combine_tables, combined_verdicts, read_site
from audit.pipeline.config import load_config
from audit.pipeline.dossier import sign_document

TRUE_LOG_HR = 0.5
COX = "faceage_per_decade__age_sex"


def _cox_site(beta: float, seed: int, n: int = 500) -> dict:
    """A site's Cox fit of a log hazard ratio ``beta`` per unit, by lifelines."""
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    t = rng.exponential(1 / (0.1 * np.exp(beta * x)))
    c = rng.uniform(0, 15, n)
    df = pd.DataFrame({"T": np.minimum(t, c), "E": (t <= c).astype(int), "x": x})
    s = CoxPHFitter().fit(df, "T", "E").summary.loc["x"]
    return {
        "model": "m",
        "output": COX,
        "quantity": "log_hr:faceage_decade",
        "attribute": "all",
        "group": "all",
        "horizon": None,
        "scale": "log",
        "n": n,
        "events": int(df["E"].sum()),
        "estimate": float(s["coef"]),
        "se": float(s["se(coef)"]),
        "ci_low": float(s["coef lower 95%"]),
        "ci_high": float(s["coef upper 95%"]),
    }


def _q(quantity, estimate, se, *, output="faceage", attribute="all", group="all", n=400):
    return {
        "model": "m", "output": output, "quantity": quantity, "attribute": attribute,
        "group": group, "horizon": None, "scale": "identity", "n": n, "events": None,
        "estimate": estimate, "se": se, "ci_low": estimate - 1.96 * se,
        "ci_high": estimate + 1.96 * se,
    }  # fmt: skip


def _write(folder, site, quantities, monkeypatch, checkpoint="c" * 64, key=None) -> str:
    """A signed bundle of ``site`` (signed with its own key unless ``key`` names another)."""
    monkeypatch.setenv("FACEAGE_AUDIT_SIGNING_KEY", str(folder / f"{key or site}.key"))
    bundle = {
        "format": FORMAT, "site": site, "run_id": f"run-{site}", "flow": "audit",
        "synthetic": True,
        "models": [{"name": "m", "kind": "timm", "outputs": ["faceage", "risk"],
                    "checkpoint_sha256": checkpoint, "spec_sha256": "s" * 64}],
        "config_sha256": "f" * 64, "code_version": "test", "small_cells": {},
        "composition": {"subjects": 500, "sex": {"female": 250, "male": 250}},
        "quantities": quantities,
    }  # fmt: skip
    path = folder / f"{site}.json"
    path.write_text(json.dumps(sign_document(bundle, "bundle")))
    return str(path)


def _combine(paths, **sections):
    cfg = load_config(**sections)
    tables, models = combine_tables([read_site(p, cfg.combine.site_keys) for p in paths], cfg)
    return tables, combined_verdicts(tables, models, cfg)


def _row(frame, quantity, **match):
    sel = frame[frame["quantity"] == quantity]
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (quantity, match, len(sel))
    return sel.iloc[0]


@pytest.fixture(scope="module")
def sites():
    """Four simulated Cox sites: three with log HR 0.5, a fourth with 1.2."""
    return {
        "amber": _cox_site(TRUE_LOG_HR, 11),
        "birch": _cox_site(TRUE_LOG_HR, 12),
        "cedar": _cox_site(TRUE_LOG_HR, 13),
        "delta": _cox_site(1.2, 14),
    }


def test_pooled_numbers_equal_a_hand_dersimonian_laird_computation(tmp_path, monkeypatch):
    values = {"a": (6.1, 0.30, 0.91), "b": (5.2, 0.25, 0.88), "c": (6.9, 0.40, 0.93)}
    paths = [
        _write(tmp_path, site, [_q("mae", mae, se), _q("pearson_r", r, 0.01)], monkeypatch)
        for site, (mae, se, r) in values.items()
    ]
    tables, _ = _combine(paths, combine={"method": "DL"})
    pooled = tables["combined_pooled"]
    y = np.array([v[0] for v in values.values()])
    var = np.array([v[1] for v in values.values()]) ** 2
    w = 1 / var
    fixed = np.sum(w * y) / np.sum(w)
    q = np.sum(w * (y - fixed) ** 2)
    tau2 = max(0.0, (q - 2) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    wr = 1 / (var + tau2)
    mu = np.sum(wr * y) / np.sum(wr)
    hk = np.sqrt(np.sum(wr * (y - mu) ** 2) / (2 * np.sum(wr)))
    t = stats.t.ppf(0.975, 2)
    mae = _row(pooled, "mae")
    assert mae["fixed"] == pytest.approx(fixed, rel=1e-10)
    assert mae["q"] == pytest.approx(q, rel=1e-10)
    assert mae["tau2"] == pytest.approx(tau2, rel=1e-10)
    assert mae["estimate"] == pytest.approx(mu, rel=1e-10)
    assert mae["ci_low"] == pytest.approx(mu - t * hk, rel=1e-10)
    assert mae["i2"] == pytest.approx((q - 2) / q, rel=1e-10)  # DL's I^2
    assert mae["k"] == 3 and mae["n"] == 1200
    assert mae["ci_method"] == "Hartung-Knapp" and mae["pooling"] == "identity"
    # a correlation: pooled on Fisher's z and turned back
    r = np.array([v[2] for v in values.values()])
    z, vz = np.arctanh(r), (0.01 / (1 - r**2)) ** 2
    wz = 1 / vz
    fz = np.sum(wz * z) / np.sum(wz)
    qz = np.sum(wz * (z - fz) ** 2)
    tz = max(0.0, (qz - 2) / (np.sum(wz) - np.sum(wz**2) / np.sum(wz)))
    wzr = 1 / (vz + tz)
    pearson = _row(pooled, "pearson_r")
    assert pearson["pooling"] == "fisher_z"
    assert pearson["estimate"] == pytest.approx(np.tanh(np.sum(wzr * z) / np.sum(wzr)), rel=1e-10)
    # each site's weight is its share of the random-effects weights
    est = tables["combined_estimates"]
    weights = est[est["quantity"] == "mae"].set_index("site")["weight"]
    assert weights.to_dict() == pytest.approx(dict(zip(values, wr / wr.sum())), rel=1e-10)


def test_three_sites_with_one_hazard_ratio_cover_it_and_a_fourth_stands_out(
    sites, tmp_path, monkeypatch
):
    paths = {site: _write(tmp_path, site, [q], monkeypatch) for site, q in sites.items()}
    three, verdicts = _combine([paths[s] for s in ("amber", "birch", "cedar")])
    hr = _row(three["combined_pooled"], "log_hr:faceage_decade")
    assert hr["k"] == 3 and hr["ci_low"] < TRUE_LOG_HR < hr["ci_high"]
    assert hr["i2"] < 0.25 and not hr["flagged_sites"]
    check = verdicts.set_index("check_name").loc["site_consistency"]
    assert check["status"] == "pass"
    assert verdicts.set_index("check_name").loc["faceage_adjusted_hr_per_decade", "status"] in (
        "pass", "inconclusive"
    )  # fmt: skip

    four, verdicts = _combine(list(paths.values()))
    hr4 = _row(four["combined_pooled"], "log_hr:faceage_decade")
    assert hr4["i2"] > 0.75 > hr["i2"] and hr4["flagged_sites"] == "delta"
    est = four["combined_estimates"].set_index("site")
    assert est.loc["delta", "deleted_residual"] > 3 and bool(est.loc["delta", "flagged"])
    assert not est.drop("delta")["flagged"].astype(bool).any()
    check = verdicts.set_index("check_name").loc["site_consistency"]
    assert check["status"] == "fail" and "delta" in check["details"]


def test_bundles_given_in_another_order_pool_to_the_same_numbers(sites, tmp_path, monkeypatch):
    paths = [_write(tmp_path, site, [q], monkeypatch) for site, q in sites.items()]
    a, va = _combine(paths)
    b, vb = _combine(paths[::-1])
    for name in ("combined_pooled", "combined_estimates", "combined_sites"):
        pd.testing.assert_frame_equal(a[name], b[name])
    pd.testing.assert_frame_equal(va, vb)


def test_a_tampered_bundle_a_foreign_key_and_another_model_are_named_and_left_out(
    sites, tmp_path, monkeypatch
):
    paths = {site: _write(tmp_path, site, [q], monkeypatch) for site, q in sites.items()}
    doc = json.loads((tmp_path / "delta.json").read_text())
    doc["bundle"]["quantities"][0]["estimate"] = TRUE_LOG_HR  # the outlier made to fit in
    (tmp_path / "delta.json").write_text(json.dumps(doc))
    other = _write(tmp_path, "elm", [sites["amber"]], monkeypatch, checkpoint="d" * 64)
    tables, verdicts = _combine([*paths.values(), other])
    status = tables["combined_sites"].set_index("site")
    assert status.loc["delta", "status"] == "not pooled"
    assert "do not match its digest" in status.loc["delta", "problems"]
    models = tables["combined_models"].set_index("site")
    assert models.loc["elm", "status"].startswith("another checkpoint")
    hr = _row(tables["combined_pooled"], "log_hr:faceage_decade")
    assert hr["k"] == 3  # amber, birch, cedar
    v = verdicts.set_index("check_name")
    assert (
        v.loc["bundles_verified", "status"] == "fail"
        and "delta" in v.loc["bundles_verified", "details"]
    )
    assert v.loc["same_models", "status"] == "fail" and "elm" in v.loc["same_models", "details"]

    # keys pinned by site: a bundle signed with another key than its site's is refused
    keys = {s: json.loads(open(paths[s]).read())["public_key"] for s in ("amber", "birch")}
    forged = _write(tmp_path, "cedar", [sites["cedar"]], monkeypatch, key="amber")
    keys["cedar"] = json.loads(open(paths["amber"]).read())["public_key"][::-1]
    tables, _ = _combine([paths["amber"], paths["birch"], forged], combine={"site_keys": keys})
    status = tables["combined_sites"].set_index("site")
    assert status.loc["cedar", "status"] == "not pooled"
    assert "not the key of site 'cedar'" in status.loc["cedar", "problems"]
    assert (status.drop("cedar")["status"] == "pooled").all()


def test_two_different_bundles_of_one_site_are_both_left_out(sites, tmp_path, monkeypatch):
    a = _write(tmp_path, "amber", [sites["amber"]], monkeypatch)
    (tmp_path / "copy").mkdir()
    b = _write(tmp_path / "copy", "amber", [sites["birch"]], monkeypatch)
    c = _write(tmp_path, "cedar", [sites["cedar"]], monkeypatch)
    tables, _ = _combine([a, b, c, c])  # the same bundle twice is read once
    st = tables["combined_sites"]
    assert len(st) == 3 and (st[st["site"] == "amber"]["status"] == "not pooled").all()
    assert _row(tables["combined_pooled"], "log_hr:faceage_decade")["k"] == 1


def test_a_subgroup_bias_shared_by_every_site_is_pooled_and_flagged(tmp_path, monkeypatch):
    """Black subjects' age-adjusted MAE 3 years above White's at every site (SE 0.4): the
    pooled difference is about 3, I^2 about 0, flagged; the difference equals the pool of
    each site's (y_g - y_ref, se_g^2 + se_ref^2)."""
    rng = np.random.default_rng(5)
    paths, diffs = [], []
    for site in ("a", "b", "c", "d"):
        white = 4.0 + rng.normal(0, 0.2)
        black = white + 3.0 + rng.normal(0, 0.4)
        diffs.append(black - white)
        qs = [
            _q("fairness:mae_age_adjusted", white, 0.2, attribute="race", group="White", n=300),
            _q("fairness:mae_age_adjusted", black, 0.35, attribute="race", group="Black", n=100),
            _q("fairness:mae_age_adjusted", 5.0, 0.9, attribute="race", group="Other", n=6),
        ]
        qs[2] = {k: v for k, v in qs[2].items() if k not in ("estimate", "se", "ci_low", "ci_high")}
        qs[2]["suppressed"] = "fewer than 10 subjects"
        paths.append(_write(tmp_path, site, qs, monkeypatch))
    tables, verdicts = _combine(paths)
    pooled = tables["combined_pooled"]
    d = _row(pooled, "difference:mae_age_adjusted", group_name="Black")
    assert d["reference_group"] == "White" and d["k"] == 4
    from audit.stats.meta import pool

    hand = pool(diffs, [0.2**2 + 0.35**2] * 4)
    assert d["estimate"] == pytest.approx(hand.estimate, rel=1e-10)
    assert d["ci_low"] < 3.0 < d["ci_high"] and d["i2"] < 0.25
    assert d["status"] == "flagged" and d["band_low"] > 1.0  # beyond the 1-year tolerance
    other = _row(pooled, "fairness:mae_age_adjusted", group_name="Other")
    assert other["k"] == 0 and other["k_withheld"] == 4 and other["status"] == "not pooled"
    check = verdicts.set_index("check_name").loc["pooled_fairness_faceage"]
    assert check["status"] == "fail" and "Black" in check["details"]
    import audit

    page = audit.combine(paths, out=tmp_path / "out").report_path.read_text()
    assert "mae_age_adjusted, Black minus White" in page  # its forest plot across the sites


def test_shares_of_photos_pool_as_empirical_logits(tmp_path, monkeypatch):
    """The share a perturbation moves beyond tolerance, pooled from each site's count:
    logit((x + 1/2) / (n - x + 1/2)) with variance 1/(x + 1/2) + 1/(n - x + 1/2), even where
    a site counted none."""
    counts = {"a": (0, 150), "b": (12, 200), "c": (30, 250)}
    name = "robustness_over_tolerance:jpeg@3"
    paths = [
        _write(tmp_path, site, [_q(name, x / n, np.sqrt(x / n * (1 - x / n) / n), n=n)],
                monkeypatch)
        for site, (x, n) in counts.items()
    ]  # fmt: skip
    tables, _ = _combine(paths)
    from audit.stats.meta import pool

    x = np.array([c[0] for c in counts.values()], float)
    n = np.array([c[1] for c in counts.values()], float)
    hand = pool(np.log((x + 0.5) / (n - x + 0.5)), 1 / (x + 0.5) + 1 / (n - x + 0.5))
    r = _row(tables["combined_pooled"], name)
    assert r["k"] == 3 and r["pooling"] == "logit"
    assert r["estimate"] == pytest.approx(1 / (1 + np.exp(-hand.estimate)), rel=1e-10)
    assert r["ci_high"] == pytest.approx(1 / (1 + np.exp(-hand.high)), rel=1e-10)


@pytest.mark.slow  # four whole audits (about a minute): make test-all
def test_demo_sites_with_one_true_hazard_ratio_pool_to_it_and_a_planted_fifth_stands_out(
    tmp_path, monkeypatch
):
    """Four demo-world sites audited end to end and combined from their bundles. Three share
    the world's parameters: their pooled FaceAge hazard ratio per decade (adjusted for age
    and sex) covers its value in a 40,000-subject population of the same world, with I^2
    under 30%. A fourth whose biological age carries a planted log hazard ratio of 1.2 per
    decade (0.5 elsewhere) is flagged on it, raises I^2 over 50% and fails site_consistency."""
    from lifelines import CoxPHFitter

    import audit
    from audit.demo.world import WorldParams, simulate, write_cohort
    from audit.pipeline.bundle import write_bundle
    from audit.pipeline.store import Store

    population = simulate(40000, seed=9, params=WorldParams())
    frame = pd.DataFrame(
        {
            "time": population["time_days"] / 365.25,
            "event": population["event"],
            "faceage_decade": population["faceage"] / 10,
            "age_decade": population["age"] / 10,
            "female": (population["sex"] == "female").astype(float),
        }
    )
    truth = CoxPHFitter().fit(frame, "time", "event").params_["faceage_decade"]
    paths = {}
    for i, (site, beta) in enumerate(
        [("east", 0.5), ("north", 0.5), ("south", 0.5), ("west", 1.2)]
    ):
        params = WorldParams()
        params.beta_bio_per_decade = beta
        folder = write_cohort(tmp_path / site, 600, 100 + i, params=params)
        run = audit.run(
            folder, ["predictions:faceage,risk"], out=tmp_path / f"{site}-out",
            config={"preset": "quick", "slices": {"enabled": False}},
        )  # fmt: skip
        monkeypatch.setenv("FACEAGE_AUDIT_SIGNING_KEY", str(tmp_path / f"{site}.key"))
        store = Store(tmp_path / f"{site}-out" / "audit.duckdb")
        paths[site] = write_bundle(store, run.run_id, site, tmp_path / f"{site}.json")

    def hr(tables):
        return _row(tables["combined_pooled"], "log_hr:faceage_decade", output=COX, attribute="all")

    three, _ = _combine([paths[s] for s in ("east", "north", "south")])
    h3 = hr(three)
    assert h3["k"] == 3 and h3["ci_low"] < truth < h3["ci_high"] and h3["i2"] < 0.3
    four, verdicts = _combine(list(paths.values()))
    h4 = hr(four)
    assert h4["flagged_sites"] == "west" and h4["i2"] > 0.5 > h3["i2"]
    check = verdicts.set_index("check_name").loc["site_consistency"]
    assert check["status"] == "fail" and "west" in check["details"]


def test_bundles_that_all_fail_make_a_failed_verdict_not_a_crash(tmp_path, monkeypatch):
    import audit

    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    good = _write(tmp_path, "amber", [_q("mae", 5.0, 0.3)], monkeypatch)
    doc = json.loads(open(good).read())
    doc["bundle"]["site"] = "zz"
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    run = audit.combine([junk, tmp_path / "edited.json"], out=tmp_path / "out")
    v = run.verdict.set_index("check_name")
    assert run.verdict_status == "fail" and v.loc["bundles_verified", "status"] == "fail"
    assert v.loc["same_models", "status"] == "skipped"
    sites = run.table("combined_sites").set_index("site")
    assert sites.loc["zz", "problems"].endswith("do not match its digest (edited)")
    assert "not JSON" in sites.loc["(unread: junk.json)", "problems"]
    assert run.report_path.is_file() and run.table("combined_pooled").empty
    with pytest.raises(audit.InputError, match="no such bundle file"):
        audit.combine([tmp_path / "missing.json"], out=tmp_path / "out")
