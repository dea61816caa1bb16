"""The audit flow end to end under Prefect, the CLI's exit codes, and crash consistency."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import cli_run

from audit.cli import main
from audit.data.hashing import sha256_file
from audit.pipeline.store import Store

LENIENT = """
[thresholds]
faceage_mae_max = 20.0
faceage_pearson_min = 0.3
risk_cindex_min = 0.5
[accuracy]
n_boot = 200
[survival]
n_boot = 20
[robustness]
perturbations = ["brightness", "gaussian_blur", "jpeg", "surgical_mask"]
severities = [1, 3]
sample_subjects = 30
"""
STRICT = LENIENT.replace("faceage_mae_max = 20.0", "faceage_mae_max = 0.5")


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "lenient.toml"
    path.write_text(LENIENT)
    return path


def _oracle_spec(folder: Path) -> Path:
    spec = folder / "oracle.yaml"
    spec.write_text("name: oracle\nkind: predictions\noutputs: {faceage: faceage, risk: risk}\n")
    return spec


@pytest.fixture(scope="module")
def lenient_run(tmp_path_factory, prefect_harness, demo_cohort):
    """One audit of the demo cohort (the oracle's predictions, the lenient config), run once
    for the tests of this module that read it; each copies its folder before adding to it."""
    folder = tmp_path_factory.mktemp("lenient")
    config = folder / "lenient.toml"
    config.write_text(LENIENT)
    spec = _oracle_spec(folder)
    out = folder / "out"
    code = cli_run(demo_cohort, str(spec), out, config=config)
    run = Store(out / "audit.duckdb").runs().iloc[-1]
    result = {
        "verdict": run["verdict"],
        "run_id": run["run_id"],
        "report": str(out / "runs" / run["run_id"] / "index.html"),
    }
    return {"out": out, "result": result, "spec": spec, "code": code}


def _copy_of(run: dict, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    return out


def test_a_run_publishes_its_verdict_metrics_and_report_as_prefect_artifacts(lenient_run):
    """A Prefect UI user sees the verdict table, the headline metrics and a link to the
    report, under keys that keep the cohort's history; read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from audit.orchestrate.artifacts import artifact_key

    run_id = lenient_run["result"]["run_id"]
    store = Store(lenient_run["out"] / "audit.duckdb")
    name = store.run(run_id)["cohort_name"]
    keys = {what: artifact_key(name, what) for what in ("verdict", "metrics", "report")}
    assert all(re.fullmatch(r"[a-z0-9-]+", k) for k in keys.values())
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys.values())))
        )
    mine = {a.key: a for a in found if run_id in (a.description or "")}
    assert set(mine) == set(keys.values())
    verdict = mine[keys["verdict"]].data
    checks = store.table("verdicts", run_id)
    assert verdict.startswith("## verdict: PASS") and "| status | model | check |" in verdict
    assert all(f"| {c} |" in verdict for c in checks["check_name"])
    table = json.loads(mine[keys["metrics"]].data)
    acc = store.table("accuracy", run_id)
    mae = acc[(acc.metric == "mae") & (acc.attribute == "all")].iloc[0]
    row = next(r for r in table if r["metric"] == "mae")
    assert row["value"] == pytest.approx(mae["value"], rel=1e-3) and row["n"] == mae["n"]
    link = mine[keys["report"]].data
    assert Path(lenient_run["result"]["report"]).resolve().as_uri() in link


