"""Site bundles (``audit.pipeline.bundle``): a bundle of a real audit run holds its estimates
with standard errors, no id, no photo path and no cell under the minimum size (scanned); it
verifies, and a tampered copy does not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.pipeline.bundle import build_bundle, verify_bundle, write_bundle
from audit.pipeline.dossier import _digest


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    import audit
    from audit.demo.world import write_cohort

    root = tmp_path_factory.mktemp("bundle")
    folder = write_cohort(root / "site", 300, 61)
    run = audit.run(
        folder,
        ["predictions:faceage,risk"],
        out=root / "out",
        config={"preset": "quick", "slices": {"enabled": False}},
    )
    return run, root


def test_a_bundle_holds_estimates_and_nothing_that_names_a_row(audited):
    from audit.pipeline.store import Store

    run, root = audited
    store = Store(root / "out" / "audit.duckdb")
    path = write_bundle(store, run.run_id, "site-a", root / "a.bundle.json", min_subjects=30)
    text = path.read_text()
    rows = store.table("cohort_rows", run.run_id)
    for value in set(rows["photo_id"]) | set(rows["subject_id"]):
        assert value not in text  # no id
    assert str(root) not in text and "cohort_path" not in text  # no folder
    doc = json.loads(text)["bundle"]
    assert doc["site"] == "site-a" and doc["composition"]["subjects"] == 300
    quantities = doc["quantities"]
    kept = [q for q in quantities if "suppressed" not in q]
    withheld = [q for q in quantities if "suppressed" in q]
    assert withheld and all("estimate" not in q and q["n"] is None for q in withheld)
    assert all(q["n"] is None or q["n"] >= 30 for q in kept)
    # the Cox term of FaceAge per decade, as the run's table has it
    terms = store.table("survival_terms", run.run_id)
    term = terms[terms["model_id"].str.startswith("faceage_per_decade__")].iloc[0]
    mine = next(
        q
        for q in kept
        if q["output"] == term["model_id"] and q["quantity"] == f"log_hr:{term['term']}"
    )
    assert mine["estimate"] == pytest.approx(term["coef"]) and mine["se"] == pytest.approx(
        term["se"]
    )
    assert mine["ci_low"] == pytest.approx(np.log(term["hr_low"]))
    # an accuracy value's SE from its 95% CI
    mae = next(q for q in kept if q["quantity"] == "mae" and q["attribute"] == "all")
    assert mae["se"] == pytest.approx((mae["ci_high"] - mae["ci_low"]) / 3.919928, rel=1e-6)
    for counts in (doc["composition"]["sex"], doc["composition"]["race"]):
        assert all(v == "<30" or v >= 30 for v in counts.values())
    assert build_bundle(store, run.run_id, "site-a", min_subjects=30) == doc  # deterministic


def test_a_bundle_verifies_and_a_tampered_one_does_not(audited, tmp_path):
    from audit.pipeline.store import Store

    run, root = audited
    store = Store(root / "out" / "audit.duckdb")
    path = write_bundle(store, run.run_id, "site-a", tmp_path / "b.json")
    assert verify_bundle(path) == []
    doc = json.loads(path.read_text())
    first = next(q for q in doc["bundle"]["quantities"] if "estimate" in q)
    first["estimate"] += 0.01
    tampered = tmp_path / "t.json"
    tampered.write_text(json.dumps(doc))
    assert any("do not match its digest" in p for p in verify_bundle(tampered))
    doc["digest"] = _digest(doc["bundle"])  # the digest redone: the signature still fails
    tampered.write_text(json.dumps(doc))
    assert any("signature does not match" in p for p in verify_bundle(tampered))


def test_the_commands_write_and_check_a_bundle(audited, tmp_path):
    from audit.cli import main

    run, root = audited
    run_dir = root / "out" / "runs" / run.run_id
    out = tmp_path / "x.json"
    assert main(["export-bundle", str(run_dir), "--site", "site-a", "--out", str(out)]) == 0
    assert main(["verify-bundle", str(out)]) == 0
    # the limits: the run's [bundle] config (the defaults here), else the flags
    assert json.loads(out.read_text())["bundle"]["small_cells"] == {
        "min_subjects": 10, "min_events": 5
    }  # fmt: skip
    wide = tmp_path / "wide.json"
    assert main(["export-bundle", str(run_dir), "--site", "s", "--out", str(wide),
                 "--min-subjects", "40"]) == 0  # fmt: skip
    assert json.loads(wide.read_text())["bundle"]["small_cells"]["min_subjects"] == 40
    doc = json.loads(out.read_text())
    doc["bundle"]["site"] = "site-b"
    out.write_text(json.dumps(doc))
    assert main(["verify-bundle", str(out)]) == 1
    assert main(["export-bundle", str(tmp_path), "--site", "s"]) == 2  # not a run folder
    (tmp_path / "junk.json").write_text("not json")
    assert main(["verify-bundle", str(tmp_path / "junk.json")]) == 1  # said, not a crash


def test_one_site_combines_to_its_own_estimates_and_verdict(
    audited, tmp_path, prefect_harness, capsys
):
    """``combine`` of one site's bundle: every pooled quantity is the site's own estimate
    and CI, and the run's own accuracy and hazard-ratio checks judge them as they judged
    the site (through the command and its Prefect flow)."""
    from audit.cli import main
    from audit.pipeline.store import Store

    run, root = audited
    store = Store(root / "out" / "audit.duckdb")
    bundle = write_bundle(store, run.run_id, "site-a", tmp_path / "a.json")
    capsys.readouterr()
    code = main(["combine", str(bundle), "--out", str(tmp_path / "combined")])
    said = " ".join(capsys.readouterr().err.split())
    assert "combined audit of 1 site (site-a)" in said and "report: " in said, said
    combined = Store(tmp_path / "combined" / "audit.duckdb")
    (row,) = combined.runs().to_dict("records")
    assert row["flow"] == "combine" and row["cohort_name"] == "1 site (site-a)"
    assert code == (0 if row["verdict"] == "pass" else 1)
    pooled = combined.table("combined_pooled", row["run_id"])
    kept = [q for q in json.loads(bundle.read_text())["bundle"]["quantities"] if "estimate" in q]
    own = pooled[pooled["k"] == 1].set_index(
        ["model", "output", "quantity", "attribute", "group_name"]
    )
    compared = 0
    for q in kept:
        if q["se"] is None or q["horizon"] is not None:
            continue
        r = own.loc[(q["model"], q["output"], q["quantity"], q["attribute"], q["group"])]
        assert r["estimate"] == pytest.approx(q["estimate"], rel=1e-12)
        assert r["ci_low"] == pytest.approx(q["ci_low"], rel=1e-12)
        assert r["ci_high"] == pytest.approx(q["ci_high"], rel=1e-12)
        compared += 1
    assert compared > 100
    mine = store.table("verdicts", run.run_id).set_index("check_name")
    theirs = combined.table("verdicts", row["run_id"]).set_index("check_name")
    for name in (
        "faceage_mae",
        "faceage_pearson_r",
        "risk_c_index",
        "faceage_adjusted_hr_per_decade",
    ):
        assert theirs.loc[name, "status"] == mine.loc[name, "status"], name
        assert theirs.loc[name, "value"] == pytest.approx(mine.loc[name, "value"], rel=1e-9)
    assert theirs.loc["site_consistency", "status"] == "skipped"  # one site: none to compare
    page_file = tmp_path / "combined" / "runs" / row["run_id"] / "index.html"
    page = page_file.read_text()
    assert "Combined audit of 1 site (site-a)" in page and "site-a" in page
    from audit.report.render import render_all

    render_all(tmp_path / "combined" / "audit.duckdb")  # from DuckDB alone: the same page
    assert page_file.read_text() == page
    for value in store.table("cohort_rows", run.run_id)["subject_id"].head(50):
        assert value not in page


def test_robustness_drift_and_calibration_by_decile_travel_in_the_bundle(audited, tmp_path):
    """The share moved beyond tolerance (binomial SE) and the mean shift per perturbation,
    each drift effect, and calibration by decile (observed minus predicted survival, the
    Kaplan-Meier CI less the prediction), from a store's tables; small groups withheld."""
    from audit.pipeline.store import Store

    run, root = audited
    source = Store(root / "out" / "audit.duckdb")
    curves = source.table("survival_curves", run.run_id)
    store = Store(tmp_path / "audit.duckdb")
    run_id = store.start_run(flow="monitor", cohort_name="x", cohort_sha256="0" * 64)
    robustness = pd.DataFrame(
        {
            "model": "m", "output": "faceage", "perturbation": "jpeg", "severity": [3, 3],
            "attribute": ["all", "race"], "group_name": ["all", "Other"], "n": [200, 4],
            "mean_abs_shift": [1.5, 2.0], "frac_over_tolerance": [0.1, 0.25],
        }
    )  # fmt: skip
    drift = pd.DataFrame(
        {"model": [None, "m"], "feature": ["age", "faceage"], "kind": ["metadata", "predictions"],
         "effect": [0.31, 0.12], "n_current": [200, 200]}
    )  # fmt: skip
    store.write_stage(
        run_id,
        "x",
        {
            "robustness": robustness,
            "drift": drift,
            "survival_curves": curves,
            "cohort_rows": source.table("cohort_rows", run.run_id),
        },
    )
    doc = build_bundle(store, run_id, "s")
    q = {(e["quantity"], e["attribute"], e["group"], e["output"]): e for e in doc["quantities"]}
    share = q[("robustness_over_tolerance:jpeg@3", "all", "all", "faceage")]
    assert share["estimate"] == pytest.approx(0.1)
    assert share["se"] == pytest.approx(np.sqrt(0.1 * 0.9 / 200)) and share["n"] == 200
    assert q[("robustness_mean_abs_shift:jpeg@3", "all", "all", "faceage")]["se"] is None
    assert "suppressed" in q[("robustness_over_tolerance:jpeg@3", "race", "Other", "faceage")]
    assert q[("drift_effect:age", "all", "all", "metadata")]["model"] == "cohort"
    assert q[("drift_effect:faceage", "all", "all", "predictions")]["estimate"] == 0.12
    cal = curves[curves["curve"] == "calibration:risk"].iloc[0]
    gap = q[("calibration_gap", "predicted_risk_decile", cal["group_name"], "risk")]
    assert gap["estimate"] == pytest.approx(cal["survival"] - cal["predicted"])
    assert gap["ci_low"] == pytest.approx(cal["survival_low"] - cal["predicted"])
    assert gap["horizon"] == pytest.approx(cal["time"]) and gap["n"] == cal["at_risk"]


