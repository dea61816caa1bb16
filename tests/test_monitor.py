"""Scheduled monitoring: the drop folder (complete, settling, audited once), alerts to a
webhook on localhost, and a deployment's scheduled run executed through Prefect's API."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from audit.pipeline.store import Store


@pytest.fixture
def receiver():
    """An HTTP endpoint on localhost collecting the JSON bodies POSTed to it."""
    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", got
    server.shutdown()


def test_scan_finds_complete_new_folders_only(tmp_path):
    from audit.data.inbox import scan
    from audit.demo.world import write_cohort

    inbox = tmp_path / "inbox"
    write_cohort(inbox / "a", 30, seed=1)
    write_cohort(inbox / "b", 30, seed=2)
    (inbox / "c").mkdir()  # a copy that has not brought its cohort.yaml yet
    store = Store(tmp_path / "out" / "audit.duckdb")
    now = time.time()
    status = {a.path.name: a.status for a in scan(inbox, store, settle_seconds=60, now=now)}
    assert status == {"a": "settling", "b": "settling", "c": "not_a_cohort"}
    (inbox / "a" / ".ready").touch()
    status = {a.path.name: a.status for a in scan(inbox, store, settle_seconds=60, now=now)}
    assert status["a"] == "ready" and status["b"] == "settling"
    later = {a.path.name: a.status for a in scan(inbox, store, settle_seconds=60, now=now + 120)}
    assert later["b"] == "ready"


def test_the_inbox_flow_audits_each_arrival_once_and_alerts(prefect_harness, tmp_path, receiver):
    from audit.demo.world import write_cohort
    from flows.monitor import inbox_flow

    url, got = receiver
    inbox = tmp_path / "inbox"
    write_cohort(inbox / "site-a", 120, seed=5)
    write_cohort(inbox / "site-b", 120, seed=6)
    (inbox / "broken").mkdir()
    (inbox / "broken" / "cohort.yaml").write_text("name: broken\n")  # no manifest
    config = tmp_path / "c.toml"
    config.write_text(
        f'[alerts]\nwebhook = "{url}"\n[inbox]\nsettle_seconds = 0\n'
        "[accuracy]\nn_boot = 50\n[survival]\nn_boot = 20\n[fairness]\nn_boot = 50\n"
        "[thresholds]\nfaceage_mae_max = 0.5\n"
    )  # every audit fails its verdict
    out = tmp_path / "out"
    first = inbox_flow(
        inbox=str(inbox), models=["predictions:faceage,risk"], out=str(out), config=str(config)
    )
    assert [os.path.basename(r["folder"]) for r in first] == ["broken", "site-a", "site-b"]
    assert first[0]["error"] and "manifest" in first[0]["error"]
    assert [r.get("verdict") for r in first[1:]] == ["fail", "fail"]
    # one alert per arrival: the failed run, and the two failed verdicts
    assert len(got) == 3 and {g["cohort_folder"].rsplit("/", 1)[-1] for g in got} == {
        "broken",
        "site-a",
        "site-b",
    }
    assert "the verdict is fail" in got[1]["summary"] and got[1]["run_id"]
    second = inbox_flow(
        inbox=str(inbox), models=["predictions:faceage,risk"], out=str(out), config=str(config)
    )
    assert [os.path.basename(r["folder"]) for r in second] == ["broken"]  # a and b are done
    runs = Store(out / "audit.duckdb").runs()
    assert (runs["status"] == "finished").sum() == 2


def test_a_deployment_runs_on_its_schedule_through_prefects_api(
    prefect_harness, tmp_path, monkeypatch, receiver
):
    """Build the deployments as `faceage-audit deploy` does (checked, paths absolute),
    register them with a Prefect runner against the test's Prefect server, and execute
    scheduled runs of the validation deployment through its API: one that works, and one
    whose cohort lost its manifest overnight, which fails in Prefect, is a failed run in
    audit.duckdb with the reason, and is alerted."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL

    from audit.demo.world import write_cohort
    from audit.orchestrate.deploy import api_problem, check_deployment
    from flows.deploy import build_deployments

    url, got = receiver
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # for the run's process
    assert api_problem(PREFECT_API_URL.value(), local=False) is None  # the server answers
    monkeypatch.chdir(tmp_path)
    write_cohort(tmp_path / "cohort", 60, seed=7)
    (tmp_path / "c.toml").write_text(f'[alerts]\nwebhook = "{url}"\n')
    plan = check_deployment(
        models=["predictions:faceage"],
        out="out",
        cohort="cohort",
        inbox=".",
        config="c.toml",
    )
    assert plan.cohort == str(tmp_path / "cohort") and plan.out == str(tmp_path / "out")
    deployments = build_deployments(
        models=plan.models,
        out=plan.out,
        cohort=plan.cohort,
        inbox=plan.inbox,
        config=plan.config,
        cron="0 3 * * *",
    )
    assert [d.name for d in deployments] == ["scheduled-validation", "monitor-inbox"]
    assert deployments[0].schedules[0].schedule.cron == "0 3 * * *"
    runner = Runner(name="faceage-audit-test", query_seconds=1)
    for d in deployments:
        runner.add_deployment(d)

    def scheduled_run():
        flow_run = run_deployment("validate/scheduled-validation", timeout=0)
        asyncio.run(runner.start(run_once=True))

        async def state():
            async with get_client() as client:
                return (await client.read_flow_run(flow_run.id)).state

        return asyncio.run(state())

    assert scheduled_run().is_completed()
    store = Store(tmp_path / "out" / "audit.duckdb")
    runs = store.runs()
    assert runs["flow"].tolist() == ["validate"] and runs["status"].iloc[0] == "finished"
    assert got == []
    (tmp_path / "cohort" / "manifest.csv").unlink()  # the site's export went missing
    assert scheduled_run().is_failed()
    failed = store.runs().iloc[-1]
    assert failed["status"] == "failed" and "manifest" in failed["error"]
    assert len(got) == 1 and "the validate run failed" in got[0]["summary"]
    assert got[0]["run_id"] == failed["run_id"]