def test_audit_flow_end_to_end(lenient_run, demo_cohort, tmp_path):
    from flows.audit import audit_flow

    out = _copy_of(lenient_run, tmp_path)
    spec, result = lenient_run["spec"], lenient_run["result"]
    assert result["verdict"] == "pass"
    assert Path(result["report"]) == (lenient_run["out"] / "runs" / result["run_id"] / "index.html")
    result = {**result, "report": str(out / "runs" / result["run_id"] / "index.html")}
    store = Store(out / "audit.duckdb")
    run = store.run(result["run_id"])
    assert run["status"] == "finished" and run["verdict"] == "pass" and run["synthetic"]
    assert len(run["cohort_sha256"]) == 64 and len(run["config_sha256"]) == 64
    assert store.table("cohort_rows", run["run_id"])["included"].sum() == 400
    preds = store.table("predictions", run["run_id"])
    assert set(preds["output"]) == {"faceage", "risk"} and len(preds) == 800
    models = store.table("survival_models", run["run_id"])
    assert {
        "faceage_per_decade__unadjusted",
        "faceage_per_decade__age_sex",
        "faceage_per_decade__clinical",
        "risk_quartiles__age_sex",
    } <= set(models["model_id"])
    assert len(store.table("survival_curves", run["run_id"])) > 0
    stages = store.table("run_stages", run["run_id"])["stage"].tolist()
    assert stages == [
        "validate",
        "predictions",
        "robustness",
        "paired",
        "saliency",
        "accuracy",
        "fairness",
        "survival",
        "slices",
        "drift",
        "estimate",
        "verdict",
        "publish",
    ]
    notes = store.table("run_stages", run["run_id"]).set_index("stage")["note"]
    assert "no reference given" in notes["drift"]
    assert notes["saliency"].startswith("saliency not run: off")  # the default
    assert "declares no paired study" in notes["paired"]
    fair = store.table("fairness", run["run_id"])
    assert {"faceage", "risk"} == set(fair["output"]) and "sex x race" in set(fair["attribute"])
    checks = store.table("verdicts", run["run_id"]).set_index("check_name")
    assert checks.loc["fairness_faceage", "status"] == "pass"
    assert len(store.table("survival_subgroups", run["run_id"])) > 0
    decisions = store.table("decision_curves", run["run_id"])
    horizons = sorted(decisions["horizon"].unique())
    assert horizons and set(horizons) <= {1.0, 2.0}  # the default decision horizons
    nested = decisions["model_id"].str.startswith("incremental__")
    # two scores x three strategies (model, chronological age, treat all) x 18 thresholds
    assert (~nested).sum() == 2 * 3 * 18 * len(horizons)
    # the nested models (clinical, + FaceAge, + risk) and treat all, at each threshold
    assert nested.sum() == 4 * 18 * len(horizons)
    assert decisions.loc[nested, "compared_to"].dropna().nunique() == 2
    by_group = store.table("decision_subgroups", run["run_id"])
    assert set(by_group["model_id"]) == {"faceage", "risk"}
    assert {"sex", "race", "age_band"} <= set(by_group["attribute"])
    assert set(by_group["status"]) <= {"useful", "uncertain", "harmful", "too_small", "undefined"}
    robust_note = (
        store.table("run_stages", run["run_id"]).set_index("stage").at["robustness", "note"]
    )
    assert "robustness not run: the cohort carries predictions, not photos" in robust_note
    page = Path(result["report"])
    assert page == out / "runs" / run["run_id"] / "index.html" and page.is_file()
    html = page.read_text()
    for section in ("verdict", "validation", "composition", "accuracy", "survival", "trail"):
        assert f'id="{section}"' in html
    assert "Synthetic data" in html
    assert html.count("<h4>Decision curve:") == 2 * len(horizons)
    assert html.count("<h4>Added clinical utility: nested models") == len(horizons)
    assert "<h3>Clinical utility within subgroups</h3>" in html
    card = (page.parent / "model_card.html").read_text()
    assert "Clinical utility: decision curves" in card and "Added clinical utility" in card
    assert len(pd.read_csv(page.parent / "data" / "decision_curves.csv")) == len(decisions)
    assert "P000001" not in html and "S000001" not in html  # no raw ids leave the site
    verdict = json.loads((page.parent / "verdict.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["run_id"] == run["run_id"]
    artifacts = store.table("artifacts", run["run_id"])
    assert set(artifacts["kind"]) == {
        "report_html",
        "verdict_json",
        "run_manifest",
        "model_card_html",
        "model_card_json",
        "tripod_ai_html",
        "tripod_ai_json",
        "chai_model_card_json",
        "eu_ai_act_accuracy_json",
        "csv_export",
    }
    for a in artifacts.itertuples():  # every artifact is where it says, with its digest
        assert sha256_file(out / a.path) == a.sha256, a.path

    # a second run appends to the same database and the index lists both; its config
    # declares a range of decision thresholds, which the verdict then judges
    judged = tmp_path / "judged.toml"
    judged.write_text(
        LENIENT.replace(
            "[thresholds]\n",
            "[thresholds]\nnet_benefit_range = [0.2, 0.3]\nnet_benefit_horizon = 1.0\n",
        )
    )
    second = audit_flow(
        cohort=str(demo_cohort), models=[str(spec)], out=str(out), config=str(judged)
    )
    assert len(store.runs()) == 2
    utility = (
        store.table("verdicts", second["run_id"])
        .set_index("check_name")
        .loc[
            [
                "faceage_net_benefit",
                "risk_net_benefit",
                "faceage_net_benefit_subgroups",
                "risk_net_benefit_subgroups",
            ]
        ]
    )
    assert utility["status"].isin(["pass", "fail"]).all()
    assert utility["details"].str.contains("20% to 30% at 1 year").all()
    assert "faceage_net_benefit" not in set(store.table("verdicts", run["run_id"])["check_name"])
    index = (out / "index.html").read_text()
    assert result["run_id"] in index and second["run_id"] in index
    assert "of each finished run over time" in index  # trend plots of two finished runs


def test_cli_exit_codes(lenient_run, demo_cohort, tmp_path, config, capsys):
    spec = str(lenient_run["spec"])
    out = _copy_of(lenient_run, tmp_path)
    assert lenient_run["code"] == 0  # the shared run passed every check
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT)
    capsys.readouterr()
    assert cli_run(demo_cohort, spec, out, config=strict) == 1
    # the terminal says what failed, against what, and where to look
    said = " ".join(capsys.readouterr().err.split())
    assert "verdict: FAIL" in said and "checks: " in said and " failed" in said
    assert re.search(r"FAIL oracle: faceage_mae \([\d.]+ against 0.5\): MAE", said), said
    assert "manifest rows:" in said and "database: " in said and "report: " in said
    store = Store(out / "audit.duckdb")
    runs = store.runs()
    assert runs["verdict"].tolist() == ["pass", "fail"]
    failed = store.table("verdicts", runs["run_id"].iloc[1])
    assert failed.loc[failed["check_name"] == "faceage_mae", "status"].item() == "fail"
    # unusable input: exit 2, and no run row where no run could start
    assert cli_run(tmp_path / "nowhere", spec, out) == 2
    assert cli_run(demo_cohort, "nonsense:x", out) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds]\nfaceage_mae_maximum = 3\n")
    assert cli_run(demo_cohort, spec, out, config=bad) == 2
    # caught before the run starts (the manifest's header has no such column): no run row
    assert cli_run(demo_cohort, "predictions:no_such_column", out) == 2
    assert len(store.runs()) == 2
    # found once the run has started (the tabular cohort has no photos for an image model):
    # the run's row says failed, with the reason
    assert cli_run(demo_cohort, "demo:faceage", out) == 2
    runs = store.runs()
    assert len(runs) == 3 and runs["status"].iloc[-1] == "failed"
    assert "needs images" in runs["error"].iloc[-1]
    assert main(["report", "--db", str(tmp_path / "missing.duckdb")]) == 2
    assert main(["frobnicate"]) == 2