def test_a_run_and_its_combined_audit_write_valid_chai_cards_and_an_accuracy_sheet(
    audited, tmp_path
):
    """Beside the run and beside a combined audit: a CHAI applied model card per model that
    its packaged schema accepts (and that the schema rejects once an element is missing or
    added), and the EU AI Act Art. 15(3) sheet whose numbers are the run's accuracy rows
    (the pooled ones for the combined audit) with their population."""
    import audit
    from audit.pipeline.store import Store
    from audit.report.regulatory import chai_problems

    run, root = audited
    run_dir = root / "out" / "runs" / run.run_id
    store = Store(root / "out" / "audit.duckdb")
    (card_file,) = (run_dir / "chai").glob("*.json")
    card = json.loads(card_file.read_text())
    assert chai_problems(card) == []
    assert card["BasicInfo"]["ModelName"] == "predictions-faceage-risk"
    results = card["KeyMetrics"]["UsefulnessUsabilityEfficacy"]["Results"]["MetricResult"]
    mae = json.loads(next(r for r in results if r["Label"] == "faceage mae")["ValueJson"])
    acc = store.table("accuracy", run.run_id)
    row = acc[(acc["metric"] == "mae") & (acc["attribute"] == "all")].iloc[0]
    assert mae["value"] == pytest.approx(row["value"]) and mae["ci_low"] == pytest.approx(
        row["ci_low"]
    )
    broken = json.loads(card_file.read_text())
    del broken["Warnings"]["ClinicalRiskLevel"]
    broken["BasicInfo"]["Extra"] = "x"
    problems = chai_problems(broken)
    assert any("ClinicalRiskLevel" in p for p in problems) and any("Extra" in p for p in problems)
    sheet = json.loads((run_dir / "eu_ai_act_accuracy.json").read_text())
    assert sheet["regulation"].startswith("Regulation (EU) 2024/1689")
    (model,) = sheet["models"]
    assert model["population"]["subjects"] == 300
    m = next(x for x in model["metrics"] if x["metric"] == "mae" and x["output"] == "faceage")
    assert m["value"] == pytest.approx(row["value"]) and m["check"] == "faceage_mae"
    kinds = set(store.table("artifacts", run.run_id)["kind"])
    assert {"chai_model_card_json", "eu_ai_act_accuracy_json"} <= kinds

    bundle = write_bundle(store, run.run_id, "site-a", tmp_path / "a.json")
    combined = audit.combine([bundle], out=tmp_path / "combined")
    out = tmp_path / "combined" / "runs" / combined.run_id
    (pooled_card,) = (out / "chai").glob("*.json")
    assert chai_problems(json.loads(pooled_card.read_text())) == []
    pooled_sheet = json.loads((out / "eu_ai_act_accuracy.json").read_text())
    pm = next(
        x
        for x in pooled_sheet["models"][0]["metrics"]
        if x["metric"] == "mae" and x["output"] == "faceage"
    )
    assert pm["value"] == pytest.approx(row["value"]) and pm["sites"] == 1
    tripod = json.loads((out / "tripod_ai.json").read_text())
    items = {i["item"]: i for i in tripod["items"]}
    assert len(items) == 52 and items["23b"]["status"] == "answered"
    assert items["6a"]["note"] == "1 centre: site-a."
