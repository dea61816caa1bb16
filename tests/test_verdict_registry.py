"""The check registry: a check is added in one place and the verdict stage runs it."""

from __future__ import annotations

import pandas as pd
import pytest

from audit.pipeline import verdict
from audit.pipeline.config import load_config
from audit.pipeline.verdict import Evidence, evaluate, register_check


@pytest.fixture
def registry():
    saved = list(verdict.CHECKS)
    yield
    verdict.CHECKS[:] = saved


def test_a_registered_check_runs_per_model_and_reads_its_table(registry):
    @register_check("planted_rows", reads=("accuracy",))
    def planted(ev, m):
        n = len(ev.table("accuracy"))
        return [
            verdict.check_row(
                m["name"], "planted_rows", "accuracy", 3.0, float(n), n <= 3, f"{n} accuracy rows"
            )
        ]

    assert "planted_rows" in verdict.list_checks() and "accuracy" in verdict.tables_read()
    acc = pd.DataFrame(
        {
            "model": ["a"] * 4,
            "output": "faceage",
            "metric": "mae",
            "attribute": "all",
            "value": 5.0,
            "ci_low": 4.0,
            "ci_high": 6.0,
            "n": 100,
            "status": "ok",
        }
    )
    ev = Evidence(
        models=[{"name": "a", "outputs": ["faceage"]}, {"name": "b", "outputs": ["risk"]}],
        thresholds=load_config().thresholds,
        n_manifest_rows=100,
        tables={"accuracy": acc},
    )
    v = evaluate(ev)
    planted_rows = v[v["check_name"] == "planted_rows"]
    assert planted_rows["model"].tolist() == ["a", "b"]
    assert planted_rows["status"].tolist() == ["fail", "fail"]  # 4 rows > 3
    # run checks first, then each model's in registration order: ours comes last per model
    assert v["check_name"].iloc[0] == "quarantine_fraction"
    assert v[v["model"] == "a"]["check_name"].iloc[-1] == "planted_rows"


def test_a_check_name_is_registered_once_and_scopes_are_checked(registry):
    with pytest.raises(ValueError, match="registered twice"):
        register_check("fairness")(lambda ev, m: [])
    with pytest.raises(ValueError, match="scope is run or model"):
        register_check("x", scope="cohort")