def test_cli_internal_error_is_exit_3(prefect_harness, demo_cohort, tmp_path, monkeypatch):
    from audit import stages

    def broken(ctx, *results):
        raise RuntimeError("a bug")

    monkeypatch.setattr(stages, "survival_stage", broken)
    out = tmp_path / "out"
    assert cli_run(demo_cohort, "predictions:faceage,risk", out) == 3
    run = Store(out / "audit.duckdb").runs().iloc[-1]
    assert run["status"] == "failed" and "a bug" in run["error"]


@pytest.mark.slow  # re-rendering byte for byte stays in make test: test_legacy
def test_report_rerenders_from_duckdb_alone(lenient_run, tmp_path):
    out = _copy_of(lenient_run, tmp_path)
    run_id = Store(out / "audit.duckdb").runs()["run_id"].iloc[0]
    elsewhere = tmp_path / "elsewhere"
    assert main(["report", "--db", str(out / "audit.duckdb"), "--out", str(elsewhere)]) == 0
    original = (out / "runs" / run_id / "index.html").read_text()
    assert (elsewhere / "runs" / run_id / "index.html").read_text() == original
    recorded = Store(out / "audit.duckdb").table("artifacts", run_id)
    for a in recorded.itertuples():  # the page, the dossier and the CSVs: byte-identical
        if a.kind != "run_manifest":  # signed by the run, not by a re-render
            assert sha256_file(elsewhere / a.path) == a.sha256, a.path
    assert (elsewhere / "index.html").is_file()
    shown = tmp_path / "shown"
    assert (
        main(["report", "--db", str(out / "audit.duckdb"), "--out", str(shown), "--show-ids"]) == 0
    )


