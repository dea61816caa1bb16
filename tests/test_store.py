"""The run store: migrations, one transaction per stage, locks, abandoned runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import duckdb
import pandas as pd
import pytest

from audit.errors import InputError, StoreBusyError
from audit.pipeline.store import (
    RESULT_TABLES,
    SCHEMA_VERSION,
    Store,
    is_run_id,
    migrate,
)


def test_new_store_has_every_contract_table(tmp_path):
    store = Store(tmp_path / "audit.duckdb")
    assert store.schema_version() == SCHEMA_VERSION
    tables = set(store.query("SELECT table_name FROM information_schema.tables")["table_name"])
    assert {"schema_version", "runs", "run_stages"} | set(RESULT_TABLES) <= tables
    cols = set(
        store.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'")[
            "column_name"
        ]
    )
    assert {
        "run_id",
        "flow",
        "started_at",
        "finished_at",
        "status",
        "cohort_name",
        "cohort_sha256",
        "models",
        "config_sha256",
        "code_version",
        "environment",
        "pid",
        "host",
        "heartbeat_at",
        "verdict",
    } <= cols


# The `runs` table as schema version 1 created it (the first release's file).
RUNS_V1 = """CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY, flow VARCHAR, started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ, status VARCHAR, cohort_name VARCHAR, cohort_sha256 VARCHAR,
    models JSON, config_sha256 VARCHAR, code_version VARCHAR, environment JSON,
    pid INTEGER, host VARCHAR, heartbeat_at TIMESTAMPTZ, verdict VARCHAR)"""


def _layout(con) -> list[tuple]:
    return con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall()


def test_an_old_database_is_brought_up_to_the_layout_of_a_new_one(tmp_path):
    path = tmp_path / "audit.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMPTZ)")
    con.execute("INSERT INTO schema_version VALUES (1, now())")
    con.execute(RUNS_V1)
    con.execute("INSERT INTO runs (run_id, status, cohort_name) VALUES ('r1', 'finished', 'old')")
    con.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.query("SELECT version FROM schema_version ORDER BY version")[
        "version"
    ].tolist() == [1, SCHEMA_VERSION]
    old = store.run("r1")
    assert old["cohort_name"] == "old" and old["error"] is None  # a column added since
    fresh = duckdb.connect(str(tmp_path / "new.duckdb"))
    migrate(fresh)
    with store.connect(read_only=True) as upgraded:
        assert _layout(upgraded) == _layout(fresh)  # same tables, same column order
    assert migrate(fresh) == SCHEMA_VERSION  # a second call changes nothing


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "audit.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(InputError, match="newer than this faceage-audit"):
        Store(path)


def _start(store):
    return store.start_run(flow="test", cohort_name="c", cohort_sha256="x" * 64)


def test_run_row_records_provenance(tmp_path):
    store = Store(tmp_path / "audit.duckdb")
    run_id = _start(store)
    assert is_run_id(run_id)
    run = store.run(run_id)
    assert run["status"] == "running" and run["pid"] > 0 and run["host"]
    assert "faceage-audit" in run["code_version"] or run["code_version"]
    assert '"duckdb"' in run["environment"]


def test_a_stage_that_fails_halfway_writes_nothing(tmp_path):
    store = Store(tmp_path / "audit.duckdb")
    run_id = _start(store)
    good = pd.DataFrame(
        {
            "photo_id": ["a", "b"],
            "model": "m",
            "output": "faceage",
            "perturbation": "none",
            "severity": 0,
            "value": [1.0, 2.0],
        }
    )
    bad = pd.DataFrame({"model": ["m"], "metric": ["mae"], "value": ["not a number"]})
    with pytest.raises(duckdb.Error):
        store.write_stage(run_id, "s", {"predictions": good, "accuracy": bad})
    assert store.table("predictions", run_id).empty
    assert store.table("run_stages", run_id).empty
    assert store.write_stage(run_id, "s", {"predictions": good}) == 2
    assert store.table("predictions", run_id)["value"].tolist() == [1.0, 2.0]
    assert store.table("run_stages", run_id)["rows_written"].tolist() == [2]


def test_vectors_round_trip_exactly_whether_equal_length_or_ragged(tmp_path):
    """Equal-length vectors go to DuckDB as an Arrow fixed-size list, ragged ones as they are;
    both come back as written (float32), with the other columns beside them intact."""
    import numpy as np

    store = Store(tmp_path / "audit.duckdb")
    run_id = _start(store)
    rng = np.random.default_rng(3)
    equal = list(rng.normal(size=(4, 6)).astype(np.float32))
    ragged = [rng.normal(size=k).astype(np.float32) for k in (3, 5)]
    store.write_stage(
        run_id,
        "emb",
        {
            "embeddings": pd.DataFrame(
                {"photo_id": ["a", "b", "c", "d"], "model": "m", "vector": equal}
            )
        },
    )
    store.write_stage(
        run_id,
        "maps",
        {
            "saliency_maps": pd.DataFrame(
                {
                    "model": "m",
                    "output": "faceage",
                    "method": "occlusion",
                    "attribute": "all",
                    "group_name": ["x", "y"],
                    "n": [2, 3],
                    "height": [1, 1],
                    "width": [3, 5],
                    "map": ragged,
                }
            )
        },
    )
    back = store.table("embeddings", run_id).sort_values("photo_id")
    assert back["photo_id"].tolist() == ["a", "b", "c", "d"] and set(back["model"]) == {"m"}
    assert np.array_equal(np.stack(back["vector"].to_list()), np.stack(equal))
    import pyarrow as pa

    from audit.pipeline.store import _as_arrow_if_vectors

    assert isinstance(_as_arrow_if_vectors(pd.DataFrame({"vector": equal})), pa.Table)
    assert isinstance(_as_arrow_if_vectors(pd.DataFrame({"map": ragged})), pd.DataFrame)
    maps = store.table("saliency_maps", run_id).sort_values("group_name")
    assert [len(m) for m in maps["map"]] == [3, 5]
    assert all(np.array_equal(a, b) for a, b in zip(maps["map"], ragged))


def test_finish_and_fail(tmp_path):
    store = Store(tmp_path / "audit.duckdb")
    a, b = _start(store), _start(store)
    store.finish_run(a, "pass")
    store.fail_run(b, "bad input: manifest.csv row 3 column age")
    assert store.run(a)["status"] == "finished" and store.run(a)["verdict"] == "pass"
    assert store.run(b)["status"] == "failed" and "row 3" in store.run(b)["error"]


def test_a_run_whose_process_is_gone_is_marked_abandoned(tmp_path):
    store = Store(tmp_path / "audit.duckdb")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = _start(store)
    with store.connect() as con:
        con.execute("UPDATE runs SET pid = ? WHERE run_id = ?", [int(dead.stdout), run_id])
    assert store.run(run_id)["status"] == "running"
    alive = _start(store)  # the next run marks the dead one
    assert store.run(run_id)["status"] == "abandoned"
    assert "later run" in store.run(run_id)["error"]
    assert store.run(alive)["status"] == "running"  # this process is alive
    assert store.mark_abandoned() == []


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def _hold_lock(path, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_waits_for_the_lock(tmp_path):
    path = tmp_path / "audit.duckdb"
    Store(path)
    proc = _hold_lock(path, 1.5)
    start = time.monotonic()
    store = Store(path, lock_timeout=30)
    assert time.monotonic() - start > 0.5
    assert store.schema_version() == SCHEMA_VERSION
    proc.wait(10)


def test_a_busy_database_stops_with_a_clear_message(tmp_path):
    path = tmp_path / "audit.duckdb"
    Store(path)
    proc = _hold_lock(path, 10)
    try:
        with pytest.raises(StoreBusyError) as err:
            Store(path, lock_timeout=0.5)
        assert str(path) in str(err.value) and "busy" in str(err.value)
        assert f"process {proc.pid}" in str(err.value)
    finally:
        proc.kill()
        proc.wait(10)