def test_a_deployment_is_checked_whole_before_it_is_served(tmp_path, monkeypatch):
    """Every problem at once (folders, model specs, reference), files made absolute, and a
    schedule refused where no Prefect server would keep it."""
    from audit.errors import InputError
    from audit.orchestrate.deploy import absolute_spec, api_problem, check_deployment

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as err:
        check_deployment(
            models=["onnx:missing.onnx"],
            out="out",
            cohort="nowhere",
            inbox="inbox",
            reference="20261202T155225Z-8bc3c8f9",
        )
    said = str(err.value)
    for part in ("nowhere", "--inbox inbox", "missing.onnx", "20261202T155225Z-8bc3c8f9"):
        assert part in said, part
    assert absolute_spec("timm:resnet18:w/age.safetensors") == (
        f"timm:resnet18:{tmp_path / 'w' / 'age.safetensors'}"
    )
    assert absolute_spec("onnx:m.onnx") == f"onnx:{tmp_path / 'm.onnx'}"
    assert absolute_spec("predictions:faceage") == "predictions:faceage"
    assert "PREFECT_API_URL is not set" in api_problem(None, local=False)
    assert api_problem(None, local=True) is None
    assert "cannot be reached" in api_problem("http://127.0.0.1:9/api", local=False)


def test_a_run_that_cannot_start_is_recorded_failed_and_alerted(
    prefect_harness, tmp_path, receiver
):
    """A monitor run with a reference that does not exist (the slip of issue 20's trial)
    fails in Prefect, and is also a failed run in audit.duckdb with the reason, on the
    index page, and alerted once."""
    from audit.demo.world import write_cohort
    from audit.errors import InputError
    from audit.report import render_index
    from flows.monitor import monitor_flow

    url, got = receiver
    cohort = write_cohort(tmp_path / "site", 60, seed=8)
    config = tmp_path / "c.toml"
    config.write_text(f'[alerts]\nwebhook = "{url}"\n')
    out = tmp_path / "out"
    wrong = "20261202T155225Z-8bc3c8f9"
    with pytest.raises(InputError, match=f"no run {wrong}"):
        monitor_flow(
            cohort=str(cohort),
            reference=wrong,
            models=["predictions:faceage"],
            out=str(out),
            config=str(config),
        )
    store = Store(out / "audit.duckdb")
    runs = store.runs()
    assert len(runs) == 1 and runs["status"].item() == "failed"
    assert runs["flow"].item() == "monitor" and f"no run {wrong}" in runs["error"].item()
    assert runs["cohort_path"].item() == str(cohort.resolve())
    assert len(got) == 1 and "the monitor run failed" in got[0]["summary"]
    assert got[0]["run_id"] == runs["run_id"].item()
    index = render_index(store, out).read_text()
    assert runs["run_id"].item() in index and f"no run {wrong}" in index