# one kill point in `make test`; the others in `make test-all` (each costs a whole audit)
KILL_POINTS = [
    pytest.param("validate:mid-transaction", marks=pytest.mark.slow),
    "accuracy:mid-transaction",
    pytest.param("survival:after-commit", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_a_killed_run_leaves_a_consistent_database(
    prefect_harness, demo_cohort, tmp_path, config, kill_at
):
    from prefect.settings import PREFECT_API_URL

    out = tmp_path / "out"
    env = dict(os.environ, FACEAGE_AUDIT_KILL_AT=kill_at, PREFECT_API_URL=PREFECT_API_URL.value())
    cmd = [
        sys.executable,
        "-m",
        "audit.cli",
        "run",
        "--cohort",
        str(demo_cohort),
        "--model",
        "predictions:faceage,risk",
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        proc.wait(timeout=240)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]

    store = Store(out / "audit.duckdb")
    killed = store.runs().iloc[0]
    assert killed["status"] == "running"
    stage, moment = kill_at.split(":")
    done = store.table("run_stages", killed["run_id"])["stage"].tolist()
    if moment == "mid-transaction":
        assert stage not in done
        table = {"validate": "cohort_rows", "accuracy": "accuracy"}[stage]
        assert store.table(table, killed["run_id"]).empty  # no half-written stage
    else:
        assert done[-1] == stage
        assert len(store.table("survival_models", killed["run_id"])) > 0

    # the next run marks the dead one abandoned and finishes normally
    assert cli_run(demo_cohort, "predictions:faceage,risk", out, config=config) == 0
    runs = store.runs()
    assert runs["status"].tolist() == ["abandoned", "finished"]
    con = duckdb.connect(str(out / "audit.duckdb"), read_only=True)
    orphans = con.execute(
        "SELECT count(*) FROM predictions WHERE run_id NOT IN (SELECT run_id FROM runs)"
    ).fetchall()[0][0]
    con.close()
    assert orphans == 0


@pytest.mark.slow  # a killed run's consistency stays in make test (the parameter above)
def test_a_run_killed_inside_the_robustness_stage_keeps_no_perturbed_row(
    prefect_harness, tmp_path, config
):
    """The longest stage of an image audit, killed inside its transaction: no robustness
    row, no perturbed prediction and no cache row of it survive; the clean pass does."""
    from prefect.settings import PREFECT_API_URL

    from audit.demo.world import write_cohort

    cohort = write_cohort(tmp_path / "faces", 40, seed=4343, photos=True)
    out = tmp_path / "out"
    env = dict(
        os.environ,
        FACEAGE_AUDIT_KILL_AT="robustness:mid-transaction",
        PREFECT_API_URL=PREFECT_API_URL.value(),
    )
    cmd = [
        sys.executable,
        "-m",
        "audit.cli",
        "run",
        "--cohort",
        str(cohort),
        "--model",
        "demo:faceage",
        "--out",
        str(out),
        "--config",
        str(config),
    ]
    proc = subprocess.run(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = Store(out / "audit.duckdb")
    run_id = store.runs()["run_id"].iloc[0]
    assert store.table("run_stages", run_id)["stage"].tolist() == ["validate", "predictions"]
    assert store.table("robustness", run_id).empty
    preds = store.table("predictions", run_id)
    assert len(preds) == 40 and set(preds["perturbation"]) == {"none"}
    cache = store.query("SELECT DISTINCT perturbation FROM prediction_cache")
    assert cache["perturbation"].tolist() == ["none"]


def test_real_predictions_only_cohort_end_to_end(prefect_harness, utk_cohort, tmp_path):
    """The FaceAge model's real UTKFace predictions: accuracy runs, survival says why not."""
    from flows.audit import audit_flow

    out = tmp_path / "out"
    result = audit_flow(
        cohort=str(utk_cohort),
        models=["predictions:faceage"],
        out=str(out),
        overrides={"accuracy": {"n_boot": 200}},
    )
    store = Store(out / "audit.duckdb")
    acc = store.table("accuracy", result["run_id"])
    mae = acc[(acc.metric == "mae") & (acc.attribute == "all")].iloc[0]
    assert round(mae.value, 2) == 7.46
    verdicts = store.table("verdicts", result["run_id"]).set_index("check_name")
    assert verdicts.loc["faceage_mae", "status"] == "pass"  # 7.46 <= 8
    assert verdicts.loc["faceage_adjusted_hr_per_decade", "status"] == "skipped"
    # Beyond the straight line of regression to the mean, the error bends at the ends of the
    # age range (FaceAge under-predicts the oldest by about 3 years more). A linear age
    # adjustment left that bend to fail fairness as a bias of >85 and of 90-99 (twice); the
    # spline adjustment removes it from every group and reports it once, as its own finding.
    assert verdicts.loc["fairness_faceage", "status"] == "pass"
    assert (verdicts["status"] != "fail").all() and result["verdict"] == "pass"
    fair = store.table("fairness", result["run_id"])
    bend = fair[fair.metric == "error_age_curvature"].iloc[0]
    assert bend["attribute"] == "all" and bend["ci_low"] > 0.3
    assert store.table("survival_models", result["run_id"]).empty
    html = Path(result["report"]).read_text()
    assert "no outcome columns" in html and "Synthetic data" not in html
    assert "20170110153238490" not in html  # a UTKFace photo id


def test_bad_rows_are_quarantined_and_the_rest_is_audited(
    prefect_harness, demo_cohort, tmp_path, config
):
    import shutil

    import pandas as pd

    from flows.audit import audit_flow

    cohort = tmp_path / "messy"
    shutil.copytree(demo_cohort, cohort)
    manifest = pd.read_csv(cohort / "manifest.csv", dtype=str)
    manifest.loc[4, "age"] = "sixty"
    manifest.loc[9, "death"] = "maybe"
    manifest.loc[14, "faceage"] = ""
    manifest.loc[7, "faceage"] = "150"  # a number, but no age
    manifest.to_csv(cohort / "manifest.csv", index=False)
    out = tmp_path / "out"
    result = audit_flow(
        cohort=str(cohort), models=["predictions:faceage,risk"], out=str(out), config=str(config)
    )
    store = Store(out / "audit.duckdb")
    q = store.table("quarantine", result["run_id"]).sort_values("row_number")
    assert q[["stage", "row_number", "column_name"]].values.tolist() == [
        ["load", 5, "age"],
        ["predictions", 8, "faceage"],
        ["load", 10, "death"],
        ["predictions", 15, "faceage"],
    ]
    assert "outside 0-120" in q.set_index("row_number").at[8, "reason"]
    assert all(q["source_file"] == str(cohort / "manifest.csv"))
    rows = store.table("cohort_rows", result["run_id"])
    assert rows["included"].sum() == 398 and (~rows["included"]).sum() == 2
    acc = store.table("accuracy", result["run_id"])
    assert acc[(acc.metric == "mae") & (acc.attribute == "all")].iloc[0].n == 396
    html = Path(result["report"]).read_text()
    assert "cannot parse &#39;sixty&#39;" in html
    bad_id = manifest.loc[4, "photo_id"]
    assert bad_id not in html  # pseudonymised
    from audit.data.privacy import pseudonym

    assert pseudonym(bad_id) in html


def test_validate_command_exit_codes(prefect_harness, tmp_path, capsys):
    from audit.demo.world import write_cohort

    clean = write_cohort(tmp_path / "clean", 80, seed=616, photos=True)
    messy = write_cohort(tmp_path / "messy", 200, seed=617, photos=True, defects=True)
    out = tmp_path / "out"
    assert main(["validate", "--cohort", str(clean), "--out", str(out)]) == 0
    assert "validation: CLEAN" in capsys.readouterr().err
    assert main(["validate", "--cohort", str(messy), "--out", str(out), "--show-ids"]) == 1
    # the terminal counts the quarantined rows by kind of reason, naming no id
    said = " ".join(capsys.readouterr().err.split())
    assert "validation: ERRORS FOUND" in said and "quarantined rows by reason:" in said
    assert "FAIL quarantine_fraction" in said
    assert re.search(r"\b2 validate: byte-identical to photo <id> of another subject", said)
    ids = pd.read_csv(messy / "manifest.csv")
    assert not any(i in said for i in set(ids["photo_id"]) | set(ids["subject_id"]))
    unusable = tmp_path / "unusable"
    unusable.mkdir()
    (unusable / "cohort.yaml").write_text("name: no-age\n")
    (unusable / "manifest.csv").write_text("photo_id,sex\na,male\n")
    assert main(["validate", "--cohort", str(unusable), "--out", str(out)]) == 2
    store = Store(out / "audit.duckdb")
    runs = store.runs()
    assert runs["flow"].tolist() == ["validate"] * 3
    assert runs["verdict"].tolist()[:2] == ["pass", "fail"] and runs["status"].iloc[2] == "failed"
    assert "age" in runs["error"].iloc[2]
    messy_id = runs["run_id"].iloc[1]
    props = store.table("image_properties", messy_id)
    assert len(props) > 0 and {"brightness", "sharpness", "jpeg_quality"} <= set(props.columns)
    html = (out / "runs" / messy_id / "index.html").read_text()
    assert "Validation of" in html and "byte-identical" in html
    # a validation run audits data, not a model: no model card, no TRIPOD+AI map
    assert not (out / "runs" / messy_id / "model_card.html").exists()
    assert 'href="tripod_ai.html"' not in html and 'href="data/quarantine.csv"' in html
    # --show-ids: the site's operator gets a copy with raw ids and paths in the cohort folder,
    # marked on the page; the shared page keeps one pseudonym per id and no banner
    rows = pd.read_csv(messy / "manifest.csv", dtype=str)
    ids = set(rows["photo_id"]) | set(rows["subject_id"])
    site = (out / "site-only" / "runs" / messy_id / "index.html").read_text()
    assert "For this site only." in site and "For this site only." not in html
    quarantined = store.table("quarantine", messy_id)
    images = quarantined[quarantined["column_name"] == "image_path"]
    assert len(images) and all(p in site for p in images["photo_id"])
    relative = {Path(f).relative_to(messy.resolve()).as_posix() for f in images["source_file"]}
    assert all(f"<td>{r}</td>" in site for r in relative), relative
    assert not any(re.search(rf"\b{re.escape(i)}\b", html) for i in ids)
    from audit.data.privacy import pseudonym

    assert set(re.findall(r"id-[0-9a-f]{12}", html)) <= {pseudonym(i) for i in ids}


@pytest.mark.slow  # a whole audit twice over (make test-all)
def test_the_prediction_cache_recomputes_nothing_it_has(prefect_harness, tmp_path, config):
    """A rerun computes nothing; an overlapping cohort computes only its new photos."""
    import shutil

    import pandas as pd

    from audit.demo.world import write_cohort

    first = write_cohort(tmp_path / "a", 60, seed=717, photos=True)
    out = tmp_path / "out"
    args = ["--model", "demo:faceage", "--out", str(out), "--config", str(config)]
    main(["run", "--cohort", str(first)] + args)
    main(["run", "--cohort", str(first)] + args)
    overlap = tmp_path / "b"
    shutil.copytree(first, overlap)
    extra = write_cohort(tmp_path / "extra", 20, seed=718, photos=True)
    manifest = pd.read_csv(overlap / "manifest.csv", dtype=str)
    more = pd.read_csv(extra / "manifest.csv", dtype=str)
    more["photo_id"] = "X" + more["photo_id"]
    more["subject_id"] = "X" + more["subject_id"]
    more["image_path"] = "extra/" + more["image_path"]
    shutil.copytree(extra / "images", overlap / "images" / "extra")
    pd.concat([manifest, more]).to_csv(overlap / "manifest.csv", index=False)
    main(["run", "--cohort", str(overlap)] + args)

    store = Store(out / "audit.duckdb")
    runs = store.runs()["run_id"].tolist()
    notes = [
        store.table("run_stages", r).set_index("stage").at["predictions", "note"] for r in runs
    ]
    assert "0 photos from the prediction cache, 60 computed" in notes[0]
    assert "60 photos from the prediction cache, 0 computed" in notes[1]
    assert "60 photos from the prediction cache, 20 computed" in notes[2]

    def clean(run_id):
        p = store.table("predictions", run_id)
        return p[p["perturbation"] == "none"].set_index("photo_id")["value"].sort_index()

    pd.testing.assert_series_equal(clean(runs[0]), clean(runs[1]))
    # The robustness suite's perturbed passes are cached too: the rerun computes none.
    robust = [
        store.table("run_stages", r).set_index("stage").at["robustness", "note"] for r in runs
    ]
    passes = 1 + 2 * 4  # clean + 4 perturbations at 2 severities
    assert f"30 photos x {passes} passes" in robust[0]
    assert f": {30 * (passes - 1)} computed, 30 from" in robust[0]  # clean: from the cache
    assert f": 0 computed, {30 * passes} from the prediction cache" in robust[1]
    order = ["perturbation", "severity", "attribute", "group_name"]
    r0, r1 = (
        store.table("robustness", r).sort_values(order).reset_index(drop=True) for r in runs[:2]
    )
    pd.testing.assert_frame_equal(r0, r1)
    emb = store.query("SELECT count(*) AS n FROM embeddings WHERE run_id = ?", [runs[1]])
    assert emb["n"].iloc[0] == 60


@pytest.mark.slow  # two whole audits; Dask itself stays in `make test` (a worker that dies)
def test_dask_runner_gives_exactly_the_rows_of_the_local_runner(
    prefect_harness, tmp_path, config, monkeypatch
):
    """Shards on a 2-worker LocalCluster; the flow alone writes DuckDB."""
    from prefect.settings import PREFECT_API_URL

    from audit.demo.world import write_cohort

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # for the Dask workers
    cohort = write_cohort(tmp_path / "c", 90, seed=818, photos=True, defects=True)
    local, dask = tmp_path / "local", tmp_path / "dask"
    common = [
        "--cohort",
        str(cohort),
        "--model",
        "demo:faceage",
        "--model",
        "demo:survival",
        "--config",
        str(config),
    ]
    main(["run", *common, "--out", str(local)])
    main(["run", *common, "--out", str(dask), "--runner", "dask", "--shards", "3"])

    def rows(out, table, order):
        store = Store(out / "audit.duckdb")
        run_id = store.runs()["run_id"].iloc[-1]
        assert store.run(run_id)["status"] == "finished"
        return store.table(table, run_id).sort_values(order).reset_index(drop=True), store, run_id

    order = ["model", "output", "perturbation", "severity", "photo_id"]
    a, _, _ = rows(local, "predictions", order)
    b, store, run_id = rows(dask, "predictions", order)
    assert set(a["perturbation"]) > {"none"}  # the robustness passes are there too
    by = ["model", "output", "perturbation", "severity", "attribute", "group_name"]
    ra, _, _ = rows(local, "robustness", by)
    rb, _, _ = rows(dask, "robustness", by)
    # batches differ between shards: float32 rounding only
    __import__("pandas").testing.assert_frame_equal(ra, rb, check_exact=False, rtol=1e-5, atol=1e-4)
    robust_note = store.table("run_stages", run_id).set_index("stage").at["robustness", "note"]
    assert "3 shards on worker process(es)" in robust_note
    pd_testing = __import__("pandas").testing
    # float32 rounding of differently composed batches: relative for ages, absolute near 0
    pd_testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-5)
    assert not b.duplicated(["model", "output", "photo_id", "perturbation", "severity"]).any()
    qa, _, _ = rows(local, "quarantine", ["stage", "photo_id", "reason"])
    qb, _, _ = rows(dask, "quarantine", ["stage", "photo_id", "reason"])
    pd_testing.assert_frame_equal(qa, qb)
    note = store.table("run_stages", run_id).set_index("stage").at["predictions", "note"]
    assert "3 shards on" in note
    import re

    pids = {int(p) for p in re.findall(r"[\w.-]+:(\d+)", note)}
    assert pids and os.getpid() not in pids  # shards ran in Dask worker processes


def test_a_worker_that_dies_mid_shard_costs_no_rows_and_duplicates_none(
    prefect_harness, tmp_path, config, monkeypatch
):
    from prefect.settings import PREFECT_API_URL

    from audit.demo.world import write_cohort

    marker = tmp_path / "killed"
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    monkeypatch.setenv("FACEAGE_AUDIT_KILL_SHARD", f"1:{marker}")
    cohort = write_cohort(tmp_path / "c", 60, seed=919, photos=True)
    out = tmp_path / "out"
    rc = cli_run(cohort, "demo:faceage", out, "--runner", "dask", "--shards", "3", config=config)
    assert marker.is_file()  # a worker really died on shard 1
    assert rc in (0, 1)
    store = Store(out / "audit.duckdb")
    run_id = store.runs()["run_id"].iloc[-1]
    preds = store.table("predictions", run_id)
    preds = preds[preds["perturbation"] == "none"]
    assert len(preds) == 60 and not preds["photo_id"].duplicated().any()
