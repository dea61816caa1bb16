"""The run store: one DuckDB file per output folder, the only module that writes it.

* The schema is declared once in :mod:`audit.pipeline.schema`; ``schema_version`` records
  each upgrade, so an ``audit.duckdb`` written by an older release opens in a newer one.
* Every run is a ``runs`` row (hashes, config, code and package versions, pid, host,
  heartbeat). A stage's rows are written in one transaction (:meth:`Store.write_stage`): a
  run killed at any moment leaves either the whole stage or none of it, and the next run
  that opens the file marks the dead run ``abandoned``.
* Connections are short-lived, so two processes can share a file: a second process waits
  for DuckDB's file lock (``FACEAGE_AUDIT_LOCK_TIMEOUT`` seconds, default 120) and then stops
  with :class:`StoreBusyError` naming the file and the process that holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from audit.errors import InputError, StoreBusyError
from audit.pipeline.provenance import code_version, environment
from audit.pipeline.schema import RESULT_TABLES, SCHEMA_VERSION, STEPS, reconcile

HEARTBEAT_SECONDS = 30.0
_ROW_LOCK = threading.RLock()  # one writer of a run's row at a time within this process
STALE_AFTER_SECONDS = 600.0
_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


def new_run_id(now: datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-`` plus 8 hex characters (the README's run id)."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(4)


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _fault_point(name: str) -> None:
    """Kill this process at a named point when a test asks (``FACEAGE_AUDIT_KILL_AT``).

    Used only by the crash-consistency tests, which run real audits in a subprocess and
    SIGKILL them at named moments (before, during and after a stage's transaction).
    """
    if os.environ.get("FACEAGE_AUDIT_KILL_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def _as_arrow_if_vectors(frame: pd.DataFrame):
    """``frame`` as an Arrow table when it holds a column of equal-length numeric vectors
    (embeddings, saliency maps): DuckDB takes a fixed-size list column about three times as
    fast as a pandas column of arrays. Other frames go as they are."""
    import pyarrow as pa

    columns = [
        c
        for c in frame.columns
        if frame[c].dtype == object and len(frame) and isinstance(frame[c].iat[0], np.ndarray)
    ]
    if not columns:
        return frame
    vectors = {}
    for c in columns:
        values = frame[c].to_numpy()
        if not all(
            isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype.kind in "fiub" for v in values
        ):
            return frame
        width = len(values[0])
        if width == 0 or any(len(v) != width for v in values):
            return frame
        flat = pa.array(np.concatenate(values).astype(np.float32, copy=False))
        vectors[c] = pa.FixedSizeListArray.from_arrays(flat, width)
    arrays = [vectors[c] if c in vectors else pa.Array.from_pandas(frame[c]) for c in frame.columns]
    return pa.Table.from_arrays(arrays, names=[str(c) for c in frame.columns])


class Store:
    """The DuckDB file of one output folder.

    Parameters
    ----------
    path : the ``audit.duckdb`` file (created with its folder when absent).
    lock_timeout : seconds to wait for another process's lock before giving up.
    """

    def __init__(self, path: str | Path, lock_timeout: float | None = None):
        self.path = Path(path)
        self.lock_timeout = (
            float(os.environ.get("FACEAGE_AUDIT_LOCK_TIMEOUT", "120"))
            if lock_timeout is None
            else lock_timeout
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as con:
            migrate(con)

    # -- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator["duckdb.DuckDBPyConnection"]:  # noqa: F821
        import duckdb

        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                msg = str(exc)
                if "lock" not in msg.lower():
                    raise InputError(f"{self.path}: cannot open the DuckDB file: {msg}") from exc
                if time.monotonic() >= deadline:
                    holder = re.search(r"PID (\d+)", msg)
                    who = f"process {holder.group(1)}" if holder else "another process"
                    raise StoreBusyError(
                        f"{self.path}: busy, {who} holds its lock (waited "
                        f"{self.lock_timeout:g} s; raise FACEAGE_AUDIT_LOCK_TIMEOUT to wait "
                        "longer, "
                        f"or use another --out)"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    # -- runs --------------------------------------------------------------------------
    def start_run(
        self,
        *,
        flow: str,
        cohort_name: str | None,
        cohort_sha256: str | None,
        manifest_sha256: str | None = None,
        models: list[dict] | None = None,
        config_json: str | None = None,
        config_sha256: str | None = None,
        synthetic: bool = False,
        cohort_path: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Insert a ``running`` row (after marking dead runs abandoned) and return its id."""
        self.mark_abandoned()
        run_id = run_id or new_run_id()
        now = _now()
        with self.connect() as con:
            con.execute(
                """INSERT INTO runs (run_id, flow, started_at, status, cohort_name,
                   cohort_sha256, manifest_sha256, models, config_sha256, config, code_version,
                   environment, pid, host, heartbeat_at, synthetic, cohort_path)
                   VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [
                    run_id,
                    flow,
                    now,
                    cohort_name,
                    cohort_sha256,
                    manifest_sha256,
                    json.dumps(models or []),
                    config_sha256,
                    config_json,
                    code_version(),
                    json.dumps(environment()),
                    os.getpid(),
                    socket.gethostname(),
                    now,
                    synthetic,
                    cohort_path,
                ],
            )
        return run_id

    def heartbeat(self, run_id: str) -> None:
        # The heartbeat thread and a stage's transaction both update the run's row; DuckDB
        # would abort one of them ("Conflict on update"), so they take turns.
        with _ROW_LOCK, self.connect() as con:
            con.execute(
                "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'",
                [_now(), run_id],
            )

    @contextlib.contextmanager
    def heartbeating(self, run_id: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
        """Refresh the run's heartbeat from a background thread while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):
                    self.heartbeat(run_id)

        thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def finish_run(self, run_id: str, verdict: str | None) -> None:
        with _ROW_LOCK, self.connect() as con:  # the heartbeat thread may be updating the row
            con.execute(
                "UPDATE runs SET status = 'finished', finished_at = ?, heartbeat_at = ?, "
                "verdict = ? WHERE run_id = ?",
                [_now(), _now(), verdict, run_id],
            )

    def fail_run(self, run_id: str, error: str) -> None:
        with _ROW_LOCK, self.connect() as con:
            con.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?, error = ? WHERE run_id = ?",
                [_now(), error[:4000], run_id],
            )

    def mark_abandoned(self) -> list[str]:
        """Mark ``running`` runs whose process is gone (or silent too long) ``abandoned``.

        A run on this host is dead when its pid no longer exists; any run is presumed dead
        when its heartbeat is older than ``STALE_AFTER_SECONDS``.
        """
        host = socket.gethostname()
        with self.connect() as con:
            rows = con.execute(
                "SELECT run_id, pid, host, heartbeat_at FROM runs WHERE status = 'running'"
            ).fetchall()
            dead = []
            for run_id, pid, run_host, beat in rows:
                age = (_now() - beat).total_seconds() if beat is not None else float("inf")
                gone = run_host == host and pid != os.getpid() and not _pid_alive(pid)
                if gone or age > STALE_AFTER_SECONDS:
                    dead.append(run_id)
            for run_id in dead:
                con.execute(
                    "UPDATE runs SET status = 'abandoned', finished_at = ?, error = "
                    "'process ended without finishing (found by a later run)' WHERE run_id = ?",
                    [_now(), run_id],
                )
        return dead

    # -- stages ------------------------------------------------------------------------
    def write_stage(
        self,
        run_id: str,
        stage: str,
        tables: dict[str, pd.DataFrame],
        note: str | None = None,
        started: datetime | None = None,
    ) -> int:
        """Write all of a stage's rows in one transaction; return the number of rows.

        Frames are matched to table columns by name (``INSERT ... BY NAME``); ``run_id`` is
        filled in. Either every table of the stage is written, or (on any error or a kill)
        none is.
        """
        unknown = set(tables) - set(RESULT_TABLES)
        if unknown:
            raise ValueError(f"unknown result tables {sorted(unknown)}")
        started = started or _now()
        total = 0
        with _ROW_LOCK, self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for i, (table, frame) in enumerate(tables.items()):
                    if frame is None or len(frame) == 0:
                        continue
                    frame = frame.copy()
                    frame.insert(0, "run_id", run_id)
                    con.register("_stage_frame", _as_arrow_if_vectors(frame))
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _stage_frame")
                    con.unregister("_stage_frame")
                    total += len(frame)
                    if i == 0:
                        _fault_point(f"{stage}:mid-transaction")
                con.execute(
                    "INSERT INTO run_stages VALUES (?, ?, ?, ?, ?, ?)",
                    [run_id, stage, started, _now(), total, note],
                )
                con.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ?", [_now(), run_id])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        _fault_point(f"{stage}:after-commit")
        return total

    # -- reading -----------------------------------------------------------------------
    def run(self, run_id: str) -> dict:
        df = self.query("SELECT * FROM runs WHERE run_id = ?", [run_id])
        if df.empty:
            raise InputError(f"{self.path}: no run {run_id}")
        return df.iloc[0].to_dict()

    def runs(self) -> pd.DataFrame:
        return self.query("SELECT * FROM runs ORDER BY started_at")

    def table(self, name: str, run_id: str) -> pd.DataFrame:
        if name not in RESULT_TABLES + ["run_stages"]:
            raise ValueError(f"unknown table {name}")
        return self.query(f"SELECT * EXCLUDE (run_id) FROM {name} WHERE run_id = ?", [run_id])

    def cached_predictions(
        self, model_key: str, image_sha256: list[str]
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Cached clean predictions and embeddings of these images for this model key."""
        if not image_sha256:
            return pd.DataFrame(), pd.DataFrame()
        preds = self.cached_values(model_key, image_sha256, ["none"])
        preds = preds.loc[preds["severity"] == 0, ["image_sha256", "output", "value", "spread"]]
        keys = pd.DataFrame({"image_sha256": sorted(set(image_sha256))})
        with self.connect() as con:
            con.register("_keys", keys)
            vecs = con.execute(
                "SELECT DISTINCT ON (c.image_sha256) c.image_sha256, c.vector "
                "FROM embedding_cache c JOIN _keys USING (image_sha256) WHERE c.model_key = ?",
                [model_key],
            ).df()
            con.unregister("_keys")
        return preds.reset_index(drop=True), vecs

    def cached_values(
        self, model_key: str, image_sha256: list[str], perturbations: list[str]
    ) -> pd.DataFrame:
        """Cached outputs of these images for this model key under these perturbation keys
        (``none`` for the clean pass): ``image_sha256, perturbation, severity, output, value,
        spread``."""
        columns = ["image_sha256", "perturbation", "severity", "output", "value", "spread"]
        if not image_sha256 or not perturbations:
            return pd.DataFrame(columns=columns)
        keys = pd.DataFrame({"image_sha256": sorted(set(image_sha256))})
        kinds = pd.DataFrame({"perturbation": sorted(set(perturbations))})
        with self.connect() as con:
            con.register("_keys", keys)
            con.register("_kinds", kinds)
            frame = con.execute(
                "SELECT DISTINCT ON (c.image_sha256, c.perturbation, c.severity, c.output) "
                "c.image_sha256, c.perturbation, c.severity, c.output, c.value, c.spread "
                "FROM prediction_cache c JOIN _keys USING (image_sha256) "
                "JOIN _kinds USING (perturbation) WHERE c.model_key = ?",
                [model_key],
            ).df()
            con.unregister("_keys")
            con.unregister("_kinds")
        return frame[columns]

    def schema_version(self) -> int:
        with self.connect(read_only=False) as con:
            return current_version(con)


def current_version(con) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    value = con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
    return int(value or 0)


def migrate(con) -> int:
    """Bring the file up to :data:`SCHEMA_VERSION` in one transaction (a new file: every
    table; an older one: what it lacks, see :mod:`audit.pipeline.schema`); return it."""
    version = current_version(con)
    if version > SCHEMA_VERSION:
        raise InputError(
            f"database schema version {version} is newer than this faceage-audit "
            f"({SCHEMA_VERSION}); upgrade faceage-audit to open it"
        )
    if version == SCHEMA_VERSION:
        return version
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMPTZ)"
        )
        reconcile(con)
        for number in sorted(STEPS):
            if number > version:
                for sql in STEPS[number]:
                    con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [SCHEMA_VERSION, _now()])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
