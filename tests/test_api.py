"""The Python API: ``audit.run`` equals the CLI on the same cohort, config and seed; the
array functions equal independent implementations (fairlearn, lifelines); in-memory
cohorts; reopening runs; plots as figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import audit

# columns that name the run or the moment, not a result
RUN_SPECIFIC = {"run_id", "started_at", "finished_at", "created_at", "path", "sha256"}
COMPARED = [
    "accuracy",
    "fairness",
    "survival_models",
    "survival_terms",
    "survival_tests",
    "survival_metrics",
    "decision_curves",
    "predictions",
    "robustness",
    "verdicts",
]


def test_audit_run_inline_equals_the_cli(cli_and_api):
    cli, api = cli_and_api["cli"], cli_and_api["api"]
    assert cli_and_api["code"] in (0, 1)
    assert api.verdict_status == cli.verdict_status == cli.info["verdict"]
    assert api.info["flow"] == "audit" and api.info["status"] == "finished"
    assert api.report_path.is_file() and api.report_path.parent.name == api.run_id
    for name in COMPARED:
        a, c = api.table(name), cli.table(name)
        assert len(a) == len(c) > 0, name
        keep = [col for col in a.columns if col not in RUN_SPECIFIC]
        pd.testing.assert_frame_equal(
            a[keep], c[keep], check_exact=False, rtol=1e-9, atol=1e-12, obj=name
        )
    # attribute access reads the same tables
    pd.testing.assert_frame_equal(api.accuracy, api.table("accuracy"))
    assert {"faceage_decade", "risk_sd"} <= set(api.survival["term"])
    stages = api.table("run_stages")
    assert set(stages["stage"]) == set(cli.table("run_stages")["stage"])
    # the summary the terminal prints: the same findings, whichever way the run was started
    said = api.summary().text()
    assert said.replace(api.run_id, "RUN") == cli.summary().text().replace(cli.run_id, "RUN")
    verdict = api.verdict
    failed = verdict[verdict["status"] == "fail"]
    assert f"{len(failed)} failed" in said
    assert all(f"{r.model}: {r.check_name}" in said for r in failed.itertuples() if r.model)


def test_open_run_finds_the_newest_and_names_a_missing_one(cli_and_api, tmp_path):
    api = cli_and_api["api"]
    assert audit.open_run(api.db).run_id == api.run_id
    with pytest.raises(audit.InputError, match="no run 20000101T000000Z-00000000"):
        audit.open_run(api.db, "20000101T000000Z-00000000")
    with pytest.raises(audit.InputError, match="no such DuckDB file"):
        audit.open_run(tmp_path / "none.duckdb")
    with pytest.raises(AttributeError, match="tables"):
        api.no_such_table  # noqa: B018


def test_unusable_arguments_are_input_errors(demo_cohort, tmp_path):
    with pytest.raises(audit.InputError, match="orchestrator 'celery'"):
        audit.run(demo_cohort, "demo:faceage", out=tmp_path, orchestrator="celery")
    with pytest.raises(audit.InputError, match="n_boot"):
        audit.run(demo_cohort, "demo:faceage", out=tmp_path, config={"accuracy": {"n_boot": -1}})
    with pytest.raises(audit.InputError, match="nothing"):
        audit.run(demo_cohort, "predictions:nothing", out=tmp_path)
    assert not (tmp_path / "audit.duckdb").exists()  # refused before any run was opened


def test_a_cohort_from_a_frame_is_audited_and_quarantines_bad_rows(tmp_path):
    rng = np.random.default_rng(5)
    n = 150
    age = rng.uniform(40, 85, n)
    frame = pd.DataFrame(
        {
            "photo_id": [f"p{i}" for i in range(n)],
            "subject_id": [f"s{i}" for i in range(n)],
            "age": age,
            "sex": rng.choice(["female", "male"], n),
            "faceage": age + rng.normal(0, 4, n),
        }
    )
    frame["age"] = frame["age"].astype(object)
    frame.loc[7, "age"] = "old"  # one unparsable value: that row is quarantined
    cohort = audit.Cohort.from_frame(frame, name="in-memory-test", folder=tmp_path / "c")
    assert len(cohort.frame) == n - 1
    q = cohort.quarantine
    assert q[["row_number", "column_name"]].values.tolist() == [[8, "age"]]
    run = audit.run(
        cohort, "predictions:faceage", out=tmp_path / "out", config={"accuracy": {"n_boot": 50}}
    )
    mae = run.accuracy.query("metric == 'mae' and attribute == 'all'")["value"].item()
    good = frame.drop(index=7)
    expected = np.mean(np.abs(good["faceage"] - good["age"].astype(float)))
    assert mae == pytest.approx(expected, rel=1e-12)
    assert run.info["cohort_name"] == "in-memory-test"


def test_faceage_metrics_equal_fairlearn_and_recover_a_planted_bias():
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import mean_absolute_error

    rng = np.random.default_rng(11)
    n = 2000
    age = rng.uniform(30, 90, n)
    sex = rng.choice(["female", "male"], n)
    pred = age + np.where(sex == "male", 3.0, 0.0) + rng.normal(0, 4, n)
    rows = audit.faceage_metrics(
        age, pred, sensitive_features=pd.Series(sex, name="sex"), n_boot=300, seed=1
    )
    frame = MetricFrame(
        metrics={"mae": mean_absolute_error, "mean_error": lambda t, p: float(np.mean(p - t))},
        y_true=age,
        y_pred=pred,
        sensitive_features=pd.Series(sex, name="sex"),
    )
    for metric in ("mae", "mean_error"):
        got = rows[(rows["metric"] == metric) & (rows["attribute"] == "sex")].set_index(
            "group_name"
        )["value"]
        for group in ("female", "male"):
            assert got[group] == pytest.approx(frame.by_group.at[group, metric], rel=1e-12)
        overall = rows[(rows["metric"] == metric) & (rows["attribute"] == "all")]["value"]
        assert overall.item() == pytest.approx(frame.overall[metric], rel=1e-12)
    male = rows[(rows["metric"] == "mean_error") & (rows["group_name"] == "male")].iloc[0]
    female = rows[(rows["metric"] == "mean_error") & (rows["group_name"] == "female")].iloc[0]
    # the planted 3-year bias: male's excess over female's lies within their intervals' reach
    assert male["ci_low"] - female["ci_high"] < 3.0 < male["ci_high"] - female["ci_low"]


def test_risk_metrics_equal_lifelines_per_group():
    from lifelines.utils import concordance_index

    rng = np.random.default_rng(3)
    n = 600
    group = rng.choice(["a", "b", "c"], n)
    score = rng.normal(size=n)
    time = rng.exponential(np.exp(-score))
    event = rng.random(n) < 0.7
    rows = audit.risk_metrics(time, event, score, sensitive_features={"g": group}, n_boot=50)
    assert rows["metric"].unique().tolist() == ["c_index"]
    for _, r in rows.iterrows():
        mask = np.ones(n, bool) if r["attribute"] == "all" else group == r["group_name"]
        expected = concordance_index(time[mask], -score[mask], event[mask])
        assert r["value"] == pytest.approx(expected, abs=1e-12), r["group_name"]


def test_plots_return_matplotlib_figures():
    from matplotlib.figure import Figure

    from audit.report import plots

    curves = pd.DataFrame(
        {
            "group_name": ["q1"] * 3 + ["q4"] * 3,
            "time": [0.5, 1.0, 2.0] * 2,
            "survival": [0.9, 0.8, 0.7, 0.7, 0.5, 0.3],
            "at_risk": [50, 40, 30, 50, 35, 20],
        }
    )
    fig = plots.km_plot(curves, "KM")
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2
    assert plots.to_uri(fig).startswith("data:image/png;base64,")


@pytest.mark.slow
def test_the_whole_demo_from_a_notebook_script_equals_the_cli(tmp_path, prefect_harness):
    """`faceage-audit demo` and examples/notebook_demo.py on the same seed: every result
    table equal (the full 600-subject demo with photos, robustness and saliency)."""
    import subprocess
    import sys
    from pathlib import Path

    from audit.cli import main

    root = Path(__file__).resolve().parents[1]
    assert main(["demo", "--out", str(tmp_path / "cli"), "--seed", "0"]) in (0, 1)
    res = subprocess.run(
        [sys.executable, str(root / "examples" / "notebook_demo.py"), str(tmp_path / "py"),
         "600", "0"], capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    cli, api = (audit.open_run(tmp_path / side / "audit.duckdb") for side in ("cli", "py"))
    assert api.verdict_status == cli.verdict_status
    for name in COMPARED + ["saliency", "drift", "survival_curves", "decision_subgroups"]:
        a, c = api.table(name), cli.table(name)
        assert len(a) == len(c), name
        keep = [col for col in a.columns if col not in RUN_SPECIFIC]
        pd.testing.assert_frame_equal(
            a[keep], c[keep], check_exact=False, rtol=1e-9, atol=1e-12, obj=name
        )


def test_the_excluded_share_by_group_is_in_the_verdict_and_the_model_card(cli_and_api):
    """Rows the data checks set aside are named by group (an oracle recomputes the group
    that lost the largest share) in the quarantine check and in every model card."""
    run = cli_and_api["api"]
    rows = run.table("cohort_rows")
    shares = sorted(
        (-(~g["included"].astype(bool)).mean(), f"{a} = {name}")
        for a in ("sex", "race", "cancer_type", "site")
        if a in rows and rows[a].notna().any()
        for name, g in rows.groupby(rows[a])  # rows the loader could not read: no group
        if len(g) > 1 and (~g["included"].astype(bool)).any()
    )
    share, group = -shares[0][0], shares[0][1]
    check = run.verdict.set_index("check_name").loc["quarantine_fraction"]
    assert f"most excluded: {group} {share:.0%}" in check["details"]
    card = (run.report_path.parent / "model_card.html").read_text()
    excluded = int((~rows["included"].astype(bool)).sum())
    assert f"{excluded} of {len(rows)} manifest rows" in card
    assert "excluded by the data checks" in card and group in card


def test_image_models_end_to_end(cli_and_api, tmp_path):
    """Rendered photos (with planted defects) through both demo models, by the CLI:
    predictions, embeddings, provenance, quarantine, robustness, photos only when asked."""
    import json
    import shutil

    from audit.cli import main
    from audit.models.demo import demo_spec
    from audit.pipeline.store import Store

    out = tmp_path / "out"
    shutil.copytree(cli_and_api["cli"].db.parent, out)
    rc = cli_and_api["code"]
    store = Store(out / "audit.duckdb")
    run = store.runs().iloc[-1]
    assert run["status"] == "finished" and rc in (0, 1)
    models = {m["name"]: m for m in json.loads(run["models"])}
    assert models["demo-faceage"]["checkpoint_sha256"] == demo_spec("faceage")["sha256"]
    preds = store.table("predictions", run["run_id"])
    assert set(preds["model"]) == {"demo-faceage", "demo-survival"}
    emb = store.query(
        "SELECT model, len(vector) AS d, count(*) AS n FROM embeddings "
        "WHERE run_id = ? GROUP BY ALL ORDER BY model",
        [run["run_id"]],
    )
    assert emb["d"].tolist() == [96, 96]
    q = store.table("quarantine", run["run_id"])
    assert {"load", "validate"} <= set(
        q["stage"]
    )  # bad rows, and bad files caught before inference
    assert emb["n"].iloc[0] == preds[preds.model == "demo-faceage"]["photo_id"].nunique()
    # robustness ran on the sample; the page shows no cohort photo unless asked
    rob = store.table("robustness", run["run_id"])
    assert set(rob["model"]) == {"demo-faceage", "demo-survival"}
    page = out / "runs" / run["run_id"] / "index.html"
    assert (
        "Robustness" in page.read_text() and "Cohort photos that moved most" not in page.read_text()
    )
    assert main(["report", "--db", str(out / "audit.duckdb"), "--show-faces"]) == 0
    shown = page.read_text()
    assert shown.count("Cohort photos that moved most") == 2  # one per model and output
